"""Fixtures for every test."""

from __future__ import annotations

import pytest

from tests.support.windows import clear_of_a_window_boundary


@pytest.fixture(autouse=True)
def _clear_of_an_hour_boundary() -> None:
    """Most tests' keys count in hour windows (or days, which end on an hour): a test that
    ran across the hour's end would see a fresh window admit again, and a window's counter
    in Redis expires a second after its window ends, taking what the test counted before
    with it. The tests that count take well under 30 s: one that would start in an hour's
    last 30 s waits for the next hour."""
    clear_of_a_window_boundary(30, 3600)
