"""What the server layer takes from uvicorn's internals is still there.

`service/server/http_limits.py` subclasses uvicorn's httptools protocol, and
`service/server/serve.py` its Server and its worker processes' Process. None of that is
uvicorn's public API: pyproject.toml pins the uvicorn versions tested. When a new uvicorn is
allowed, these tests say which internal moved, before a request finds out.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState
from uvicorn.supervisors import multiprocess

from service.server.http_limits import GatewayConfig, HeadLimitedProtocol, HeadLimits


def moved(where: str, used_by: str) -> str:
    return f"uvicorn's {where} changed: {used_by} relies on it (see pyproject.toml's pin)"


@pytest.mark.parametrize(
    "method",
    [
        "connection_made",
        "connection_lost",
        "data_received",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "on_response_complete",
    ],
)
def test_the_httptools_protocol_still_has_each_method_the_head_limits_override(method):
    parent = httptools_impl.HttpToolsProtocol
    assert callable(getattr(parent, method, None)), moved(
        f"HttpToolsProtocol.{method}", "HeadLimitedProtocol (server/http_limits.py)"
    )


def test_the_httptools_protocol_is_still_built_as_the_head_limits_build_it():
    parameters = list(inspect.signature(httptools_impl.HttpToolsProtocol).parameters)
    assert parameters == ["config", "server_state", "app_state", "_loop"], moved(
        f"HttpToolsProtocol's constructor, now {parameters}",
        "HeadLimitedProtocol.__init__ (server/http_limits.py)",
    )
    assert isinstance(getattr(httptools_impl, "STATUS_LINE", None), dict), moved(
        "httptools_impl.STATUS_LINE", "HeadLimitedProtocol._refuse (server/http_limits.py)"
    )
    assert httptools_impl.STATUS_LINE[431].startswith(b"HTTP/1.1 431 "), moved(
        "STATUS_LINE's lines", "HeadLimitedProtocol._refuse (server/http_limits.py)"
    )


class FakeTransport(asyncio.Transport):
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def test_a_connected_protocol_still_has_the_state_the_head_limits_read():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = GatewayConfig(app, head_limits=HeadLimits(), log_config=None)
    protocol = HeadLimitedProtocol(config, ServerState(), {})
    protocol.connection_made(FakeTransport())
    try:
        for attribute in ("flow", "pipeline", "cycle", "transport", "loop", "server_state"):
            assert hasattr(protocol, attribute), moved(
                f"HttpToolsProtocol.{attribute}", "HeadLimitedProtocol (server/http_limits.py)"
            )
        assert callable(protocol.flow.pause_reading), moved(
            "FlowControl.pause_reading", "HeadLimitedProtocol (server/http_limits.py)"
        )
        assert isinstance(protocol.server_state.default_headers, list), moved(
            "ServerState.default_headers", "HeadLimitedProtocol._refuse (server/http_limits.py)"
        )
        assert protocol in protocol.connections, moved(
            "HttpToolsProtocol.connections (the server's open connections)",
            "HeadLimitedProtocol.connection_made's cap (server/http_limits.py)",
        )
    finally:
        protocol.connection_lost(None)


def test_the_server_still_has_the_hooks_the_graceful_drain_overrides():
    server = uvicorn.Server(uvicorn.Config(app=None))
    for method in ("handle_exit", "startup", "on_tick"):
        assert callable(getattr(uvicorn.Server, method, None)), moved(
            f"Server.{method}", "GatewayServer (server/serve.py)"
        )
    for flag in ("should_exit", "force_exit", "started"):
        assert getattr(server, flag, None) is False, moved(
            f"Server.{flag}", "GatewayServer (server/serve.py)"
        )


def test_worker_processes_are_still_made_by_the_class_the_drain_replaces():
    process = getattr(multiprocess, "Process", None)
    assert isinstance(process, type), moved(
        "supervisors.multiprocess.Process", "run_workers (server/serve.py)"
    )
    assert isinstance(inspect.getattr_static(process, "server", None), property), moved(
        "multiprocess.Process.server", "GatewayProcess (server/serve.py)"
    )
    assert "self._server" in inspect.getsource(process.__init__), moved(
        "multiprocess.Process._server", "GatewayProcess (server/serve.py)"
    )
