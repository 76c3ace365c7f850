"""Property-based fuzzing of the admin API's input (SPEC 9 and 10): whatever an operator's
script sends to `/admin/v1/keys`, `/tenants` and `/audit` (any JSON, broken bytes, odd ids and
parameters), the gateway answers a 2xx or a 4xx with an OpenAI-shaped error, never a 5xx of its
own, never a secret outside the answer that issues it, and logs no traceback and no secret.

A real gateway process (in-memory key store) answers; each example is one HTTP request.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.keyfiles import digest, key_entry, keys_toml
from tests.support.processes import Proc, gateway_env, start_gateway

ADMIN = "gk-admin-fuzz-keys-0123456789"
FILE_SECRET = "gk-fuzz-file-0123456789"
SEEDS: dict[tuple[str, str], dict[str, Any] | None] = {
    ("POST", "/admin/v1/keys"): {
        "id": "fz",
        "tenant": "t",
        "requests": "5/minute",
        "tokens": "100/minute",
        "concurrent": 2,
        "spend": "1/day",
        "models": ["grok-4"],
        "expires_at": "2030-01-01T00:00:00Z",
        "metadata": {"a": "b"},
    },
    ("PATCH", "/admin/v1/keys/{id}"): {"disabled": True, "requests": None, "metadata": {"x": ""}},
    ("POST", "/admin/v1/keys/{id}/rotate"): {"grace_seconds": 10},
    ("PUT", "/admin/v1/tenants/{id}"): {"requests": "5/minute", "spend": "1/day"},
    ("DELETE", "/admin/v1/keys/{id}"): None,
    ("DELETE", "/admin/v1/tenants/{id}"): None,
    ("GET", "/admin/v1/keys/{id}"): None,
    ("GET", "/admin/v1/tenants/{id}"): None,
    ("GET", "/admin/v1/keys?tenant={q}"): None,
    ("GET", "/admin/v1/audit?limit={q}"): None,
}

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**64, 10**300, -1, 0, 604801])
    | st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2030-01-01T00:00:00Z",
            "1e999999999/day",
            "99999999999999999999999/second",
            "5/minute;6/minute",
            "0.000000001/month",
        ]
    )
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
ids = st.sampled_from(["fz", "file-key", "t", ".", "..", "a" * 65, "%2F", "é"]) | st.text(
    max_size=70
)


@st.composite
def bodies(draw: st.DrawFn, seed: dict[str, Any] | None) -> bytes | None:
    kind = draw(st.sampled_from(["valid", "field", "field", "drop", "add", "any", "bytes"]))
    base = seed or {}
    if kind == "valid":
        return None if seed is None else json.dumps(seed).encode()
    if kind in ("field", "drop", "add"):
        body = copy.deepcopy(base)
        names = list(body)
        if kind == "field" and names:
            body[draw(st.sampled_from(names))] = draw(json_values)
        elif kind == "drop" and names:
            del body[draw(st.sampled_from(names))]
        else:
            body[draw(st.text(max_size=12))] = draw(json_values)
        return json.dumps(body).encode()
    if kind == "any":
        return json.dumps(draw(json_values)).encode()
    raw = json.dumps(base).encode()
    cut = draw(st.integers(0, len(raw)))
    return raw[:cut] + draw(st.binary(max_size=8) | st.sampled_from([b"NaN", b"\xff", b"[[["]))


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory) -> Iterator[Proc]:
    keys = tmp_path_factory.mktemp("admin-fuzz") / "keys.toml"
    keys.write_text(
        keys_toml(
            key_entry("file-key", FILE_SECRET, tenant="filed"),
            '[tenants.filed]\nrequests = "10/minute"\n',
            f'[[admin_keys]]\nid = "ops"\nsha256 = "{digest(ADMIN)}"\n',
        )
    )
    proc = start_gateway(gateway_env(simulator, str(keys)))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def issued() -> list[str]:
    """Every secret the API issued during the run: none may show up in the log."""
    return []


@pytest.fixture(scope="module")
def client(gateway: Proc) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=10
    ) as c:
        yield c


@FUZZ
@given(data=st.data())
def test_no_admin_request_gets_a_5xx_or_an_unshaped_error(client, issued, data):
    method, template = data.draw(st.sampled_from(list(SEEDS)))
    path = template.format(
        id=quote(data.draw(ids), safe=""), q=quote(data.draw(st.text(max_size=12)), safe="")
    )
    body = data.draw(bodies(SEEDS[(method, template)]))
    response = client.request(method, path, content=body)
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code >= 400:
        error = answer["error"]
        assert error["code"] and error["message"]
    elif "secret" in answer:
        assert response.status_code in (200, 201)
        issued.append(answer["secret"])
    text = response.text
    assert ADMIN not in text and FILE_SECRET not in text
    assert not any(digest(s) in text for s in [*issued, FILE_SECRET, ADMIN])


def test_the_fuzzed_gateway_logged_no_traceback_and_no_secret(gateway, issued):
    log = gateway.read_output()
    assert "Traceback" not in log and '"level": "error"' not in log
    assert issued  # some examples did issue keys
    for secret in [*issued, ADMIN, FILE_SECRET]:
        assert secret not in log and digest(secret) not in log
