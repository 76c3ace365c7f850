"""Real processes for tests: the simulator, gateways and redis-server, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers (any status), or fail with the process's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url}:\n{out}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class Proc:
    """A running child process with its base URL; `stop()` ends it and returns its output."""

    popen: subprocess.Popen
    url: str
    port: int
    log_path: Path
    output: str = field(default="", init=False)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.output = self.log_path.read_text(errors="replace")
        return self.popen.returncode

    def read_output(self) -> str:
        return self.log_path.read_text(errors="replace")


def _spawn(args: list[str], env: dict[str, str], port: int, ready_path: str) -> Proc:
    proc = _launch(args, env, port)
    _wait_ready(proc, args, ready_path)
    return proc


def _launch(args: list[str], env: dict[str, str], port: int) -> Proc:
    log = Path(tempfile.mkstemp(prefix="gw-test-", suffix=".log")[1])
    fh = open(log, "w")  # noqa: SIM115 - owned by the child until it exits
    popen = subprocess.Popen(
        args, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
    )
    return Proc(popen=popen, url=f"http://127.0.0.1:{port}", port=port, log_path=log)


def _wait_ready(proc: Proc, args: list[str], ready_path: str) -> None:
    try:
        wait_http(proc.url + ready_path, proc=proc.popen)
    except Exception:
        proc.popen.kill()
        proc.popen.wait()
        raise RuntimeError(f"{args} did not start:\n{proc.read_output()}") from None


def start_simulator(*extra: str) -> Proc:
    port = free_port()
    args = [sys.executable, "-m", "service.simulator", "--host", "127.0.0.1", "--port", str(port)]
    return _spawn([*args, *extra], dict(os.environ), port, "/v1/models")


def start_gateway(env: dict[str, str], *args: str) -> Proc:
    """Start `python -m service` with the given environment on a free port."""
    (proc,) = start_gateways(env, 1, *args)
    return proc


def start_gateways(env: dict[str, str], n: int, *args: str) -> list[Proc]:
    """Start `n` gateways (replicas) with the same environment at once, each on its own port:
    they start side by side rather than one after another."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "XAI_"))}
    base.pop("REDIS_URL", None)
    command = [sys.executable, "-m", "service", *args]
    procs = [
        _launch(
            command, {**base, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), **env}, port
        )
        for port in ports
    ]
    try:
        for proc in procs:
            _wait_ready(proc, command, "/healthz")
    except Exception:
        for proc in procs:
            proc.stop(signal.SIGKILL)
        raise
    return procs


def gateway_env(simulator: Proc, keys_file: str, **overrides: str) -> dict[str, str]:
    """The environment of a gateway on `simulator` with `keys_file`, quick to drain."""
    env = {
        "XAI_API_KEY": "xai-test-upstream-key",
        "XAI_BASE_URL": f"{simulator.url}/v1",
        "GATEWAY_KEYS_FILE": keys_file,
        "GATEWAY_DRAIN_DELAY_SECONDS": "0",
        "UPSTREAM_RETRIES": "1",
        "LOG_LEVEL": "info",
        # One key-status poll at start only: none lands between a request and /sim/stats.
        "UPSTREAM_STATUS_INTERVAL_SECONDS": "3600",
    }
    env.update(overrides)
    return env


@dataclass
class RedisServer:
    popen: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(10)


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def start_redis(port: int | None = None, extra: Sequence[str] = ()) -> RedisServer:
    """Start a private redis-server (no persistence) on a free port and wait for PING.

    `extra`: more server arguments, e.g. `("--requirepass", "secret")`.
    """
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = port or free_port()
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra]
    popen = subprocess.Popen(
        [binary, "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                return RedisServer(popen, port)
        time.sleep(0.05)
    popen.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


@contextlib.contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        proc.stop()
