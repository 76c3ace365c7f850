"""Keeping a test clear of a window's end on this machine's clock."""

from __future__ import annotations

import time


def clear_of_a_window_boundary(seconds: float, period: float) -> None:
    """Sleep past the end of the clock's current `period` (seconds) if it ends within
    `seconds`."""
    left = period - time.time() % period
    if left < seconds:
        time.sleep(left + 0.2)
