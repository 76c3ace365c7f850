"""Several upstreams (SPEC 11), the pure parts: the key file's `[[upstreams]]`, xAI's 429s told
apart, the conversation id a request carries, and the simulator's prompt cache."""

from __future__ import annotations

import json

import pytest

from service.registry.keys import RegistryError, parse_registry
from service.simulator.cache import PromptCache, with_cached_tokens
from service.upstream.errors import is_out_of_credits, normalise_upstream_error
from tests.support.keyfiles import key_entry

ENV = {"XAI_KEY_US": "xai-us-key", "XAI_KEY_EU": "xai-eu-key"}
UPSTREAMS = """
[[upstreams]]
name = "us"
base_url = "https://api.x.ai/v1"
api_key_env = "XAI_KEY_US"

[[upstreams]]
name = "eu"
base_url = "https://eu-west-1.api.x.ai/v1"
api_key_env = "XAI_KEY_EU"
pool = false
"""
KEY = key_entry("acme-prod", "gk-acme-0123456789", tenant="acme")

# xAI's answers, as its API words them (the team id is a placeholder).
NO_CREDITS = (
    b'{"code":"Some resource has been exhausted","error":"Your team 16f2151a-40f4-4a80-8ad0-'
    b"cae00c27e8dd has either used all available credits or reached its monthly spending "
    b"limit. To continue making API requests, please purchase more credits or raise your "
    b'spending limit."}'
)
RATE_LIMITED = (
    b'{"code":"Some resource has been exhausted",'
    b'"error":"Too many requests for team 00000000-0000-0000-0000-000000000016"}'
)


def parse(text: str, env: dict[str, str] = ENV):
    return parse_registry(text.encode(), "keys.toml", env=env)


def refusal(text: str, env: dict[str, str] = ENV) -> str:
    with pytest.raises(RegistryError) as caught:
        parse(text, env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_upstreams_and_a_tenants_list_are_read_with_their_keys_from_the_environment():
    registry = parse(UPSTREAMS + '[tenants.acme]\nupstreams = ["eu"]\n' + KEY)
    us, eu = registry.upstreams
    assert (us.name, us.base_url, us.api_key, us.pool) == (
        "us",
        "https://api.x.ai/v1",
        "xai-us-key",
        True,
    )
    assert (eu.name, eu.pool, eu.api_key) == ("eu", False, "xai-eu-key")
    assert registry.tenant_upstreams == {"acme": ("eu",)}


def test_an_upstreams_key_never_shows_in_its_repr():
    (us, _) = parse(UPSTREAMS + KEY).upstreams
    assert "xai-us-key" not in repr(us)


def test_a_file_without_upstreams_has_none_and_a_tenant_may_name_default():
    registry = parse('[tenants.acme]\nupstreams = ["default"]\n' + KEY)
    assert registry.upstreams == ()
    assert registry.tenant_upstreams == {"acme": ("default",)}


def test_a_missing_key_variable_is_refused_naming_it():
    message = refusal(UPSTREAMS + KEY, env={"XAI_KEY_US": "xai-us-key"})
    assert "upstreams[1] (eu)" in message and "XAI_KEY_EU is not set" in message


def test_a_tenant_naming_an_unknown_upstream_is_refused_naming_it():
    message = refusal(UPSTREAMS + '[tenants.acme]\nupstreams = ["ap"]\n' + KEY)
    assert "[tenants.acme]" in message and "'ap'" in message


def test_an_empty_upstreams_list_is_refused():
    message = refusal(UPSTREAMS + "[tenants.acme]\nupstreams = []\n" + KEY)
    assert "[tenants.acme]" in message and "empty" in message


def test_a_key_left_with_no_upstream_is_refused():
    only_eu = UPSTREAMS.split("[[upstreams]]")[2]
    message = refusal("[[upstreams]]" + only_eu + KEY)
    assert "acme-prod" in message and "pool = true" in message


def test_duplicate_names_and_a_key_in_the_file_are_refused():
    assert "duplicate name" in refusal(UPSTREAMS + UPSTREAMS + KEY)
    assert "unknown field" in refusal(UPSTREAMS.replace("pool = false", 'api_key = "x"') + KEY)


def test_xai_no_credits_answer_is_told_from_a_rate_limit():
    assert is_out_of_credits(429, json.loads(NO_CREDITS)["error"])
    assert not is_out_of_credits(429, json.loads(RATE_LIMITED)["error"])


def test_no_credits_becomes_503_quota_exhausted_that_the_sdk_does_not_retry():
    error = normalise_upstream_error(429, NO_CREDITS)
    assert (error.status, error.code, error.kind) == (
        503,
        "upstream_quota_exhausted",
        "out_of_credits",
    )
    assert (b"x-should-retry", b"false") in error.headers


def test_the_same_message_as_a_403_is_out_of_credits_not_a_bad_key():
    # xAI has answered the no-credits message with 403 on /v1/responses as well.
    error = normalise_upstream_error(403, NO_CREDITS)
    assert error.code == "upstream_quota_exhausted"


def test_a_rate_limited_429_stays_a_429_with_retry_after():
    error = normalise_upstream_error(429, RATE_LIMITED, "7")
    assert (error.status, error.code, error.kind) == (429, "upstream_rate_limited", "rate_limited")
    assert (b"retry-after", b"7") in error.headers


def test_the_prompt_cache_holds_a_conversations_prefix_and_nothing_across_conversations():
    cache = PromptCache()
    first = ("you", "are", "terse", ".", "hello", "there")
    second = (*first, "hi", "!", "how", "are", "you")
    assert cache.cached("c1", first) == 0
    assert cache.cached("c1", second) == len(first)
    assert cache.cached("c2", second) == 0


def test_a_request_without_a_conversation_id_is_cache_cold():
    cache = PromptCache()
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
    assert with_cached_tokens("/v1/chat/completions", body, None, cache) is body
    with_cached_tokens("/v1/chat/completions", body, "c1", cache)
    again = with_cached_tokens("/v1/chat/completions", body, "c1", cache)
    assert again["sim"] == {"cached_tokens": 2}
