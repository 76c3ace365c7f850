"""What the rate-limit middleware answers for spend and ownership, and what it charges.

The real middleware and a real memory limiter in front of a minimal route that plays the
upstream's part: it records usage, a cost and a response id, as the routes do.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from service.http.asgi import send_json
from service.http.context import RequestContext
from service.http.errors import response_not_found
from service.limiter.memory_store import MemoryLimiter
from service.limiter.policy import LimitPolicy, parse_rates, parse_spend
from service.middleware.ratelimit import RateLimitMiddleware
from service.registry.keys import ApiKey
from service.usage.record import TICKS_PER_USD, Totals, Usage
from tests.support.charges import ledger_of

MODEL = "grok-answers-test"


def api_key(key_id: str, tenant: str | None = None, spend: str = "") -> ApiKey:
    policy = LimitPolicy(
        key_id=key_id,
        tenant=tenant,
        requests=parse_rates("100/hour"),
        spend=parse_spend(spend) if spend else (),
    )
    return ApiKey(key_id, tenant, "0" * 64, None, policy)


class Route:
    """Answers 200 and records what the upstream would have reported."""

    def __init__(self, usage: Usage | None = None, creates: str | None = None) -> None:
        self.usage, self.creates = usage, creates
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        ctx = scope["gateway"]
        ctx.usage, ctx.response_id = self.usage, self.creates
        ctx.status = 200  # what the observe middleware records in the whole stack
        await send_json(send, 200, b"{}")


async def call(
    limiter: MemoryLimiter, route: Route, key: ApiKey, owned: tuple[str, ...] = ()
) -> httpx.Response:
    middleware = RateLimitMiddleware(route, limiter)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["gateway"] = RequestContext(
            request_id="test",
            started=0.0,
            key=key,
            model=MODEL,
            owned=owned,
        )
        await middleware(scope, receive, send)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.post("/api/v1/responses", json={})


def seconds_to_midnight_utc() -> float:
    return 86400 - time.time() % 86400


async def test_a_spent_budget_is_a_429_the_sdk_does_not_retry():
    limiter = MemoryLimiter()
    key = api_key("spender", spend="0.01/day")
    route = Route(Usage(input_tokens=10, total_tokens=10, cost_ticks=TICKS_PER_USD // 100))
    assert (await call(limiter, route, key)).status_code == 200
    refused = await call(limiter, route, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "spend_limit_exceeded"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "key budget $0.01/day" in refused.json()["error"]["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert abs(int(refused.headers["retry-after"]) - seconds_to_midnight_utc()) <= 2
    assert route.calls == 1


async def test_a_foreign_response_id_gets_exactly_the_unknown_id_answer_and_spends_nothing():
    limiter = MemoryLimiter()
    owner, intruder = api_key("a", tenant="acme"), api_key("x", tenant="evil")
    creating = Route(Usage(total_tokens=1), creates="resp_42")
    assert (await call(limiter, creating, owner)).status_code == 200
    route = Route()
    foreign = await call(limiter, route, intruder, ("resp_42",))
    unknown = await call(limiter, route, intruder, ("resp_43",))
    expected = response_not_found("resp_42")
    assert (foreign.status_code, foreign.content) == (404, expected.body())
    assert unknown.status_code == 404
    assert {k for k in foreign.headers} == {k for k in unknown.headers}
    assert route.calls == 0  # never reached the upstream
    snapshot = await limiter.usage_snapshot(intruder.policy)
    assert snapshot.limits[0].remaining == 100  # and no request unit was spent
    assert (await call(limiter, route, api_key("b", "acme"), ("resp_42",))).status_code == 200


async def test_the_release_charges_the_ledger_and_counts_the_usage_metrics():
    limiter = MemoryLimiter()
    key = api_key("metered", tenant="metrics-co")
    usage = Usage(
        input_tokens=100,
        cached_input_tokens=40,
        output_tokens=20,
        reasoning_tokens=5,
        total_tokens=125,
        cost_ticks=3 * TICKS_PER_USD,
    )
    before = _sample("gateway_cost_usd_total", tenant="metrics-co", model=MODEL)
    assert (await call(limiter, Route(usage), key)).status_code == 200
    today = datetime.now(UTC).date()
    (row,) = await ledger_of(limiter).rows(today, today, key="metered")
    assert (row.tenant, row.model, row.totals) == (
        "metrics-co",
        MODEL,
        Totals(1, 100, 40, 20, 5, 3 * TICKS_PER_USD),
    )
    assert _sample("gateway_cost_usd_total", tenant="metrics-co", model=MODEL) == before + 3.0
    tokens = {
        kind: _sample("gateway_tokens_total", tenant="metrics-co", model=MODEL, kind=kind)
        for kind in ("input", "cached_input", "output", "reasoning")
    }
    assert tokens == {"input": 100, "cached_input": 40, "output": 20, "reasoning": 5}


async def test_a_request_without_usage_adds_no_metric_series():
    limiter = MemoryLimiter()
    await call(limiter, Route(Usage()), api_key("silent", tenant="quiet-co"))
    assert (
        REGISTRY.get_sample_value(
            "gateway_tokens_total", {"tenant": "quiet-co", "model": MODEL, "kind": "input"}
        )
        is None
    )


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
