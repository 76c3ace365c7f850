"""Every runnable example of README.md and docs/*.md, run as a reader would paste it.

Examples without an `example-tested-by` marker run against a real `python -m service --demo`
(started by the README's own demo block), in a fresh temporary directory: shell examples with
`bash -euo pipefail`, Python ones with this environment's `python` (the one `pip install -e .`
set up). The reader's environment is what the README's earlier steps leave: the demo key
exported as `GROK_GATEWAY_KEY` (and `GATEWAY_DEMO_KEY`, so the demo keeps that key).

Two substitutions, each one the docs ask the reader for or that a test machine needs:
- `gk-...` is the demo key (the docs say to put it there);
- `localhost:8000` is this run's free port: the docs show the default port, which another
  process may hold on a test machine. A reader whose 8000 is taken sets `GATEWAY_PORT` and
  changes the URL the same way.

Each example must exit 0 and print what it is for (per-example expectations below). Marked
examples need more than a demo (Redis, Docker, a second process); the named test file runs
them through `examples_in(...)`, and a test here checks that it does.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.doc_examples import REPO, Example, all_examples, examples_in
from tests.support.processes import free_port

DEMO_KEY = "gk-docs-examples-demo-key"
DEMO_BLOCK = "python -m service --demo\n"
THIS = "tests/integration/test_docs_examples.py"
TIMEOUT = 60

# What an example's output must hold, by a phrase of its code (the first that matches).
EXPECTED = [
    ('"fault": "drop"', "API error"),  # the simulator's dropped stream, through the gateway
    ("/responses -H", "event: response.completed"),
    ('"stream": true', "data: [DONE]"),
    ("x-stream-fallback", "I see an image"),  # the simulator's answer about an image
    ("responses.create", "Once upon a time"),  # the simulator's story
    ("/vision/analyze", '"object": "list"'),  # the block ends with the model list
    ("/api/v1/usage", '"object":"usage"'),
    ("keys new", "sha256"),  # written to keys.toml: checked in the file below
    ("chat.completions.create", "Once upon a time"),
]


def expected(example: Example) -> str | None:
    """The text the example's output (or the files it writes) must hold; None: exit 0 only,
    for an example that only sets the reader's environment."""
    lines = [x for x in example.code.splitlines() if x.strip() and not x.startswith("#")]
    if all(x.startswith("export ") for x in lines):
        return None
    for phrase, text in EXPECTED:
        if phrase in example.code:
            return text
    return ""  # some output, whatever it is


def as_pasted(code: str, port: int) -> str:
    return code.replace("gk-...", DEMO_KEY).replace("localhost:8000", f"localhost:{port}")


def reader_env(**extra: str) -> dict[str, str]:
    """The environment of a reader's shell: the venv's python first on PATH, no gateway
    settings of the test run's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "XAI_"))}
    env.pop("REDIS_URL", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(example: Example, code: str, cwd: Path, env: dict[str, str]) -> str:
    """Run the example as pasted; its output (stdout and stderr), asserting exit 0."""
    suffix = ".py" if example.lang == "python" else ".sh"
    script = cwd / f"example{suffix}"
    script.write_text(code)
    command = (
        [sys.executable, str(script)]
        if example.lang == "python"
        else ["bash", "-euo", "pipefail", str(script)]
    )
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{example.name} exited {done.returncode}:\n{code}\n{output}"
    return output


def stop_tree(popen: subprocess.Popen) -> None:
    """End a shell and everything it started (the reader's Ctrl-C, then closing the terminal)."""
    try:
        children = psutil.Process(popen.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for proc in [*children, psutil.Process(popen.pid)] if popen.poll() is None else children:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(children, timeout=15)
    for proc in alive:
        proc.kill()
    if popen.poll() is None:
        popen.kill()
    popen.wait(15)


def wait_http(url: str, popen: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert popen.poll() is None, f"exited {popen.returncode} before {url} answered"
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(url)


# --- the demo and the examples that run against it -------------------------------------------


def demo_block() -> Example:
    (block,) = [e for e in examples_in("README.md") if e.code == DEMO_BLOCK]
    return block


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[int]:
    """The README's demo block, run as pasted on a free port; yields the port."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("demo")
    script = workdir / "demo.sh"
    script.write_text(demo_block().code)
    env = reader_env(GATEWAY_PORT=str(port), GATEWAY_DEMO_KEY=DEMO_KEY)
    popen = subprocess.Popen(
        ["bash", "-euo", "pipefail", str(script)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", popen)
        yield port
    finally:
        stop_tree(popen)


DEMO_EXAMPLES = [e for e in all_examples() if e.tested_by is None]


@pytest.mark.parametrize("example", DEMO_EXAMPLES, ids=[e.name for e in DEMO_EXAMPLES])
def test_example_runs_as_pasted_against_the_demo(example: Example, demo: int, tmp_path) -> None:
    env = reader_env(GROK_GATEWAY_KEY=DEMO_KEY, GATEWAY_DEMO_KEY=DEMO_KEY)
    output = run(example, as_pasted(example.code, demo), tmp_path, env)
    text = expected(example)
    if text is None:
        return
    files = [p for p in tmp_path.iterdir() if p.is_file() and p.stem != "example"]
    written = "".join(p.read_text(errors="replace") for p in files)
    if text:
        assert text in output or text in written, (
            f"{example.name}: {text!r} not in its output:\n{output[-2000:]}"
        )
    else:
        assert output.strip(), f"{example.name} printed nothing"


# --- marked examples ------------------------------------------------------------------------


MARKED = [e for e in all_examples() if e.tested_by is not None]


@pytest.mark.parametrize("example", MARKED, ids=[e.name for e in MARKED])
def test_a_marked_example_names_a_test_that_runs_its_document(example: Example) -> None:
    test_file = REPO / example.tested_by
    assert test_file.is_file(), f"{example.name}: {example.tested_by} does not exist"
    source = test_file.read_text()
    calls = re.findall(r"examples_in\(\s*[\"']([^\"']+)[\"']", source)
    assert str(example.path) in calls, (
        f"{example.name}: {example.tested_by} never calls examples_in({str(example.path)!r})"
    )


def test_every_document_is_read_and_holds_examples() -> None:
    assert DEMO_EXAMPLES and MARKED
    assert demo_block().tested_by == THIS  # run by the fixture above


# --- the Quick start's own steps, in one terminal as a reader runs them -----------------------


def readme_block(start: str) -> Example:
    (block,) = [e for e in examples_in("README.md") if e.code.startswith(start)]
    assert block.tested_by == THIS
    return block


def readme_curl() -> Example:
    return next(e for e in examples_in("README.md") if e.code.startswith("curl -N"))


def test_the_quick_start_runs_as_pasted_simulator_then_a_real_key(tmp_path) -> None:
    """Step 2 in one terminal (the gateway in the foreground), the README's curl in a second
    one with the key step 2 saved, Ctrl-C, then step 3 in the first terminal. Ports: the
    simulator's 8081 and the gateway's 8000 are this run's free ports (`GATEWAY_PORT`)."""
    sim_port, port = free_port(), free_port()
    step2 = readme_block("python -m service.simulator").code.replace("8081", str(sim_port))
    step3 = readme_block("cat >> keys.toml").code.replace("xai-...", "xai-not-a-real-key")
    log = (tmp_path / "terminal.log").open("w")
    terminal = subprocess.Popen(
        ["bash"],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=reader_env(GATEWAY_PORT=str(port)),
        text=True,
    )
    try:
        assert terminal.stdin is not None
        terminal.stdin.write(step2)
        terminal.stdin.flush()
        wait_http(f"http://127.0.0.1:{port}/readyz", terminal)
        key = re.search(r"gk-[A-Za-z0-9_-]+", (tmp_path / "acme-key.txt").read_text())[0]
        other = tmp_path / "second-terminal"
        other.mkdir()
        env = reader_env(GROK_GATEWAY_KEY=key)
        streamed = run(readme_curl(), as_pasted(readme_curl().code, port), other, env)
        assert "data: [DONE]" in streamed

        gateway = [
            p
            for p in psutil.Process(terminal.pid).children()
            if "service.simulator" not in " ".join(p.cmdline())
        ]
        assert len(gateway) == 1
        gateway[0].send_signal(signal.SIGINT)  # Ctrl-C
        gateway[0].wait(20)
        terminal.stdin.write(step3)
        terminal.stdin.flush()
        wait_http(f"http://127.0.0.1:{port}/readyz", terminal)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
        assert ready["keys"] == 1 and ready["keys_file"] == "ok"  # the aliases table loaded
        unknown = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/usage", headers={"Authorization": "Bearer gk-x"}
        )
        known = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/usage", headers={"Authorization": f"Bearer {key}"}
        )
        assert (unknown.status_code, known.status_code) == (401, 200)
    finally:
        stop_tree(terminal)
        log.close()


def test_the_install_and_test_steps_are_the_commands_ci_runs_on_a_fresh_clone() -> None:
    """The venv step (minutes of downloads) and the test command (the suite itself) run in
    `.ci/run` on a fresh clone, not inside the suite: they must be the same commands."""
    ci = [
        line.strip().replace(" -q", "")
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    venv = readme_block("python3 -m venv").code.splitlines()
    tests = readme_block("python -m pip install -e '.[test]'").code.splitlines()
    assert venv[:2] == ci[ci.index(venv[0]) : ci.index(venv[0]) + 2]
    assert venv[2] == "python -m pip install -e ." and tests[0] in ci  # [test] includes it
    assert any(line.startswith(tests[1]) for line in ci)
