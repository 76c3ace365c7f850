"""`python -m bench.otel --quick` runs: both gateways serve every stream and the one with
OpenTelemetry on exports; the CPU figures are written, not asserted (docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.processes import REPO


@pytest.mark.slow
def test_quick_otel_benchmark_measures_both_gateways_without_failures(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.otel", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "otel.json").read_text())
    (row,) = report["summary"]
    assert row["scenario"] == "burst"
    assert row["cpu_s_per_1000_off"] > 0 and row["cpu_s_per_1000_on"] > 0
    targets = {r["target"] for r in report["results"]}
    assert targets == {"otel-off", "otel-on"}
    assert all(r["failed"] == 0 and r["completed"] > 0 for r in report["results"])
    assert "exports received: 0 " not in done.stdout
