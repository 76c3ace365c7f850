"""Costs written as exact dollars."""

from __future__ import annotations

import pytest

from service.usage.report import ReportLine, to_table, usd_text


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


def test_a_table_without_rows_prints_a_total_line_of_zeros():
    table = to_table([], ("day", "tenant"))
    header, total = table.splitlines()
    assert header.split()[:2] == ["day", "tenant"]
    assert total.split() == ["total", "0", "0", "0", "0", "0", "0.0"]


def test_a_table_of_several_rows_ends_with_their_total():
    lines = [ReportLine(("a",), (1, 2, 0, 3, 0, 10)), ReportLine(("b",), (1, 5, 0, 1, 0, 20))]
    assert to_table(lines, ("tenant",)).splitlines()[-1].split() == [
        "total",
        "2",
        "7",
        "0",
        "4",
        "0",
        usd_text(30),
    ]
