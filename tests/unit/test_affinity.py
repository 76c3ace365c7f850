"""The conversation id (`x-grok-conv-id`) a chat or Responses request carries upstream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from service.http.context import RequestContext
from service.limiter.policy import LimitPolicy
from service.middleware.affinity import ConversationAffinity
from service.registry.keys import ApiKey

MODEL = "grok-4-1-fast-non-reasoning"
SYSTEM = {"role": "system", "content": "You are terse."}
FIRST = {"role": "user", "content": "What is a mole?"}
REPLY = {"role": "assistant", "content": "A unit."}
SECOND = {"role": "user", "content": "Of what?"}


def key(tenant: str | None, key_id: str = "k1") -> ApiKey:
    return ApiKey(key_id, tenant, "0" * 64, None, LimitPolicy(key_id=key_id, tenant=tenant))


def run(
    body: dict[str, Any], tenant: str | None = "acme", header: bytes | None = None, derive=True
) -> tuple[bytes | None, list[dict[str, Any]]]:
    """(the id the request would carry upstream, what was sent to the client)."""
    ctx = RequestContext("r", 0.0, key=key(tenant), model=body.get("model"), payload=body)
    sent: list[dict[str, Any]] = []
    reached: list[bool] = []

    async def app(scope, receive, send) -> None:
        reached.append(True)

    async def send(message) -> None:
        sent.append(message)

    headers = [(b"x-grok-conv-id", header)] if header is not None else []
    scope = {"type": "http", "headers": headers, "gateway": ctx}
    asyncio.run(ConversationAffinity(app, derive)(scope, None, send))
    assert bool(reached) == (not sent)
    return ctx.conversation, sent


def chat(*messages: dict[str, str], model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "messages": list(messages)}


def test_every_turn_of_a_conversation_carries_the_same_derived_id():
    first, _ = run(chat(SYSTEM, FIRST))
    later, _ = run(chat(SYSTEM, FIRST, REPLY, SECOND))
    assert first is not None and first == later


def test_different_conversations_models_and_tenants_carry_different_ids():
    base, _ = run(chat(SYSTEM, FIRST))
    assert run(chat(SYSTEM, SECOND))[0] != base
    assert run(chat(FIRST))[0] != base
    assert run(chat(SYSTEM, FIRST, model="grok-4"))[0] != base
    assert run(chat(SYSTEM, FIRST), tenant="globex")[0] != base


def test_a_responses_request_derives_from_its_instructions_and_first_input():
    body = {"model": MODEL, "instructions": "You are terse.", "input": "What is a mole?"}
    as_items = {**body, "input": [{"role": "user", "content": "What is a mole?"}]}
    assert run(body)[0] == run(as_items)[0] is not None
    assert run({**body, "instructions": "Be verbose."})[0] != run(body)[0]


def test_a_clients_id_is_forwarded_behind_its_tenants_prefix():
    acme, _ = run(chat(FIRST), header=b"conv-42")
    globex, _ = run(chat(FIRST), tenant="globex", header=b"conv-42")
    assert acme.endswith(b"-conv-42") and globex.endswith(b"-conv-42")
    assert acme != globex


def test_a_key_without_a_tenant_is_its_own_tenant():
    assert run(chat(FIRST), tenant=None)[0] != run(chat(FIRST))[0]


def test_a_malformed_client_id_is_400_and_goes_no_further():
    for bad in (b"", b"x" * 129, b"caf\xc3\xa9", b"tab\there"):
        conversation, sent = run(chat(FIRST), header=bad)
        assert conversation is None
        assert sent[0]["status"] == 400
        assert json.loads(sent[1]["body"])["error"]["param"] == "x-grok-conv-id"


def test_a_128_character_id_is_accepted():
    conversation, sent = run(chat(FIRST), header=b"a" * 128)
    assert not sent and conversation.endswith(b"a" * 128)


def test_with_derivation_off_only_a_clients_id_is_sent():
    assert run(chat(FIRST), derive=False)[0] is None
    assert run(chat(FIRST), derive=False, header=b"c1")[0].endswith(b"-c1")


def test_a_continued_stored_response_gets_no_derived_id():
    body = {"model": MODEL, "input": "and then?", "previous_response_id": "resp_1"}
    assert run(body)[0] is None


def test_a_long_opening_is_named_by_its_length_and_ends_every_turn_alike():
    prompt = "x" * 5_000 + "middle" + "y" * 5_000
    first = {"role": "user", "content": prompt}
    one, _ = run(chat(SYSTEM, first))
    assert one == run(chat(SYSTEM, first, REPLY, SECOND))[0]
    longer = {"role": "user", "content": prompt + "z"}
    other_end = {"role": "user", "content": prompt[:-1] + "z"}
    assert one != run(chat(SYSTEM, longer))[0]
    assert one != run(chat(SYSTEM, other_end))[0]
    # A content-parts message summarises its long parts the same way.
    parts = {"role": "user", "content": [{"type": "text", "text": prompt}]}
    assert run(chat(SYSTEM, parts))[0] == run(chat(SYSTEM, parts, REPLY))[0]
