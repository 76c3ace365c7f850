"""Run the app under uvicorn with a Kubernetes-friendly shutdown.

On SIGTERM (or SIGINT): /readyz turns 503 and new API requests get 503 at once; the listener
stays open GATEWAY_DRAIN_DELAY_SECONDS so the Service stops routing here; then it closes and
streams in flight get GATEWAY_SHUTDOWN_GRACE_SECONDS to finish; then the process exits 0.
A second signal skips the wait.

The drain overrides hooks of uvicorn's Server and replaces its worker processes' class, none
of them public API: see the pin in pyproject.toml and tests/unit/test_uvicorn_internals.py.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import time
from types import FrameType

import uvicorn
from uvicorn.supervisors import multiprocess

from service.server.http_limits import GatewayConfig, HeadLimits, default_max_connections
from service.server.lifecycle import LIFECYCLE, Lifecycle
from service.server.runtime import settle_after_startup
from service.settings import ConfigError, Settings

log = logging.getLogger("service")


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_delay: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_delay = drain_delay
        self._drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike uvicorn's own handler, this does not re-raise the signal after shutdown:
        # a drained process exits 0.
        if self._drain_deadline is not None or self.drain_delay == 0:
            self.lifecycle.draining = True
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True
            return
        self.lifecycle.draining = True
        self._drain_deadline = time.monotonic() + self.drain_delay
        log.info(
            "received %s: draining, closing the listener in %gs",
            signal.Signals(sig).name,
            self.drain_delay,
        )

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            settle_after_startup()

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline:
            self.should_exit = True
        return await super().on_tick(counter)


def bind_listener(settings: Settings) -> socket.socket:
    """The listening socket, bound before anything is printed or started (uvicorn serves on
    it): a port in use stops start-up with one line naming it, not after a banner and a key.
    Raises ConfigError."""
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} is already in use on {host} (another gateway or demo?); "
                "stop it, or set GATEWAY_PORT to a free port"
            ) from None
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); check GATEWAY_HOST and GATEWAY_PORT"
        ) from None
    sock.set_inheritable(True)  # worker processes serve on it too
    return sock


def uvicorn_config(app: object, settings: Settings) -> uvicorn.Config:
    """The server's configuration: httptools with the head limits, no websockets, no access log."""
    return GatewayConfig(
        app,
        head_limits=HeadLimits(
            timeout=settings.header_timeout,
            max_connections=settings.max_connections or default_max_connections(),
        ),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,  # configure_logging already set up JSON logging
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace,
        # Idle kept-alive connections close after settings.header_timeout (the head limits'
        # timer) when that is shorter than this.
        timeout_keep_alive=75,
        server_header=False,
        # Nothing reads the client's address: uvicorn's X-Forwarded-For middleware would only
        # cost every request its work.
        proxy_headers=False,
        date_header=True,
    )


class GatewayProcess(multiprocess.Process):
    """A uvicorn worker process that runs GatewayServer (graceful drain) instead of Server."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            drain = Settings.from_env().drain_delay  # the worker inherits the environment
            self._server = GatewayServer(self.config, LIFECYCLE, drain)
        return self._server


def run_workers(config: uvicorn.Config, sock: socket.socket) -> None:
    """Serve with `config.workers` processes sharing one socket (uvicorn's supervisor)."""
    multiprocess.Process = GatewayProcess  # type: ignore[misc]  # the supervisor's factory
    multiprocess.Multiprocess(config, sockets=[sock]).run()
