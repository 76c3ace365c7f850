"""Usage reports: the ledger's rows summed by any of day, tenant, key and model.

One query shape (`UsageQuery`) and one set of renderers serve the admin API
(`GET /admin/v1/usage`) and the command line (`python -m service usage`), so both print the
same thing. Money is summed in integer ticks and turned into dollars once, exactly: `cost_usd`
is written as a decimal with up to 10 places (1 tick = 10^-10 USD), never a float.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from service.usage.record import MEASURE_NAMES, TICKS_PER_USD

if TYPE_CHECKING:
    from service.usage.ledger import LedgerRow
    from service.usage.record import Totals

GROUP_FIELDS = ("day", "tenant", "key", "model")
MEASURES = MEASURE_NAMES  # the report's columns after the group fields
MAX_RANGE_DAYS = 400  # the ledger's default retention (USAGE_RETENTION_DAYS)
FORMATS = ("json", "csv")
PARAMS = ("from", "to", "tenant", "key", "group_by", "format")

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # as in the key file
_NO_TENANT = "-"  # the ledger's tenant for keys without one


class QueryError(ValueError):
    """A bad report parameter; `param` names it (`from`, `group_by`, ...)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Which days, whose usage, summed by which fields, rendered how."""

    first: date
    last: date
    tenant: str | None = None
    key: str | None = None
    group_by: tuple[str, ...] = GROUP_FIELDS
    format: str = "json"

    @classmethod
    def parse(cls, params: Mapping[str, str], formats: tuple[str, ...] = FORMATS) -> UsageQuery:
        """From the admin API's query parameters (names as in PARAMS).

        Raises QueryError naming the first bad parameter.
        """
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise QueryError(
                unknown[0], f"Unknown parameter '{unknown[0]}'; known: {', '.join(PARAMS)}."
            )
        first = _day(params, "from")
        last = _day(params, "to")
        if first > last:
            raise QueryError("from", f"'from' ({first}) is after 'to' ({last}).")
        days = (last - first).days + 1
        if days > MAX_RANGE_DAYS:
            raise QueryError(
                "to", f"'from' to 'to' covers {days} days; at most {MAX_RANGE_DAYS} per query."
            )
        fmt = params.get("format", "json")
        if fmt not in formats:
            raise QueryError("format", f"'format' must be one of {', '.join(formats)}.")
        return cls(
            first=first,
            last=last,
            tenant=_filter(params, "tenant", allow=(_NO_TENANT,)),
            key=_filter(params, "key"),
            group_by=parse_group_by(params.get("group_by", ",".join(GROUP_FIELDS))),
            format=fmt,
        )


def parse_group_by(text: str) -> tuple[str, ...]:
    """'day,model' -> ('day', 'model'); any subset of GROUP_FIELDS in any order, '' = totals."""
    fields = tuple(part.strip() for part in text.split(",")) if text.strip() else ()
    for name in fields:
        if name not in GROUP_FIELDS:
            raise QueryError(
                "group_by",
                f"'group_by' has unknown field '{name}'; use any of {', '.join(GROUP_FIELDS)}.",
            )
    if len(set(fields)) != len(fields):
        raise QueryError("group_by", "'group_by' names a field twice.")
    return fields


def _day(params: Mapping[str, str], name: str) -> date:
    text = params.get(name)
    if text is None:
        raise QueryError(name, f"'{name}' is required (a UTC day, YYYY-MM-DD).")
    try:
        if not _DATE.match(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise QueryError(name, f"'{name}' must be a date YYYY-MM-DD, got {text!r}.") from None


def _filter(params: Mapping[str, str], name: str, allow: tuple[str, ...] = ()) -> str | None:
    value = params.get(name)
    if value is not None and value not in allow and not _ID.match(value):
        raise QueryError(name, f"'{name}' must be a {name} id (A-Z a-z 0-9 . _ -).")
    return value


# --- summing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One line of a report: the group's values (in group_by order) and its six sums."""

    group: tuple[str, ...]
    measures: tuple[int, ...]  # as MEASURES, the cost in ticks


def summarize(rows: Iterable[LedgerRow], group_by: tuple[str, ...]) -> list[ReportLine]:
    """Sum the rows per group, in integers; lines sorted by their group values.

    With no group_by fields, one line of totals (zeros when there are no rows).
    """
    sums: dict[tuple[str, ...], list[int]] = {}
    if not group_by:
        sums[()] = [0] * len(MEASURES)
    _add(sums, rows, group_by)
    return [ReportLine(group, tuple(acc)) for group, acc in sorted(sums.items())]


async def stream_lines(
    days: AsyncIterator[list[LedgerRow]], group_by: tuple[str, ...]
) -> AsyncIterator[ReportLine]:
    """The report's lines as the ledger's days arrive. Grouped by day, each day's lines go
    out once that day is read (so lines come by day, then sorted by their group values) and
    only one day is held; otherwise the sums need every day first."""
    if "day" in group_by:
        async for rows in days:
            for line in summarize(rows, group_by):
                yield line
        return
    sums: dict[tuple[str, ...], list[int]] = {}
    if not group_by:
        sums[()] = [0] * len(MEASURES)
    async for rows in days:
        _add(sums, rows, group_by)
    for group, acc in sorted(sums.items()):
        yield ReportLine(group, tuple(acc))


def _add(
    sums: dict[tuple[str, ...], list[int]], rows: Iterable[LedgerRow], group_by: tuple[str, ...]
) -> None:
    for row in rows:
        group = tuple(_group_value(row, name) for name in group_by)
        acc = sums.setdefault(group, [0] * len(MEASURES))
        for i, value in enumerate(row.totals.values()):
            acc[i] += value


def _group_value(row: LedgerRow, name: str) -> str:
    return row.day.isoformat() if name == "day" else getattr(row, name)


# --- rendering ----------------------------------------------------------------------------


def usd_text(ticks: int) -> str:
    """Exact dollars for `ticks`: '0.0000012345', '12.5', '500.0' (never a float)."""
    sign = "-" if ticks < 0 else ""
    whole, frac = divmod(abs(ticks), TICKS_PER_USD)
    return f"{sign}{whole}.{f'{frac:010d}'.rstrip('0') or '0'}"


@dataclass(frozen=True, slots=True)
class Usd:
    """An amount in ticks that `json_bytes` writes as an exact decimal JSON number of USD."""

    ticks: int


def json_bytes(doc: Any) -> bytes:
    """Compact JSON of `doc`, with every Usd written exactly (see usd_text)."""
    return _json(doc).encode()


def _json(value: Any) -> str:
    if isinstance(value, Usd):
        return usd_text(value.ticks)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return json.dumps(value)


def totals_doc(totals: Totals) -> dict[str, Any]:
    """The six measures of one Totals, as the API shows them (`U`)."""
    return _measures(totals.values())


def _measures(values: Iterable[int]) -> dict[str, Any]:
    """The six measures as JSON, and `cache_hit_ratio` (not a CSV column)."""
    doc: dict[str, Any] = dict(zip(MEASURES, values, strict=True))
    doc["cost_usd"] = Usd(doc["cost_usd"])
    doc["cache_hit_ratio"] = cache_hit_ratio(doc["cached_input_tokens"], doc["input_tokens"])
    return doc


def cache_hit_ratio(cached: int, inputs: int) -> float | None:
    """Cached input tokens over input tokens (4 decimals); None without input."""
    return round(cached / inputs, 4) if inputs > 0 else None


def render(lines: list[ReportLine], query: UsageQuery) -> bytes:
    """The report in `query.format`: json, csv or table."""
    if query.format == "csv":
        return to_csv(lines, query.group_by)
    if query.format == "table":
        return to_table(lines, query.group_by).encode()
    return to_json(lines, query.group_by)


async def render_chunks(
    lines: AsyncIterator[ReportLine], query: UsageQuery, chunk_bytes: int = 65536
) -> AsyncIterator[bytes]:
    """The report in `query.format` (json or csv), as chunks of about `chunk_bytes` made as
    the lines arrive: the same bytes as `render`."""
    group_by = query.group_by
    csv_format = query.format == "csv"
    parts = [_csv_header(group_by) if csv_format else _JSON_HEAD]
    size, separator = len(parts[0]), b""
    async for line in lines:
        if csv_format:
            part = _csv_line(line)
        else:
            part, separator = separator + _json_line(line, group_by), b","
        parts.append(part)
        size += len(part)
        if size >= chunk_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    if not csv_format:
        parts.append(_JSON_TAIL)
    yield b"".join(parts)


_JSON_HEAD, _JSON_TAIL = b'{"object":"list","data":[', b"]}"


def to_json(lines: list[ReportLine], group_by: tuple[str, ...]) -> bytes:
    """`{"object": "list", "data": [{<group_by fields>, <six measures>}, ...]}`."""
    return _JSON_HEAD + b",".join(_json_line(line, group_by) for line in lines) + _JSON_TAIL


def _json_line(line: ReportLine, group_by: tuple[str, ...]) -> bytes:
    return json_bytes({**dict(zip(group_by, line.group, strict=True)), **_measures(line.measures)})


def to_csv(lines: list[ReportLine], group_by: tuple[str, ...]) -> bytes:
    """RFC 4180 CSV: the group_by fields in the order given, then the six measures."""
    return _csv_header(group_by) + b"".join(_csv_line(line) for line in lines)


def _csv_header(group_by: tuple[str, ...]) -> bytes:
    return _csv_row([*group_by, *MEASURES])


def _csv_line(line: ReportLine) -> bytes:
    *counts, ticks = line.measures
    return _csv_row([*map(_csv_text, line.group), *counts, usd_text(ticks)])


def _csv_row(cells: list[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow(cells)  # CRLF line ends, quotes where needed
    return out.getvalue().encode()


# What a spreadsheet may read as the start of a formula (OWASP's list, `|` for DDE, the
# minus sign), and the full-width forms some spreadsheets fold into them.
_FORMULA_STARTS = frozenset("=+-@\t\r|\u2212\uff1d\uff0b\uff0d\uff20\uff5c")


def _csv_text(value: str) -> str:
    """A cell no spreadsheet runs: a value that starts (after any whitespace) like a formula
    gets a leading `'`, and a value that starts with `'` gets another, so an escaped value
    and a client's own `'=...` never print the same. The markers `-` and `(other)` stay:
    no client can send them as a name."""
    if value in ("-", "(other)"):
        return value
    if value[:1] in ("'", "\t", "\r") or value.lstrip()[:1] in _FORMULA_STARTS:
        return "'" + value
    return value


def to_table(lines: list[ReportLine], group_by: tuple[str, ...]) -> str:
    """Aligned columns for a terminal, with a total line unless there is one line only (no
    lines: a total of zeros, so an empty range reads as nothing used, not as a fault)."""
    rows = [[*map(_printable, line.group), *_shown(line.measures)] for line in lines]
    if len(lines) != 1 and group_by:
        total = [sum(line.measures[i] for line in lines) for i in range(len(MEASURES))]
        rows.append(["total", *[""] * (len(group_by) - 1), *_shown(total)])
    header = [*group_by, *MEASURES]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = len(group_by)

    def fmt(row: list[str]) -> str:
        cells = [
            cell.rjust(w) if i >= numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join(fmt(r) for r in [header, *rows]) + "\n"


def _shown(measures: Iterable[int]) -> list[str]:
    *counts, ticks = measures
    return [*(str(c) for c in counts), usd_text(ticks)]


def _printable(value: str) -> str:
    """No terminal control sequences from client-sent model names."""
    return value if value.isprintable() else value.encode("unicode_escape").decode("ascii")
