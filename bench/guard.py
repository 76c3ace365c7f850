"""The benchmark's guard: the targets `python -m bench` checks, each met or missed.

Every target compares the gateway in Redis mode with the raw floor (a bare pass-through on
the same transport) measured in the same run. Throughput is judged on the paired rounds
(the floor and the gateway alternating; the median of the per-round ratios) where the run
has them, else on the one pass; the stream-shape comparison on its interleaved rounds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

FLOOR = "floor-raw"
GATEWAY = "gateway-redis"

REALISTIC_RATIO = 0.90  # upstream-paced streams: what users feel
BURST_RATIO = 0.70  # no spacing: the gateway's own CPU per request shows in full
XAI_BURST_RATIO = 0.70
TTFB_ADDED_MS = 1.0  # p50 at 50 concurrent streams, over the raw floor's
REDIS_ROUND_TRIPS = 2.0  # script calls per request: one to admit, one to release
RSS_RATIO = 1.5  # peak RSS with the open streams of the idle-streams scenario


@dataclass(frozen=True, slots=True)
class Check:
    target: str
    measured: str
    met: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]


def _find(results: list[dict], target: str, scenario: str, shape: str | None = None) -> dict | None:
    return next(
        (
            r
            for r in results
            if r["target"] == target
            and r["scenario"] == scenario
            and (shape is None or r.get("shape") == shape)
        ),
        None,
    )


def _round_ratios(gateway: dict, floor: dict) -> list[float]:
    """Gateway over floor streams/s, round by round (both measured in each round)."""
    pairs = zip(gateway.get("streams_rounds", ()), floor.get("streams_rounds", ()), strict=False)
    return [g / f for g, f in pairs if f]


def _rounds(count: int, kind: str) -> str:
    return f"{count} {kind} round" + ("" if count == 1 else "s")


def _throughput(results: list[dict], scenario: str, label: str, floor_ratio: float) -> Check:
    target = f"{label} >= {floor_ratio:.2f}x the raw floor's streams/s"
    floor, gateway = (
        _find(results, FLOOR, f"paired:{scenario}"),
        _find(results, GATEWAY, f"paired:{scenario}"),
    )
    if floor and gateway and (ratios := _round_ratios(gateway, floor)):
        ratio = statistics.median(ratios)
        measured = (
            f"{ratio:.2f}x, median of {_rounds(len(ratios), 'paired')} "
            f"({min(ratios):.2f}-{max(ratios):.2f}; "
            f"{gateway['streams_per_s']:.0f} vs {floor['streams_per_s']:.0f} streams/s)"
        )
        return Check(target, measured, ratio >= floor_ratio)
    floor, gateway = _find(results, FLOOR, scenario), _find(results, GATEWAY, scenario)
    if floor and gateway and floor["streams_per_s"]:
        ratio = gateway["streams_per_s"] / floor["streams_per_s"]
        measured = (
            f"{ratio:.2f}x, one pass ({gateway['streams_per_s']:.0f} vs "
            f"{floor['streams_per_s']:.0f} streams/s, {gateway['concurrency']} concurrent)"
        )
        return Check(target, measured, ratio >= floor_ratio)
    return Check(target, "-", None)


def _xai_burst(results: list[dict]) -> Check:
    target = f"xAI-shaped burst >= {XAI_BURST_RATIO:.2f}x the raw floor's streams/s"
    ratios = {}
    for shape in ("xai", "openai"):
        floor = _find(results, FLOOR, "shapes:burst", shape)
        gateway = _find(results, GATEWAY, "shapes:burst", shape)
        if floor and gateway and (rounds := _round_ratios(gateway, floor)):
            ratios[shape] = (statistics.median(rounds), len(rounds), gateway, floor)
    if "xai" not in ratios:
        return Check(target, "-", None)
    ratio, rounds, gateway, floor = ratios["xai"]
    measured = (
        f"{ratio:.2f}x, median of {_rounds(rounds, 'interleaved')} "
        f"({gateway['streams_per_s']:.0f} vs {floor['streams_per_s']:.0f} streams/s)"
    )
    if "openai" in ratios:
        measured += f"; OpenAI-shaped {ratios['openai'][0]:.2f}x"
    return Check(target, measured, ratio >= XAI_BURST_RATIO)


def _ttfb(results: list[dict]) -> Check:
    target = f"TTFB p50 at 50 concurrent streams <= the raw floor's + {TTFB_ADDED_MS:g} ms"
    floor, gateway = _find(results, FLOOR, "ttft@50"), _find(results, GATEWAY, "ttft@50")
    if not (floor and gateway):
        return Check(target, "-", None)
    added = gateway["ttfb_p50_ms"] - floor["ttfb_p50_ms"]
    measured = (
        f"{added:+.2f} ms ({gateway['ttfb_p50_ms']:.1f} vs {floor['ttfb_p50_ms']:.1f} ms; "
        f"p99 {gateway['ttfb_p99_ms'] - floor['ttfb_p99_ms']:+.1f} ms)"
    )
    return Check(target, measured, added <= TTFB_ADDED_MS)


def _redis_round_trips(results: list[dict]) -> Check:
    target = f"Redis round trips per request <= {REDIS_ROUND_TRIPS:g}"
    calls = {
        r["scenario"]: r["redis_scripts_per_request"]
        for r in results
        if r["target"] == GATEWAY and "redis_scripts_per_request" in r
    }
    if not calls:
        return Check(target, "-", None)
    worst = max(calls, key=calls.__getitem__)
    measured = f"at most {calls[worst]:.2f} script calls a request ({worst})"
    if "burst" in calls:
        measured += f"; burst {calls['burst']:.2f}"
    return Check(target, measured, round(calls[worst], 2) <= REDIS_ROUND_TRIPS)


def _rss(results: list[dict]) -> Check:
    target = f"peak RSS with the open streams <= {RSS_RATIO:g}x the raw floor's"
    floor, gateway = _find(results, FLOOR, "idle-streams"), _find(results, GATEWAY, "idle-streams")
    if not (floor and gateway and floor["peak_rss_mb"]):
        return Check(target, "-", None)
    ratio = gateway["peak_rss_mb"] / floor["peak_rss_mb"]
    measured = (
        f"{ratio:.2f}x ({gateway['peak_rss_mb']:.0f} vs {floor['peak_rss_mb']:.0f} MB, "
        f"{gateway['concurrency']} streams)"
    )
    return Check(target, measured, ratio <= RSS_RATIO)


def checks(results: list[dict]) -> list[Check]:
    """Each guarded target, judged on `results` (a run's rows)."""
    return [
        _throughput(results, "realistic", "realistic (upstream-paced)", REALISTIC_RATIO),
        _throughput(results, "burst", "burst", BURST_RATIO),
        _xai_burst(results),
        _ttfb(results),
        _redis_round_trips(results),
        _rss(results),
    ]


def failed(guard: list[Check]) -> list[Check]:
    """The targets a run did not show met: missed, or not measured (which guards nothing)."""
    return [check for check in guard if check.met is not True]
