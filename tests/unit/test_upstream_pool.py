"""Which upstream a request goes to: the pool's choice, on an injected clock (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from service.registry.keys import parse_registry
from service.registry.reload import RegistryHolder
from service.settings import Settings
from service.upstream.pool import OUT_OF_CREDITS, OUT_OF_CREDITS_SECONDS, UpstreamPool
from tests.support.keyfiles import key_entry

ENV = {"K_A": "key-a", "K_B": "key-b", "K_EU": "key-eu"}


def key_file(tenant_line: str = 'upstreams = ["eu"]', b_url: str = "http://b.test/v1") -> bytes:
    return (
        '[[upstreams]]\nname = "a"\nbase_url = "http://a.test/v1"\napi_key_env = "K_A"\n'
        f'[[upstreams]]\nname = "b"\nbase_url = "{b_url}"\napi_key_env = "K_B"\n'
        '[[upstreams]]\nname = "eu"\nbase_url = "http://eu.test/v1"\napi_key_env = "K_EU"\n'
        f"pool = false\n[tenants.acme]\n{tenant_line}\n"
        + key_entry("k", "gk-k-0123456789", tenant="acme")
    ).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pool(clock) -> UpstreamPool:
    holder = RegistryHolder(parse_registry(key_file(), env=ENV), None)
    return UpstreamPool(Settings(), holder, clock=clock)


def mark_out_of_credits(pool: UpstreamPool, member) -> None:
    """As the request that found it out does, inside the event loop (its gauge timer)."""

    async def found_out() -> None:
        pool.mark_out_of_credits(member, "no credits")

    asyncio.run(found_out())


def names(pool: UpstreamPool, tenant: str | None, n: int = 4, **kw) -> list[str]:
    return [pool.select(tenant, **kw).name for _ in range(n)]


def test_a_tenant_with_its_own_list_gets_only_those():
    holder = RegistryHolder(parse_registry(key_file(), env=ENV), None)
    pool = UpstreamPool(Settings(), holder)
    assert set(names(pool, "acme")) == {"eu"}


def test_the_default_pool_leaves_out_upstreams_with_pool_false(pool):
    assert set(names(pool, "beta", 6)) == {"a", "b"}
    assert set(names(pool, None, 6)) == {"a", "b"}


def test_the_fewest_in_flight_wins(pool):
    pool.named("a").in_flight = 3
    assert names(pool, "beta") == ["b"] * 4


def test_ties_take_turns(pool):
    assert sorted(names(pool, "beta", 4)) == ["a", "a", "b", "b"]


def test_a_conversation_stays_on_one_upstream_whatever_is_in_flight(pool):
    chosen = names(pool, "beta", 5, conversation=b"abc-conv")
    assert len(set(chosen)) == 1
    pool.named(chosen[0]).in_flight = 50
    assert pool.select("beta", conversation=b"abc-conv").name == chosen[0]


def test_conversations_spread_over_the_pool(pool):
    chosen = {pool.select("beta", conversation=f"c{i}".encode()).name for i in range(20)}
    assert chosen == {"a", "b"}


def test_an_upstream_out_of_credits_gets_nothing_for_a_minute(pool, clock):
    conversation = b"abc-conv"
    home = pool.select("beta", conversation=conversation)
    mark_out_of_credits(pool, home)
    other = ({"a", "b"} - {home.name}).pop()
    assert pool.states()[home.name] == OUT_OF_CREDITS
    assert set(names(pool, "beta", 6)) == {other}
    assert pool.select("beta", conversation=conversation).name == other
    clock.now += OUT_OF_CREDITS_SECONDS - 1
    assert set(names(pool, "beta", 6)) == {other}
    clock.now += 1
    assert pool.select("beta", conversation=conversation).name == home.name
    assert pool.states()[home.name] != OUT_OF_CREDITS


def test_with_every_allowed_upstream_out_of_credits_there_is_none(pool):
    mark_out_of_credits(pool, pool.select("acme"))
    assert pool.select("acme") is None


def test_a_reload_rebuilds_what_changed_and_keeps_the_rest(pool):
    a, b = pool.named("a"), pool.named("b")
    a.in_flight = 2
    pool.registry.current = parse_registry(
        key_file('upstreams = ["a"]', b_url="http://b2.test/v1"), env=ENV
    )
    assert names(pool, "acme") == ["a"] * 4
    assert pool.named("a") is a and a.in_flight == 2
    assert pool.named("b") is not b and pool.named("b").spec.base_url == "http://b2.test/v1"


def test_without_upstreams_there_is_one_default_from_the_settings(clock):
    holder = RegistryHolder(parse_registry(key_entry("k", "gk-k-0123456789").encode()), None)
    settings = Settings(xai_base_url="http://x.test/v1", xai_api_key="xai-k")
    pool = UpstreamPool(settings, holder, clock=clock)
    assert list(pool.states()) == ["default"]
    member = pool.named("default")
    assert member.name == "default" and member.spec.base_url == "http://x.test/v1"
    assert member.spec.api_key == "xai-k"
