"""A redis-server to break on purpose: killed, hung and restarted on a schedule, same port.

Used by the soak (`bench.soak`). Redis keeps an append-only file fsynced on every write, so a
SIGKILL or a restart loses nothing it acknowledged and the soak can count charges across
restarts. Every method blocks (run them in a thread from asyncio); `stop()` always leaves no
process behind, even a SIGSTOPped one.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.targets import Proc, start_redis

KINDS = ("kill", "hang", "restart")


@dataclass
class Fault:
    kind: str  # "kill", "hang" or "restart"
    started: float  # seconds since the soak started
    back: float = 0.0  # when Redis answered again
    detail: str = ""

    def public(self) -> dict:
        return {
            "kind": self.kind,
            "at_s": round(self.started, 1),
            "outage_s": round(self.back - self.started, 1),
            "detail": self.detail,
        }


@dataclass
class FaultyRedis:
    workdir: Path
    t0: float  # time.monotonic() of the soak's start
    down_seconds: float = 3.0  # between a SIGKILL and the restart
    hang_seconds: float = 4.0  # between SIGSTOP and SIGCONT
    proc: Proc | None = None
    faults: list[Fault] = field(default_factory=list)
    stopped: bool = False

    def start(self) -> Proc:
        port = self.proc.extra["port"] if self.proc is not None else None
        self.proc = start_redis(self.workdir, port=port, persist=True)
        if self.stopped:  # stop() ran meanwhile (Ctrl-C during a fault): leave nothing behind
            self.proc.stop()
        return self.proc

    @property
    def url(self) -> str:
        assert self.proc is not None
        return self.proc.url

    def _now(self) -> float:
        return time.monotonic() - self.t0

    def inject(self, kind: str) -> Fault:
        """Break Redis one way and bring it back; returns what was done and when."""
        assert self.proc is not None
        fault = Fault(kind, self._now())
        if kind == "kill":
            self.proc.popen.send_signal(signal.SIGKILL)
            self.proc.popen.wait()
            time.sleep(self.down_seconds)
            if not self.stopped:
                self.start()
            fault.detail = f"SIGKILL, restarted after {self.down_seconds:g}s"
        elif kind == "hang":
            self.proc.popen.send_signal(signal.SIGSTOP)
            time.sleep(self.hang_seconds)
            self.proc.popen.send_signal(signal.SIGCONT)
            fault.detail = f"SIGSTOP, SIGCONT after {self.hang_seconds:g}s"
        elif kind == "restart":
            self.proc.popen.send_signal(signal.SIGTERM)  # SHUTDOWN: AOF flushed, clients closed
            self.proc.popen.wait(30)
            if not self.stopped:
                self.start()
            fault.detail = "SIGTERM (shutdown), started again"
        else:
            raise ValueError(kind)
        fault.back = self._now()
        self.faults.append(fault)
        return fault

    def stop(self) -> None:
        self.stopped = True
        if self.proc is not None:
            self.proc.stop()
