"""The key file with real processes: `keys new` prints entries that load, and a running
gateway reloads its key file without dropping anything."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from service.registry.keys import hash_key, parse_registry
from tests.support.keyfiles import MAIN_SECRET, MODEL, key_entry, keys_toml
from tests.support.processes import gateway_env, start_gateway


def registry(text: str):
    return parse_registry(text.encode(), "keys.toml")


def _keys_new(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "keys", "new", *args], capture_output=True, text=True
    )


def test_keys_new_prints_a_secret_once_and_an_entry_that_loads():
    done = _keys_new("--id", "acme-prod", "--tenant", "acme")
    assert done.returncode == 0
    secret = done.stderr.split("shown once, give it to the tenant): ")[1].split()[0]
    reg = registry(done.stdout)
    key = reg.lookup(secret)
    assert key.id == "acme-prod" and key.tenant == "acme"
    assert secret not in done.stdout
    assert hash_key(secret) in done.stdout


def test_keys_new_entry_carries_a_request_limit_even_without_defaults(caplog):
    caplog.set_level(logging.WARNING, logger="service.registry")
    done = _keys_new("--id", "acme-prod")
    key = registry(done.stdout).lookup(done.stderr.split("tenant): ")[1].split()[0])
    assert [(w.limit, w.seconds) for w in key.policy.requests] == [(60, 60)]
    assert caplog.records == []


def test_keys_new_takes_the_request_limit_to_print():
    done = _keys_new("--id", "batch", "--requests", "10/second;1000/day")
    key = registry(done.stdout).lookup(done.stderr.split("tenant): ")[1].split()[0])
    assert [(w.limit, w.seconds) for w in key.policy.requests] == [(10, 1), (1000, 86400)]


def test_keys_new_takes_a_spend_budget_to_print():
    done = _keys_new("--id", "billed", "--spend", "25/day;500.5/month")
    key = registry(done.stdout).lookup(done.stderr.split("tenant): ")[1].split()[0])
    assert [(s.period, s.text) for s in key.policy.spend] == [
        ("day", "25/day"),
        ("month", "500.5/month"),
    ]


def test_keys_new_refuses_a_bad_spend_budget_in_one_line():
    done = _keys_new("--id", "billed", "--spend", "lots")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "spend" in done.stderr


def test_keys_new_admin_prints_an_admin_key_entry():
    done = _keys_new("--id", "ops", "--admin")
    assert done.returncode == 0
    secret = done.stderr.split("give it to the operator): ")[1].split()[0]
    assert secret.startswith("gk-admin-")
    reg = registry(done.stdout)
    assert reg.lookup_admin(secret).id == "ops"
    assert reg.lookup(secret) is None


def test_keys_new_admin_refuses_a_tenant():
    done = _keys_new("--id", "ops", "--admin", "--tenant", "acme")
    assert done.returncode == 2
    assert "an admin key has no --tenant" in done.stderr


def test_keys_new_refuses_a_bad_id():
    done = subprocess.run(
        [sys.executable, "-m", "service", "keys", "new", "--id", "no spaces"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "id must be" in done.stderr
    assert "Traceback" not in done.stderr


# --- reload, with a real gateway process ------------------------------------------------


def _status(gw, secret: str) -> int:
    return httpx.post(
        f"{gw.url}/api/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    ).status_code


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def reloading_gateway(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    gw = start_gateway(gateway_env(simulator, str(keys), GATEWAY_KEYS_RELOAD_SECONDS="0.2"))
    yield gw, keys
    gw.stop()


def test_key_added_to_the_file_works_without_a_restart(reloading_gateway):
    gw, keys = reloading_gateway
    assert _status(gw, "gk-new-key") == 401
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET), key_entry("new", "gk-new-key")))
    assert _wait_for(lambda: _status(gw, "gk-new-key") == 200)


def test_key_removed_from_the_file_is_revoked(reloading_gateway):
    gw, keys = reloading_gateway
    keys.write_text(keys_toml(key_entry("other", "gk-other")))
    assert _wait_for(lambda: _status(gw, MAIN_SECRET) == 401)


def test_broken_new_file_is_refused_and_the_old_keys_stay(reloading_gateway):
    gw, keys = reloading_gateway
    keys.write_text("[[keys]\nthis is not toml")
    assert _wait_for(lambda: "reload (change) refused" in gw.read_output())
    assert _status(gw, MAIN_SECRET) == 200


def test_sighup_reloads_the_file(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(keys_toml(key_entry("main", MAIN_SECRET)))
    # Polling far apart, so only the signal can explain a fast reload.
    gw = start_gateway(gateway_env(simulator, str(keys), GATEWAY_KEYS_RELOAD_SECONDS="600"))
    try:
        keys.write_text(keys_toml(key_entry("main", MAIN_SECRET), key_entry("n", "gk-hup")))
        os.kill(gw.popen.pid, signal.SIGHUP)
        assert _wait_for(lambda: _status(gw, "gk-hup") == 200, timeout=3)
    finally:
        gw.stop()


def test_reload_does_not_drop_a_stream_in_flight(reloading_gateway):
    gw, keys = reloading_gateway
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "sim": {"chunks": 8, "delay_ms": 100},
    }
    with httpx.stream(
        "POST",
        f"{gw.url}/api/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {MAIN_SECRET}"},
        timeout=10,
    ) as response:
        keys.write_text(keys_toml(key_entry("other", "gk-other")))  # revokes the key mid-stream
        raw = response.read()
    assert raw.endswith(b"data: [DONE]\n\n")
