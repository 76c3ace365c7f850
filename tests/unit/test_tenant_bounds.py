"""What one tenant cannot do to the others through the ledger and the reports (SPEC 15), as
pure logic: only a 2xx keeps a model's name, no CSV cell can run in a spreadsheet, and the
admin export holds one day of the ledger at a time."""

from __future__ import annotations

import csv
import io

import pytest

from service.usage.charge import charge_for
from service.usage.record import Usage
from service.usage.report import ReportLine, to_csv


def test_only_a_2xx_keeps_the_clients_model_name():
    usage = Usage(input_tokens=3)
    assert charge_for(usage, "grok-4", "grok-4", {}, status=200).model == "grok-4"
    assert charge_for(usage, "no-such-model", "no-such-model", {}, status=404).model == "(other)"
    assert charge_for(usage, "grok-4", "grok-4", {}, status=0).model == "(other)"  # client left
    assert charge_for(usage, None, None, {}, status=404).model == "-"


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("=1+1", "'=1+1"),
        (" =1+1", "' =1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\uff1d1+1", "'\uff1d1+1"),
        ("\uff0b1", "'\uff0b1"),
        ("\u22121", "'\u22121"),
        ("|calc", "'|calc"),
        ("\u3000=1", "'\u3000=1"),
        ("'=1+1", "''=1+1"),
        ("-", "-"),
        ("(other)", "(other)"),
        ("grok-4", "grok-4"),
    ],
)
def test_no_csv_cell_can_start_a_formula(cell, shown):
    body = to_csv([ReportLine(("2026-01-01", cell), (1, 0, 0, 0, 0, 0))], ("day", "model"))
    header, row = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert header[:2] == ["day", "model"]
    assert row[1] == shown


def test_an_escaped_cell_and_a_clients_quote_never_print_the_same():
    lines = [ReportLine((name,), (1, 0, 0, 0, 0, 0)) for name in ("=1+1", "'=1+1")]
    _, first, second = list(csv.reader(io.StringIO(to_csv(lines, ("model",)).decode())))
    assert first[0] != second[0]


# --- the admin export: read a day at a time, streamed --------------------------------------


def ledger_days(n_days: int, pulled: list[int]):
    """A ledger of `n_days` days (two keys, two models a day) that notes each day pulled."""
    from datetime import date, timedelta

    from service.usage.ledger import LedgerRow
    from service.usage.record import Totals

    async def days():
        for d in range(n_days):
            pulled.append(d)
            day = date(2026, 1, 1) + timedelta(days=d)
            yield [
                LedgerRow(day, "acme", key, model, Totals(1, d, 0, 1, 0, 10))
                for key in ("a", "b")
                for model in ("grok-3", "grok-4")
            ]

    return days()


async def test_a_report_grouped_by_day_holds_one_day_at_a_time():
    from service.usage.report import stream_lines

    pulled: list[int] = []
    lines = stream_lines(ledger_days(30, pulled), ("day", "key", "model"))
    first = [await anext(lines) for _ in range(4)]  # the first day's four lines
    assert {line.group[0] for line in first} == {"2026-01-01"}
    assert pulled == [0]  # the second day is not read yet
    rest = [line async for line in lines]
    assert len(rest) == 29 * 4 and pulled == list(range(30))


@pytest.mark.parametrize("fmt", ["json", "csv"])
@pytest.mark.parametrize("group_by", ["day,tenant,key,model", "model,key", ""])
async def test_the_streamed_export_is_the_same_bytes_as_the_whole_one(fmt, group_by):
    from service.usage.report import UsageQuery, render, render_chunks, stream_lines, summarize

    query = UsageQuery.parse(
        {"from": "2026-01-01", "to": "2026-03-01", "group_by": group_by, "format": fmt}
    )
    rows = [row async for day in ledger_days(40, []) for row in day]
    whole = render(summarize(rows, query.group_by), query)
    lines = stream_lines(ledger_days(40, []), query.group_by)
    chunks = [chunk async for chunk in render_chunks(lines, query, chunk_bytes=512)]
    assert b"".join(chunks) == whole
    assert len(chunks) > 1 or "day" not in group_by  # only a long report needs several
