"""Costs written as exact dollars."""

from __future__ import annotations

import pytest

from service.usage.report import usd_text


@pytest.mark.parametrize(
    ("ticks", "text"),
    [
        (0, "0.0"),
        (1, "0.0000000001"),
        (12_345, "0.0000012345"),
        (125_000_000_000, "12.5"),
        (5_000_000_000_000, "500.0"),
        (123_456_789_012_345_678_901, "12345678901.2345678901"),  # beyond a float's digits
    ],
)
def test_usd_text_is_the_exact_decimal_of_the_ticks(ticks, text):
    assert usd_text(ticks) == text
