"""The benchmark harness works (`python -m bench --quick`); its speed is not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.processes import REPO, redis_server_binary

pytestmark = pytest.mark.slow


def test_quick_benchmark_runs_every_target_and_scenario_without_failures(tmp_path):
    if redis_server_binary() is None:
        pytest.skip("redis-server not installed")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    targets = {r["target"] for r in results}
    scenarios = {r["scenario"] for r in results}
    assert targets == {"floor", "gateway-memory", "gateway-redis"}
    assert {"burst", "realistic", "ttft@50", "idle-streams", "non-streaming"} <= scenarios
    assert len(results) == len(targets) * len(scenarios)
    for result in results:
        assert result["failed"] == 0, result
        assert result["streams_per_s"] > 0
    redis = [r for r in results if r["target"] == "gateway-redis"]
    assert all(r["redis_scripts_per_request"] >= 1 for r in redis)
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    assert "## Targets" in (tmp_path / "BENCHMARKS.md").read_text()
