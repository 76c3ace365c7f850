"""The garbage collector, set for a long-running server process.

Request-scoped objects are freed by reference counting; the cyclic collector only ever finds
cycles (exceptions with their tracebacks, some futures). With CPython's default thresholds it
still ran young-generation passes every few dozen streams, each re-scanning the objects
start-up left behind (docs/performance.md). Frozen after start-up, with a higher first
threshold, the same load runs none.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000  # CPython's default is 700


def settle_after_startup() -> None:
    """Collect once, move everything start-up built out of the collector's sight, and let the
    young generation grow larger before a pass (cycles wait a little longer; they are few)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, middle, old)
