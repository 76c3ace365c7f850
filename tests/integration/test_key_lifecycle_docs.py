"""docs/key-lifecycle.md's examples, run verbatim in order, as an operator pastes them, against
a real gateway on a real Redis: each must succeed, and together leave the keys they describe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support.doc_examples import REPO, Example, examples_in
from tests.support.keyfiles import digest, keys_toml
from tests.support.processes import Proc, gateway_env, start_gateway, start_redis

ADMIN = "gk-admin-docs-0123456789"
EXAMPLES = examples_in("docs/key-lifecycle.md")


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory) -> Iterator[Proc]:
    redis = start_redis()
    keys = tmp_path_factory.mktemp("lifecycle") / "keys.toml"
    keys.write_text(keys_toml(f'[[admin_keys]]\nid = "ops"\nsha256 = "{digest(ADMIN)}"\n'))
    proc = start_gateway(gateway_env(simulator, str(keys), REDIS_URL=redis.url))
    yield proc
    proc.stop()
    redis.stop()


@pytest.fixture(scope="module")
def outputs(gateway: Proc) -> list[tuple[Example, subprocess.CompletedProcess]]:
    """Every example's run, in the document's order (each depends on the ones before)."""
    env = {
        **os.environ,
        "GATEWAY_URL": gateway.url,
        "GATEWAY_ADMIN_KEY": ADMIN,
        "PYTHONPATH": str(REPO),
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    runs = []
    for example in EXAMPLES:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", example.code],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        runs.append((example, done))
    return runs


def admin_get(gateway: Proc, path: str) -> httpx.Response:
    return httpx.get(gateway.url + path, headers={"authorization": f"Bearer {ADMIN}"})


def test_every_example_of_the_document_is_marked_for_this_test():
    assert EXAMPLES
    assert {e.tested_by for e in EXAMPLES} == {"tests/integration/test_key_lifecycle_docs.py"}


def test_every_example_runs_without_an_error(outputs):
    for example, done in outputs:
        assert done.returncode == 0, f"{example.name}: {done.stderr}"
        assert '"error"' not in done.stdout, f"{example.name}: {done.stdout}"


def test_the_issued_key_answers_its_secret_once_and_the_secret_works(outputs, gateway):
    issued = json.loads(outputs[0][1].stdout)
    assert issued["id"] == "acme-prod" and issued["secret"].startswith("gk-")
    assert issued["metadata"] == {"owner": "billing@acme.example"}
    listed = admin_get(gateway, "/admin/v1/keys/acme-prod").text
    assert issued["secret"] not in listed and "secret" not in listed


def test_the_documented_changes_are_in_force(outputs, gateway):
    key = admin_get(gateway, "/admin/v1/keys/acme-prod").json()
    assert (key["requests"], key["tokens"], key["spend"]) == (
        "1200/minute",
        "200000/minute",
        None,
    )
    assert key["expires_at"] == "2031-06-30T00:00:00Z"
    assert admin_get(gateway, "/admin/v1/keys/acme-ci").status_code == 404  # deleted
    tenant = admin_get(gateway, "/admin/v1/tenants/acme").json()
    assert (tenant["requests"], tenant["spend"]) == ("5000/minute", "500/month")


def test_the_rotated_key_keeps_its_old_secret_for_the_documented_grace(outputs, gateway):
    issued = json.loads(outputs[0][1].stdout)["secret"]
    rotated = json.loads(next(d.stdout for e, d in outputs if "/rotate" in e.code))
    assert rotated["id"] == "acme-prod" and rotated["secret"] != issued
    assert rotated["previous_secret_expires_at"] is not None
    for secret in (issued, rotated["secret"]):
        answer = httpx.get(
            gateway.url + "/api/v1/models", headers={"authorization": f"Bearer {secret}"}
        )
        assert answer.status_code == 200


def test_the_audit_example_answers_the_last_five_writes(outputs):
    audit = json.loads(outputs[-1][1].stdout)["data"]
    assert [r["action"] for r in audit] == [
        "tenant.put",
        "key.update",
        "key.delete",
        "key.update",
        "key.rotate",
    ]
    assert {r["admin_key_id"] for r in audit} == {"ops"}
