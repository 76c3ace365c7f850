"""The benchmark harness works (`python -m bench --quick`); its speed is not asserted here.

Its completeness checks (`bench.streams`) are specified first, on hand-made streams of each
shape, so a benchmark's "0 failed" means what it says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bench.streams import check
from tests.support.processes import REPO, redis_server_binary

slow = pytest.mark.slow

_HEAD = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":'
_XAI_USAGE = b',"usage":{"prompt_tokens":9,"completion_tokens":1,"cost_in_usd_ticks":10}'


def _chat(chunks: int, xai: bool, usage_chunk: bool = False, done: bool = True) -> bytes:
    usage = _XAI_USAGE if xai else b""
    body = b"".join(_HEAD + b'{"content":"w "}}]' + usage + b"}\n\n" for _ in range(chunks))
    if usage_chunk:
        body += b'data: {"id":"c","choices":[],"usage":{"total_tokens":10}}\n\n'
    return body + (b"data: [DONE]\n\n" if done else b"")


def _responses(deltas: int, completed: bool = True) -> bytes:
    def event(kind: str, extra: str = "") -> bytes:
        return f'event: {kind}\ndata: {{"type": "{kind}"{extra}}}\n\n'.encode()

    body = event("response.created") + event("response.in_progress")
    body += b"".join(event("response.output_text.delta", ', "delta": "w"') for _ in range(deltas))
    body += event("response.output_text.done")
    return body + (event("response.completed") if completed else b"")


@pytest.mark.parametrize("xai", [True, False], ids=["xai-shape", "openai-shape"])
def test_a_complete_chat_stream_passes_in_either_shape(xai):
    assert check("chat", True, _chat(20, xai), 20) is None


@pytest.mark.parametrize("xai", [True, False], ids=["xai-shape", "openai-shape"])
def test_the_usage_only_chunk_is_not_counted_as_content_when_it_was_asked_for(xai):
    assert check("chat", True, _chat(20, xai, usage_chunk=True), 20, include_usage=True) is None


def test_a_usage_only_chunk_nobody_asked_for_fails_the_stream():
    problem = check("chat", True, _chat(20, True, usage_chunk=True), 20)
    assert problem == "unasked_usage_chunk"


def test_a_chat_stream_without_done_or_with_missing_chunks_is_truncated():
    assert check("chat", True, _chat(20, True, done=False), 20) == "truncated"
    assert check("chat", True, _chat(19, True), 20) == "truncated"


def test_a_chat_stream_ended_by_an_error_event_is_reported_as_such():
    raw = _chat(3, True, done=False) + b'data: {"error": "API error: dropped"}\n\n'
    assert check("chat", True, raw + b"data: [DONE]\n\n", 20) == "error_event"


def test_a_responses_stream_is_complete_with_every_delta_and_response_completed_last():
    assert check("responses", True, _responses(20), 20) is None
    assert check("responses", True, _responses(20, completed=False), 20) == "truncated"
    assert check("responses", True, _responses(12), 20) == "truncated"


def _need_redis_server() -> None:
    if redis_server_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required under CI=true")
        pytest.skip("redis-server not installed")


@slow
def test_quick_benchmark_runs_every_target_and_scenario_without_failures(tmp_path):
    _need_redis_server()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    results = report["results"]
    main = [r for r in results if not r["scenario"].startswith("shapes:")]
    targets = {r["target"] for r in main}
    scenarios = {r["scenario"] for r in main}
    assert targets == {"floor-raw", "floor-starlette", "gateway-memory", "gateway-redis"}
    assert {"burst", "realistic", "ttft@50", "idle-streams", "non-streaming"} <= scenarios
    # Each scenario ran on every target (the Starlette floor: the burst alone), or is named
    # as skipped (an API not served yet).
    full = [r for r in main if r["target"] != "floor-starlette"]
    assert len(full) + len(report["meta"]["skipped"]) >= (len(targets) - 1) * len(scenarios)
    for result in results:
        assert result["failed"] == 0, result
        assert result["streams_per_s"] > 0
    redis = [r for r in results if r["target"] == "gateway-redis"]
    # Through Redis (admissions and releases of one loop turn share a call: under one a request).
    assert all(r["redis_scripts_per_request"] > 0 for r in redis)
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    assert "## Targets" in (tmp_path / "BENCHMARKS.md").read_text()


def run_bench_module(*args: str, timeout: float) -> str:
    """Run `python -m <args>` from the repository; its stdout, once it exited 0."""
    _need_redis_server()
    done = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@slow
def test_interleaved_ttfb_comparison_runs_and_reports_every_target():
    out = run_bench_module(
        "bench.ttfb", "--concurrency", "4", "--rounds", "1", "--seconds", "0.5", timeout=120
    )
    assert "TTFB p50 at 4 concurrent streams, 1 rounds:" in out
    for target in ("floor-raw", "floor-starlette", "gateway-memory", "gateway-redis"):
        assert f"{target} median" in out


@slow
def test_admissions_benchmark_compares_both_redis_clients():
    out = run_bench_module(
        "bench.admissions", "--concurrency", "5", "--waves", "10", "--rounds", "1", timeout=60
    )
    for client in ("redis-py", "multiplexed"):
        assert f"{client}: admission p50" in out


@slow
def test_instruction_counts_are_reported_per_stream():
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind not installed")
    out = run_bench_module(
        "bench.instructions",
        *("--streams", "40", "--warm-up", "40", "--targets", "floor-raw,gateway-memory"),
        timeout=300,
    )
    counts = {
        line.split()[0]: float(line.split()[1])
        for line in out.splitlines()
        if "M instructions per stream" in line
    }
    assert set(counts) == {"floor-raw", "gateway-memory"}
    # Real work was counted, and the gateway (auth, limits, logs) does more than the floor.
    assert 0.1 < counts["floor-raw"] < counts["gateway-memory"] < 50
