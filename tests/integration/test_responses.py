"""The Responses API through the gateway: the OpenAI SDK streaming and not, disconnects,
token budgets from `response.completed`, and every tenant's stored responses private to it
across replicas on one Redis."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.support.keyfiles import key_entry, keys_toml
from tests.support.processes import Proc, RedisServer, gateway_env, start_gateway, start_gateways
from tests.support.usage import eventually

MODEL = "grok-4-1-fast-non-reasoning"
ACME_1, ACME_2, GLOBEX, SOLO = "gk-resp-acme-1", "gk-resp-acme-2", "gk-resp-globex", "gk-resp-solo"
TOKENS_KEY = "gk-resp-tokens"


@pytest.fixture(scope="module")
def replicas(simulator: Proc, redis_server: RedisServer, tmp_path_factory) -> list[Proc]:
    """Two gateways on one Redis: tenants acme (two keys) and globex, and a key without one."""
    keys = tmp_path_factory.mktemp("responses") / "keys.toml"
    keys.write_text(
        keys_toml(
            key_entry("acme-1", ACME_1, tenant="acme"),
            key_entry("acme-2", ACME_2, tenant="acme"),
            key_entry("globex-1", GLOBEX, tenant="globex"),
            key_entry("solo", SOLO),
            key_entry("tokens", TOKENS_KEY, extra='tokens = "100000/hour"'),
            # Hour windows: the autouse guard keeps each test clear of their end.
            defaults='requests = "100000/hour"',
        )
    )
    env = gateway_env(simulator, str(keys), REDIS_URL=redis_server.url, SSE_KEEPALIVE_SECONDS="1")
    procs = start_gateways(env, 2)
    yield procs
    for proc in procs:
        proc.stop()


def sdk(gateway: Proc, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=f"{gateway.url}/api/v1", max_retries=0)


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def sim_stats(simulator: Proc) -> dict:
    return httpx.get(f"{simulator.url}/sim/stats").json()


def create(gateway: Proc, secret: str, **extra) -> str:
    body = {"model": MODEL, "input": "Tell me a story", **extra}
    response = httpx.post(
        f"{gateway.url}/api/v1/responses", json=body, headers=auth(secret), timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_sdk_creates_a_response_without_streaming(replicas: list[Proc]) -> None:
    response = sdk(replicas[0], ACME_1).responses.create(model=MODEL, input="Hello there")

    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


def test_sdk_streams_every_event_through(replicas: list[Proc]) -> None:
    events = list(
        sdk(replicas[0], ACME_1).responses.create(model=MODEL, input="Hello there", stream=True)
    )

    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_stream_answers_as_server_sent_events(replicas: list[Proc]) -> None:
    body = {"model": MODEL, "input": "Hello", "stream": True}
    with httpx.stream(
        "POST", f"{replicas[0].url}/api/v1/responses", json=body, headers=auth(ACME_1)
    ) as response:
        raw = response.read()

    assert response.headers["content-type"].startswith("text/event-stream")
    assert raw.startswith(b"event: response.created\ndata: {")
    assert b"event: response.completed\n" in raw
    assert b"data: [DONE]" not in raw  # the Responses API has no [DONE]


def test_missing_input_is_refused_naming_the_field(replicas: list[Proc]) -> None:
    response = httpx.post(
        f"{replicas[0].url}/api/v1/responses", json={"model": MODEL}, headers=auth(ACME_1)
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


def test_client_disconnect_cancels_the_upstream_stream(
    replicas: list[Proc], simulator: Proc
) -> None:
    before = sim_stats(simulator)["disconnects"]
    body = {
        "model": MODEL,
        "input": "Long one",
        "stream": True,
        "sim": {"chunks": 200, "delay_ms": 50},
    }
    with httpx.stream(
        "POST", f"{replicas[0].url}/api/v1/responses", json=body, headers=auth(ACME_1)
    ) as response:
        for line in response.iter_lines():
            if line.startswith("event: response.output_text.delta"):
                break  # leave mid-stream

    deadline = time.monotonic() + 5
    while sim_stats(simulator)["disconnects"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim_stats(simulator)["disconnects"] == before + 1


def test_tokens_are_charged_from_response_completed(replicas: list[Proc]) -> None:
    events = list(
        sdk(replicas[0], TOKENS_KEY).responses.create(model=MODEL, input="Count me", stream=True)
    )
    used = events[-1].response.usage.total_tokens

    probe = httpx.post(
        f"{replicas[1].url}/api/v1/responses",
        json={"model": MODEL, "input": "again"},
        headers=auth(TOKENS_KEY),
    )

    assert probe.status_code == 200
    # The header shows the budget after admission, before this probe's own usage is charged.
    assert int(probe.headers["x-ratelimit-remaining-tokens"]) == 100000 - used


# --- tenant privacy ------------------------------------------------------------------------


def test_same_tenant_reads_its_response_on_another_replica(replicas: list[Proc]) -> None:
    response_id = create(replicas[0], ACME_1)

    got = httpx.get(f"{replicas[1].url}/api/v1/responses/{response_id}", headers=auth(ACME_2))

    assert got.status_code == 200
    assert got.json()["id"] == response_id


def test_other_tenant_gets_the_unknown_id_answer_and_the_upstream_is_never_called(
    replicas: list[Proc], simulator: Proc
) -> None:
    response_id = create(replicas[0], ACME_1)
    unknown = httpx.get(
        f"{replicas[1].url}/api/v1/responses/resp_doesnotexist0000", headers=auth(GLOBEX)
    )
    upstream_before = sim_stats(simulator)["responses_requests"]

    foreign = [
        httpx.get(f"{replicas[1].url}/api/v1/responses/{response_id}", headers=auth(GLOBEX)),
        httpx.delete(f"{replicas[1].url}/api/v1/responses/{response_id}", headers=auth(GLOBEX)),
        httpx.post(
            f"{replicas[1].url}/api/v1/responses",
            json={"model": MODEL, "input": "go on", "previous_response_id": response_id},
            headers=auth(GLOBEX),
        ),
        httpx.get(f"{replicas[0].url}/api/v1/responses/{response_id}", headers=auth(SOLO)),
    ]

    for answer in foreign:
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
        assert answer.json()["error"]["message"] == f"No response found with id '{response_id}'."
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert sim_stats(simulator)["responses_requests"] == upstream_before
    still_there = httpx.get(
        f"{replicas[0].url}/api/v1/responses/{response_id}", headers=auth(ACME_1)
    )
    assert still_there.status_code == 200


def test_refused_foreign_lookup_spends_nothing(replicas: list[Proc]) -> None:
    response_id = create(replicas[0], ACME_1)
    first = httpx.get(f"{replicas[0].url}/api/v1/models", headers=auth(GLOBEX))

    for _ in range(3):
        httpx.get(f"{replicas[1].url}/api/v1/responses/{response_id}", headers=auth(GLOBEX))
    second = httpx.get(f"{replicas[0].url}/api/v1/models", headers=auth(GLOBEX))

    remaining = int(first.headers["x-ratelimit-remaining-requests"])
    assert int(second.headers["x-ratelimit-remaining-requests"]) == remaining - 1


def test_owner_continues_a_conversation_across_replicas(replicas: list[Proc]) -> None:
    first = create(replicas[0], ACME_1)

    follow_up = sdk(replicas[1], ACME_2).responses.create(
        model=MODEL, input="And then?", previous_response_id=first
    )

    assert follow_up.previous_response_id == first


def test_deleted_response_is_gone_for_its_owner_too(replicas: list[Proc]) -> None:
    response_id = create(replicas[0], ACME_1)

    deleted = httpx.delete(
        f"{replicas[1].url}/api/v1/responses/{response_id}", headers=auth(ACME_2)
    )
    after = httpx.get(f"{replicas[0].url}/api/v1/responses/{response_id}", headers=auth(ACME_1))

    assert deleted.status_code == 200
    assert deleted.json()["deleted"] is True
    assert after.status_code == 404
    assert after.json()["error"]["code"] == "not_found"


def test_unstored_response_cannot_be_read_back(replicas: list[Proc]) -> None:
    response_id = create(replicas[0], ACME_1, store=False)

    got = httpx.get(f"{replicas[0].url}/api/v1/responses/{response_id}", headers=auth(ACME_1))

    assert got.status_code == 404
    assert got.json()["error"]["code"] == "not_found"


def test_streamed_response_is_owned_once_it_has_ended(replicas: list[Proc]) -> None:
    events = list(
        sdk(replicas[0], ACME_1).responses.create(model=MODEL, input="stream me", stream=True)
    )
    response_id = events[-1].response.id

    mine = httpx.get(f"{replicas[1].url}/api/v1/responses/{response_id}", headers=auth(ACME_2))
    theirs = httpx.get(f"{replicas[1].url}/api/v1/responses/{response_id}", headers=auth(GLOBEX))

    assert mine.status_code == 200
    assert theirs.status_code == 404


def reference(item_id: str) -> list[dict]:
    return [{"type": "item_reference", "id": item_id}, {"role": "user", "content": "and?"}]


def test_an_item_reference_to_another_tenants_item_is_the_unknown_id_answer(
    replicas: list[Proc], simulator: Proc
) -> None:
    created = httpx.post(
        f"{replicas[0].url}/api/v1/responses",
        json={"model": MODEL, "input": "Tell me a story"},
        headers=auth(ACME_1),
        timeout=30,
    ).json()
    item_id = created["output"][0]["id"]
    upstream_before = sim_stats(simulator)["responses_requests"]

    def post(secret: str, item: str) -> httpx.Response:
        return httpx.post(
            f"{replicas[1].url}/api/v1/responses",
            json={"model": MODEL, "input": reference(item)},
            headers=auth(secret),
            timeout=30,
        )

    foreign, unknown = post(GLOBEX, item_id), post(GLOBEX, "msg_doesnotexist0000")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"]["message"] == f"No item found with id '{item_id}'."
    assert foreign.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert sim_stats(simulator)["responses_requests"] == upstream_before  # never sent on
    assert post(ACME_2, item_id).status_code == 200  # its own tenant, another key


def test_a_streamed_responses_items_are_owned_once_it_has_ended(replicas: list[Proc]) -> None:
    events = list(
        sdk(replicas[0], ACME_1).responses.create(model=MODEL, input="stream me", stream=True)
    )
    item_id = events[-1].response.output[0].id
    body = {"model": MODEL, "input": reference(item_id)}
    theirs = httpx.post(f"{replicas[1].url}/api/v1/responses", json=body, headers=auth(GLOBEX))
    mine = httpx.post(f"{replicas[1].url}/api/v1/responses", json=body, headers=auth(ACME_2))
    assert (theirs.status_code, mine.status_code) == (404, 200)


@pytest.mark.parametrize("conversation", ["conv_elsewhere", {"id": "conv_elsewhere"}])
def test_a_conversation_the_gateway_never_relayed_is_the_unknown_id_answer(
    replicas: list[Proc], simulator: Proc, conversation
) -> None:
    upstream_before = sim_stats(simulator)["responses_requests"]
    answer = httpx.post(
        f"{replicas[0].url}/api/v1/responses",
        json={"model": MODEL, "input": "hi", "conversation": conversation},
        headers=auth(GLOBEX),
    )
    assert answer.status_code == 404
    assert answer.json()["error"] == {
        "message": "No conversation found with id 'conv_elsewhere'.",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }
    assert sim_stats(simulator)["responses_requests"] == upstream_before


def test_a_request_naming_too_many_stored_ids_is_400(replicas: list[Proc]) -> None:
    items = [{"type": "item_reference", "id": f"msg_{n}"} for n in range(257)]
    answer = httpx.post(
        f"{replicas[0].url}/api/v1/responses",
        json={"model": MODEL, "input": items},
        headers=auth(GLOBEX),
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "input"


# --- byte for byte ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_gateway(tmp_path_factory) -> Proc:
    """A gateway (memory limits) on the byte-controlled test upstream."""
    from tests.support.hostile_upstream import start_hostile_upstream

    upstream = start_hostile_upstream()
    keys = tmp_path_factory.mktemp("responses-bytes") / "keys.toml"
    keys.write_text(keys_toml(key_entry("acme-1", ACME_1, tenant="acme")))
    proc = start_gateway(gateway_env(upstream, str(keys)))
    yield proc
    proc.stop()
    upstream.stop()


def test_events_reach_the_client_byte_identical_to_what_the_upstream_sent(
    hostile_gateway: Proc,
) -> None:
    from tests.support.hostile_upstream import RESPONSE_ID, responses_events

    body = {
        "model": MODEL,
        "input": "hi",
        "stream": True,
        "hostile": {"case": "responses", "chunks": 6},
    }
    with httpx.stream(
        "POST", f"{hostile_gateway.url}/api/v1/responses", json=body, headers=auth(ACME_1)
    ) as response:
        received = response.read()

    assert response.status_code == 200
    assert received == b"".join(responses_events(6))
    line = '"path":"/api/v1/responses","key_id":"acme-1"'
    # the access log line follows the last byte sent
    eventually(hostile_gateway.read_output, lambda log: line in log, timeout=5)
    log = hostile_gateway.read_output()
    assert line in log
    assert RESPONSE_ID not in log  # ids are the tenant's business, not the log's


def test_a_stream_cut_mid_way_ends_with_the_responses_error_event(hostile_gateway: Proc) -> None:
    body = {
        "model": MODEL,
        "input": "hi",
        "stream": True,
        "hostile": {"case": "responses", "chunks": 6, "fail_after": 3},
    }
    with httpx.stream(
        "POST", f"{hostile_gateway.url}/api/v1/responses", json=body, headers=auth(ACME_1)
    ) as response:
        received = response.read()

    last = received.rstrip(b"\n").split(b"\n\n")[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = json.loads(last.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["code"] == "upstream_error"
    assert error["message"].startswith("API error: ")
    assert error["param"] is None
