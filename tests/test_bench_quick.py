"""The benchmark harness works (`python -m bench --quick`); its speed is not asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.processes import REPO, redis_server_binary

pytestmark = pytest.mark.slow


def _need_redis_server() -> None:
    if redis_server_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required under CI=true")
        pytest.skip("redis-server not installed")


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
    assert all(r["redis_scripts_per_request"] >= 1 for r in redis)
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


def test_interleaved_ttfb_comparison_runs_and_reports_every_target():
    out = run_bench_module(
        "bench.ttfb", "--concurrency", "4", "--rounds", "1", "--seconds", "0.5", timeout=120
    )
    assert "TTFB p50 at 4 concurrent streams, 1 rounds:" in out
    for target in ("floor-raw", "floor-starlette", "gateway-memory", "gateway-redis"):
        assert f"{target} median" in out


def test_admissions_benchmark_compares_both_redis_clients():
    out = run_bench_module(
        "bench.admissions", "--concurrency", "5", "--waves", "10", "--rounds", "1", timeout=60
    )
    for client in ("redis-py", "multiplexed"):
        assert f"{client}: admission p50" in out
