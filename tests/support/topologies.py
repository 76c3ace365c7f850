"""Real Redis topologies made of local `redis-server` processes on free ports: one Redis
with append-only persistence (restartable on its files), a Sentinel set (a master, a
replica, three sentinels) and a Cluster (3 masters, 3 replicas).

Each is a context manager that starts everything, waits until it serves, and stops every
process it started (never the Redis on 6379). Their timeouts are short so that a killed
master is replaced in seconds; docs/redis.md gives the production values.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_py

from tests.support.processes import free_port, redis_server_binary

SERVICE = "gateway"  # the Sentinel set's master name
DOWN_AFTER_MS = 1000  # a sentinel's, and a Cluster node's, "this master is gone"


def require_redis_tools() -> tuple[str, str]:
    """redis-server and redis-cli; a RuntimeError naming the missing one."""
    server, cli = redis_server_binary(), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError("redis-server and redis-cli are required (apt-get install redis-server)")
    return server, cli


def command(port: int, *args: str, timeout: float = 5.0) -> str:
    """One redis-cli command to 127.0.0.1:port, its output (raises on failure)."""
    _, cli = require_redis_tools()
    done = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return done.stdout.strip()


def info(port: int, section: str) -> dict[str, str]:
    """INFO <section> (`cluster`: CLUSTER INFO) as a dict."""
    lines = command(port, *(["CLUSTER", "INFO"] if section == "cluster" else ["INFO", section]))
    return dict(line.strip().split(":", 1) for line in lines.splitlines() if ":" in line)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith((b"+PONG", b"-LOADING", b"-MASTERDOWN"))
    return False


def _until(check, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {within:g}s")


@dataclass
class Node:
    """One redis-server (or sentinel) process, restartable with the same arguments and dir."""

    port: int
    dir: Path
    args: list[str]
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> Node:
        server, _ = require_redis_tools()
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "server.log", "a")  # noqa: SIM115 - the child's until it exits
        self.popen = subprocess.Popen(
            [server, *self.args],
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def answers() -> bool:
            if self.popen is not None and self.popen.poll() is not None:
                log = (self.dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis on port {self.port} exited:\n{log}")
            return _answers(self.port)

        _until(answers, 15, f"redis on port {self.port} did not answer")
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to replicas or sentinels."""
        if self.alive:
            assert self.popen is not None
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def server_args(port: int, *extra: str) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", *extra]


# Append-only, fsynced every second: the settings the shipped compose.yaml and k8s use.
AOF = ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction")


@contextlib.contextmanager
def persistent_redis(workdir: Path, extra: Sequence[str] = ()) -> Iterator[Node]:
    """One redis-server with append-only persistence in `workdir`; kill and start it again
    on the same files with `.kill()` and `.start()`."""
    port = free_port()
    node = Node(port, workdir, server_args(port, *AOF, *extra)).start()
    try:
        yield node
    finally:
        node.stop()


@dataclass
class SentinelSet:
    master: Node
    replica: Node
    sentinels: list[Node]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int:
        """The master's port as the sentinels name it now."""
        reply = command(self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", SERVICE)
        return int(reply.splitlines()[1])

    def wait_ready(self) -> None:
        """Until every sentinel knows the replica and the two other sentinels."""

        def agreed() -> bool:
            lines = [info(s.port, "sentinel").get("master0", "") for s in self.sentinels]
            return all("slaves=1" in line and "sentinels=3" in line for line in lines)

        _until(agreed, 20, "the sentinels did not find each other and the replica")

    def node(self, port: int) -> Node:
        return next(n for n in (self.master, self.replica) if n.port == port)

    def wait_promoted(self, old_port: int, within: float = 30.0) -> float:
        """Wait until every sentinel names another master and it says it is one; the
        monotonic time it was first seen promoted."""

        def promoted() -> bool:
            ports = {
                int(command(s.port, "SENTINEL", "get-master-addr-by-name", SERVICE).split()[1])
                for s in self.sentinels
            }
            if len(ports) != 1 or old_port in ports:
                return False
            return info(ports.pop(), "replication")["role"] == "master"

        _until(promoted, within, "no replica was promoted")
        return time.monotonic()

    def rejoin(self, node: Node) -> None:
        """Start a killed node again; the sentinels make it a replica of the new master."""
        node.start()
        _until(
            lambda: info(node.port, "replication").get("master_link_status") == "up",
            30,
            f"port {node.port} did not rejoin as a replica",
        )

    def stop(self) -> None:
        for node in (*self.sentinels, self.replica, self.master):
            node.stop()


@contextlib.contextmanager
def sentinel_set(workdir: Path) -> Iterator[SentinelSet]:
    """A master, its replica and three sentinels (quorum 2) that replace it a second after it
    stops answering, once they have found each other: `wait_ready()` (seconds: they meet
    through the master, every 2 s), before a test that needs a failover."""
    require_redis_tools()
    master_port, replica_port = free_port(), free_port()
    master = Node(master_port, workdir / "master", server_args(master_port, *AOF))
    replica = Node(
        replica_port,
        workdir / "replica",
        server_args(replica_port, *AOF, "--replicaof", "127.0.0.1", str(master_port)),
    )
    sentinels = []
    for i in range(3):
        port = free_port()
        directory = workdir / f"sentinel-{i}"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"  # a sentinel rewrites its own file: one each
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        sentinels.append(Node(port, directory, [str(conf), "--sentinel"]))
    group = SentinelSet(master, replica, sentinels)
    try:
        master.start()
        replica.start()
        _until(
            lambda: info(replica_port, "replication").get("master_link_status") == "up",
            15,
            "the replica did not sync",
        )
        for sentinel in sentinels:
            sentinel.start()
        yield group
    finally:
        group.stop()


@dataclass
class ClusterSet:
    nodes: list[Node]

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        return f"redis+cluster://{seeds}/0"  # two seeds: either answers

    def seeds(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def masters(self) -> list[Node]:
        """The nodes that are masters now (alive ones only)."""
        return [
            n for n in self.nodes if n.alive and info(n.port, "replication").get("role") == "master"
        ]

    def master_of(self, key: str) -> Node:
        slot = int(command(self.masters()[0].port, "CLUSTER", "KEYSLOT", key))
        for line in command(self.masters()[0].port, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            for span in parts[8:]:
                first, _, last = span.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master serves {key}'s slot {slot}")

    def wait_healthy(self, within: float = 30.0) -> None:
        def ok() -> bool:
            alive = [n for n in self.nodes if n.alive]
            return all(info(n.port, "cluster")["cluster_state"] == "ok" for n in alive)

        _until(ok, within, "the cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def cluster_port() -> int:
    """A free port whose Cluster bus port (10000 above it) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with contextlib.suppress(OSError), socket.socket() as bus:
            bus.bind(("127.0.0.1", port + 10000))
            return port


@contextlib.contextmanager
def redis_cluster(workdir: Path) -> Iterator[ClusterSet]:
    """Six cluster-enabled servers made into 3 masters with a replica each by `redis-cli
    --cluster create`; a replica takes over a second after its master stops answering."""
    _, cli = require_redis_tools()
    nodes = []
    for i in range(6):
        port = cluster_port()
        extra = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(DOWN_AFTER_MS),
            # A failed master's slots are not served until a replica takes them: refused
            # writes rather than a partial answer.
            "--cluster-require-full-coverage",
            "yes",
        )
        nodes.append(Node(port, workdir / f"node-{i}", server_args(port, *AOF, *extra)))
    group = ClusterSet(nodes)
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        group.wait_healthy()
        _until(lambda: len(group.masters()) == 3, 15, "three masters did not form")
        yield group
    finally:
        group.stop()


def counted(port: int, pattern: str) -> int:
    """The sum of the counters matching `pattern` on one node (every window of a budget)."""
    client = redis_py.Redis(port=port, socket_timeout=2)
    try:
        names = list(client.scan_iter(match=pattern, count=1000))
        return sum(int(v) for v in client.mget(names)) if names else 0
    finally:
        client.close()


def live_leases(port: int, name: str) -> int:
    """Leases in a concurrency set on one node that have not expired on its clock."""
    client = redis_py.Redis(port=port, socket_timeout=2)
    try:
        seconds, micros = client.time()
        return client.zcount(name, seconds * 1000 + micros // 1000, "+inf")
    finally:
        client.close()


def names_on(port: int, pattern: str) -> list[str]:
    client = redis_py.Redis(port=port, socket_timeout=2, decode_responses=True)
    try:
        return list(client.scan_iter(match=pattern, count=1000))
    finally:
        client.close()


def need_redis_tools() -> None:
    """Skip a test without redis-server and redis-cli, except under CI=true (a failure)."""
    import pytest  # here: the benchmark (`bench.admissions`) uses this module without pytest

    try:
        require_redis_tools()
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc} under CI=true")
        pytest.skip(str(exc))
