"""`python -m service keys …` and `tenants …` over the admin API, run as an operator runs them
(a subprocess) against a real gateway without REDIS_URL (the in-memory store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support.doc_examples import REPO
from tests.support.keyfiles import digest, key_entry, keys_toml
from tests.support.processes import Proc, gateway_env, start_gateway

ADMIN = "gk-admin-cli-0123456789"


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory) -> Iterator[Proc]:
    keys = tmp_path_factory.mktemp("cli") / "keys.toml"
    keys.write_text(
        keys_toml(
            key_entry("from-file", "gk-cli-file-0123456789", tenant="filed"),
            f'[[admin_keys]]\nid = "ops"\nsha256 = "{digest(ADMIN)}"\n',
        )
    )
    proc = start_gateway(gateway_env(simulator, str(keys)))
    yield proc
    proc.stop()


def cli(gateway: Proc, *args: str, admin_key: str | None = ADMIN) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_URL": gateway.url, "PYTHONPATH": str(REPO)})
    if admin_key is not None:
        env["GATEWAY_ADMIN_KEY"] = admin_key
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_create_prints_the_api_answer_with_a_secret_that_works(gateway):
    done = cli(gateway, "keys", "create", "--tenant", "t1", "--id", "cli-1", "--format", "json")
    assert done.returncode == 0, done.stderr
    key = json.loads(done.stdout)
    assert (key["id"], key["tenant"], key["source"]) == ("cli-1", "t1", "api")
    assert "shown once" in done.stderr
    models = httpx.get(
        gateway.url + "/api/v1/models", headers={"authorization": f"Bearer {key['secret']}"}
    )
    assert models.status_code == 200


def test_keys_list_prints_a_table_of_file_and_api_keys(gateway):
    cli(gateway, "keys", "create", "--tenant", "t1", "--id", "cli-listed", "--requests", "9/hour")
    done = cli(gateway, "keys", "list")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == [
        "id", "tenant", "source", "disabled", "expires_at", "requests", "tokens", "concurrent",
        "spend",
    ]  # fmt: skip
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id["from-file"][:3] == ["from-file", "filed", "file"]
    assert by_id["cli-listed"][:3] == ["cli-listed", "t1", "api"]
    assert by_id["cli-listed"][5] == "9/hour"


def test_keys_update_rotate_and_delete_change_the_key(gateway):
    created = json.loads(
        cli(gateway, "keys", "create", "--tenant", "t1", "--id", "cli-2", "--format", "json").stdout
    )
    updated = cli(gateway, "keys", "update", "cli-2", "--disable", "--metadata", "a=b")
    assert updated.returncode == 0, updated.stderr
    shown = dict(line.split(None, 1) for line in updated.stdout.splitlines())
    assert (shown["disabled"], shown["metadata"]) == ("true", "a=b")
    rotated = json.loads(
        cli(gateway, "keys", "rotate", "cli-2", "--grace-seconds", "0", "--format", "json").stdout
    )
    assert rotated["secret"] != created["secret"] and rotated["previous_secret_expires_at"] is None
    assert cli(gateway, "keys", "delete", "cli-2").returncode == 0
    gone = cli(gateway, "keys", "get", "cli-2")
    assert gone.returncode == 1 and "not_found" in gone.stderr


def test_an_api_error_exits_1_naming_its_code(gateway):
    done = cli(gateway, "keys", "update", "from-file", "--requests", "1/hour")
    assert done.returncode == 1
    assert "key_managed_by_file" in done.stderr and done.stdout == ""


def test_without_an_admin_key_the_cli_exits_2_saying_what_to_set(gateway):
    done = cli(gateway, "keys", "list", admin_key=None)
    assert done.returncode == 2 and "GATEWAY_ADMIN_KEY" in done.stderr


def test_tenants_put_get_and_delete(gateway):
    put = cli(gateway, "tenants", "put", "t9", "--requests", "100/hour", "--format", "json")
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["requests"] == "100/hour"
    assert "t9" in cli(gateway, "tenants", "list").stdout
    assert cli(gateway, "tenants", "delete", "t9").returncode == 0
    assert cli(gateway, "tenants", "get", "t9").returncode == 1


def test_keys_new_stays_offline(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "service", "keys", "new", "--id", "offline", "--tenant", "t"],
        env={**os.environ, "PYTHONPATH": str(REPO), "GATEWAY_URL": "http://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and 'id = "offline"' in done.stdout
