"""Shared fixtures: real simulator and redis-server processes, started once per session."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.processes import (
    Proc,
    RedisServer,
    redis_server_binary,
    start_redis,
    start_simulator,
)


@pytest.fixture(scope="session")
def simulator() -> Proc:
    proc = start_simulator()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """A private redis-server on a free port. Skips without the binary, except under CI=true."""
    if redis_server_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required under CI=true")
        pytest.skip("redis-server not installed")
    server = start_redis()
    yield server
    server.stop()


# --- the gateway under test -------------------------------------------------------------

MAIN_SECRET = "gk-test-main-0123456789"
MODELS_SECRET = "gk-test-models-0123456789"
MODEL = "grok-4-1-fast-non-reasoning"


def clear_of_a_minute_boundary(seconds: float = 3.0) -> None:
    """Sleep past the end of the clock's minute if it ends within `seconds`: counts compared
    across a few requests then stay in one per-minute window (the windows, in Redis or in a
    gateway's memory, follow this machine's clock in the tests)."""
    clear_of_a_window_boundary(seconds, 60)


def clear_of_a_window_boundary(seconds: float, period: float) -> None:
    """Sleep past the end of the clock's current `period` (seconds) if it ends within
    `seconds`."""
    left = period - time.time() % period
    if left < seconds:
        time.sleep(left + 0.2)


@pytest.fixture(autouse=True)
def _clear_of_an_hour_boundary() -> None:
    """Most tests' keys count in hour windows (or days, which end on an hour): a test that
    ran across the hour's end would see a fresh window admit again, and a window's counter
    in Redis expires a second after its window ends, taking what the test counted before
    with it. The tests that count take well under 30 s: one that would start in an hour's
    last 30 s waits for the next hour."""
    clear_of_a_window_boundary(30, 3600)


def keys_toml(*entries: str, defaults: str = 'requests = "100000/minute"') -> str:
    """A key file: `[defaults]` then the given `[[keys]]` entries."""
    return f"[defaults]\n{defaults}\n\n" + "\n".join(entries)


def key_entry(key_id: str, secret: str, extra: str = "", tenant: str | None = None) -> str:
    from tests.support.processes import digest

    tenant_line = f'tenant = "{tenant}"\n' if tenant else ""
    return f'[[keys]]\nid = "{key_id}"\n{tenant_line}sha256 = "{digest(secret)}"\n{extra}\n'


def gateway_env(simulator: Proc, keys_file: str, **overrides: str) -> dict[str, str]:
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


@pytest.fixture(scope="session")
def gateway(simulator: Proc, tmp_path_factory: pytest.TempPathFactory) -> Proc:
    """One gateway (memory limits) on the shared simulator, for tests that change nothing."""
    from tests.support.processes import start_gateway

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
    import httpx

    httpx.post(f"{simulator.url}/sim/reset")
    return simulator
