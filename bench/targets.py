"""The processes under measurement: simulator, floor, gateway (memory or Redis), redis-server.

Each target is a process tree on loopback; CPU time and RSS are read from it with psutil.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

BENCH_KEY = "gk-bench-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    url: str
    log: Path
    extra: dict = field(default_factory=dict)

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mb(self) -> float:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total / 2**20

    def open_fds(self) -> int:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.num_fds()
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGCONT)  # a stopped process can't end itself
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def _spawn(
    name: str,
    args: list[str],
    env: dict,
    ready: str,
    workdir: Path,
    port: int,
    wrap: Sequence[str] = (),
) -> Proc:
    """Start `args` (behind the command `wrap`, such as valgrind, if given) and wait until
    `ready` answers: 20 s, or 240 s behind a wrapper (valgrind starts Python slowly)."""
    log = workdir / f"{name}.log"
    with open(log, "w") as out:
        popen = subprocess.Popen(
            [*wrap, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + ready, popen, timeout=240.0 if wrap else 20.0)
    except Exception:
        os.killpg(popen.pid, signal.SIGKILL)
        raise RuntimeError(f"{name} did not start: {log.read_text()[-2000:]}") from None
    return Proc(name, popen, url, log)


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "XAI_", "REDIS_"))}
    env.update(extra)
    return env


def simulator_has_openai_shapes() -> bool:
    """Whether this simulator can speak OpenAI's stream shape (`--openai-shapes`)."""
    done = subprocess.run(
        [sys.executable, "-m", "service.simulator", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "--openai-shapes" in done.stdout


def start_simulator(workdir: Path, openai_shapes: bool = False) -> Proc:
    port = free_port()
    args = [sys.executable, "-m", "service.simulator", "--host", "127.0.0.1", "--port", str(port)]
    name = "simulator"
    if openai_shapes:
        args.append("--openai-shapes")
        name = "simulator-openai"
    return _spawn(name, args, _env(), "/v1/models", workdir, port)


def start_floor(
    workdir: Path,
    simulator: Proc,
    raw: bool = False,
    name: str | None = None,
    wrap: Sequence[str] = (),
) -> Proc:
    """A floor (bench/floor.py) relaying to `simulator`; its URL is the root (no path)."""
    port = free_port()
    args = [sys.executable, "-m", "bench.floor", str(port), simulator.url]
    if raw:
        args.append("--raw")
    name = name or ("floor-raw" if raw else "floor-starlette")
    return _spawn(name, args, _env(), "/", workdir, port, wrap)


def start_upstream_and_redis(workdir: Path, procs: list[Proc]) -> tuple[Proc, Proc]:
    """The simulator and a redis-server, each added to `procs` (to stop) as it starts."""
    simulator = start_simulator(workdir)
    procs.append(simulator)
    redis = start_redis(workdir)
    procs.append(redis)
    return simulator, redis


def write_keys(workdir: Path) -> Path:
    path = workdir / "keys.toml"
    digest = hashlib.sha256(BENCH_KEY.encode()).hexdigest()
    # Generous, but every limit kind is on: request windows, a tenant window, tokens, leases.
    path.write_text(
        f"""[defaults]
requests = "100000000/minute;1000000000/day"

[tenants.bench]
requests = "100000000/minute"

[[keys]]
id = "bench"
tenant = "bench"
sha256 = "{digest}"
tokens = "100000000000/minute"
concurrent = 100000
"""
    )
    return path


def start_gateway(
    workdir: Path,
    simulator: Proc,
    redis_url: str | None,
    workers: int = 1,
    name: str = "gateway",
    keys_file: Path | None = None,
    port: int | None = None,
    wrap: Sequence[str] = (),
    **extra_env: str,
) -> Proc:
    """A gateway (`python -m service`) on `simulator`; its URL is the root (no path).

    GATEWAY_STREAM_USAGE is left at its default unless `extra_env` sets it: the xAI-shaped
    scenarios measure the relay that cuts `usage` out of every chunk, as users run it."""
    port = port or free_port()
    env = _env(
        XAI_API_KEY="bench-upstream-key",
        XAI_BASE_URL=f"{simulator.url}/v1",
        GATEWAY_KEYS_FILE=str(keys_file or write_keys(workdir)),
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_WORKERS=str(workers),
        GATEWAY_DRAIN_DELAY_SECONDS="0",
        LOG_LEVEL="info",
        **extra_env,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return _spawn(name, [sys.executable, "-m", "service"], env, "/readyz", workdir, port, wrap)


def start_redis(workdir: Path, port: int | None = None, persist: bool = False) -> Proc:
    """A redis-server on loopback (`port`: a fixed one, e.g. to restart it where it was).

    `persist`: an append-only file in `workdir`, fsynced on every write, so a SIGKILL or a
    restart loses nothing Redis acknowledged (the soak counts across restarts).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    if persist:
        args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir)]
    else:
        args += ["--appendonly", "no"]
    log = workdir / "redis.log"
    with open(log, "a") as out:
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with {popen.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        os.killpg(popen.pid, signal.SIGKILL)
        raise RuntimeError(f"redis-server did not answer PING: {log.read_text()[-2000:]}")
    return Proc("redis", popen, url, log, {"port": port})


def redis_calls(redis: Proc | None) -> dict[str, int]:
    """Top-level EVALSHA/EVAL calls and all commands so far (INFO commandstats)."""
    if redis is None:
        return {}
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    stats = client.info("commandstats")
    client.close()
    scripts = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return {"scripts": scripts, "all": sum(v["calls"] for v in stats.values())}


class PeakRss:
    """Samples a target's RSS every 50 ms while in use."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.peak = proc.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.rss_mb())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
