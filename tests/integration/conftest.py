"""Real processes shared by the integration tests: the simulator, a redis-server and a gateway,
each started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.support.keyfiles import MAIN_SECRET, MODEL, MODELS_SECRET, key_entry, keys_toml
from tests.support.processes import (
    Proc,
    RedisServer,
    gateway_env,
    redis_server_binary,
    start_gateway,
    start_redis,
    start_simulator,
)


@pytest.fixture(scope="session")
def simulator() -> Iterator[Proc]:
    proc = start_simulator()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port. Skips without the binary, except under CI=true."""
    if redis_server_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required under CI=true")
        pytest.skip("redis-server not installed")
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One gateway (memory limits) on the shared simulator, for tests that change nothing."""
    keys = tmp_path_factory.mktemp("keys") / "keys.toml"
    keys.write_text(
        keys_toml(
            key_entry("main", MAIN_SECRET, tenant="acme"),
            key_entry("models-only", MODELS_SECRET, extra=f'models = ["{MODEL}"]'),
        )
    )
    proc = start_gateway(gateway_env(simulator, str(keys), SSE_KEEPALIVE_SECONDS="0.3"))
    yield proc
    proc.stop()


@pytest.fixture
def sim_reset(simulator: Proc) -> Proc:
    httpx.post(f"{simulator.url}/sim/reset")
    return simulator
