"""`python -m bench.affinity` runs and shows what it measures: the conversation billed less with
cache affinity than without. The figures themselves are docs/performance.md's."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import REPO


def test_the_affinity_benchmark_bills_a_conversation_less_with_affinity_on():
    done = subprocess.run(
        [sys.executable, "-m", "bench.affinity", "--turns", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    rows = {}
    for line in done.stdout.splitlines()[2:]:
        name, numbers = line[:26].strip(), line[26:].split()
        rows[name] = {"cached": int(numbers[1]), "usd": float(numbers[3])}
    assert set(rows) == {"affinity off", "affinity on (derived id)", "client's x-grok-conv-id"}
    assert rows["affinity off"]["cached"] == 0
    assert rows["affinity on (derived id)"]["cached"] > 0
    assert rows["affinity on (derived id)"]["usd"] < rows["affinity off"]["usd"]
    assert rows["client's x-grok-conv-id"]["usd"] < rows["affinity off"]["usd"]
