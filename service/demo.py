"""`python -m service --demo`: the gateway on the built-in simulator, no key, no Redis.

Both servers run in one event loop: the simulator on a free loopback port, the gateway on
GATEWAY_HOST:GATEWAY_PORT (bound by the caller before anything is printed) with in-memory
limits and one demo key printed at start: GATEWAY_DEMO_KEY if set, so an exported key keeps
working across restarts, else a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket

import uvicorn

from service.app import create_app
from service.registry.keys import hash_key, new_key_secret, parse_registry
from service.server.lifecycle import LIFECYCLE
from service.server.serve import GatewayServer, uvicorn_config
from service.settings import Settings
from service.simulator.app import SimulatorConfig
from service.simulator.app import create_app as create_simulator

DEMO_LIMITS = """
[defaults]
requests = "120/minute"
tokens = "200000/minute"
concurrent = 16

[[keys]]
id = "demo"
tenant = "demo"
sha256 = "{digest}"
"""


async def run_demo(settings: Settings, sock: socket.socket) -> int:
    """Serve on `sock` until SIGTERM/SIGINT; returns the exit code."""
    sim_port = _free_port()
    simulator = uvicorn.Server(
        uvicorn.Config(
            create_simulator(SimulatorConfig(delay_ms=30)),
            host="127.0.0.1",
            port=sim_port,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level="warning",
            timeout_keep_alive=75,
        )
    )
    # Only the gateway handles signals; the simulator stops when the gateway has drained.
    simulator.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    sim_task = asyncio.create_task(simulator.serve())

    secret = settings.demo_key or new_key_secret()
    registry = parse_registry(DEMO_LIMITS.format(digest=hash_key(secret)).encode(), "demo")
    settings = dataclasses.replace(
        settings,
        xai_api_key="demo-upstream-key",
        xai_base_url=f"http://127.0.0.1:{sim_port}/v1",
        redis_url=None,
        keys_file="",
    )
    app = create_app(settings, registry)
    config = uvicorn_config(app, settings)
    gateway = GatewayServer(config, LIFECYCLE, drain_delay=0)
    base = f"http://localhost:{settings.port}/api/v1"
    origin = "GATEWAY_DEMO_KEY" if settings.demo_key else "new; set GATEWAY_DEMO_KEY to keep one"
    print(
        "\n  grok-gateway demo: simulated upstream, in-memory limits (120 requests/minute)\n"
        f"  base URL : {base}\n"
        f"  demo key : {secret}  ({origin})\n\n"
        f"  export GROK_GATEWAY_KEY={secret}\n"
        f'  curl -N {base}/chat/completions -H "Authorization: Bearer $GROK_GATEWAY_KEY" '
        "-H 'Content-Type: application/json' \\\n"
        '    -d \'{"model": "grok-4-1-fast-non-reasoning", "stream": true, '
        '"messages": [{"role": "user", "content": "Hello"}]}\'\n',
        flush=True,
    )
    try:
        await gateway.serve(sockets=[sock])
    finally:
        simulator.should_exit = True
        await sim_task
    return 0 if gateway.started else 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
