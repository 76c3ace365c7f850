"""The charge taken when a request ends: what the release writes, and the usage metrics.

The rate-limit middleware asks for it with what the route recorded (the upstream's usage,
the model, a response id created or deleted); the cost comes from the upstream's ticks, else
the price of the model the upstream served.
"""

from __future__ import annotations

from service.observability.metrics import COST_USD, TOKENS, labelled
from service.redis.keys import NO_TENANT
from service.usage.cost import cost_ticks
from service.usage.ledger import OTHER_MODEL, ledger_model
from service.usage.prices import PriceTable
from service.usage.record import Charge, Usage, ticks_to_usd


def charge_for(
    usage: Usage | None,
    model: str | None,
    upstream_model: str | None,
    prices: PriceTable,
    status: int = 200,
    record: tuple[str, ...] = (),
    forget_response: str | None = None,
    upstream: str | None = None,
) -> Charge:
    """The charge of a request that asked for `model` (served as `upstream_model`) and was
    answered `status`. Only a 2xx puts the client's model name in the ledger: a name the
    upstream refused (a 404 for an unknown model, say) goes under `(other)`."""
    usage = usage or Usage()
    price = prices.get(upstream_model) if upstream_model is not None else None
    ticks, known = cost_ticks(usage, price)
    if model is not None and not 200 <= status < 300:
        model = OTHER_MODEL
    return Charge(
        usage=usage,
        model=ledger_model(model),
        cost_ticks=ticks,
        cost_known=known,
        record=record,
        forget_response=forget_response,
        upstream=upstream,
    )


def count_usage(tenant: str | None, charge: Charge) -> None:
    """The usage metrics. Zero amounts add no series: a client-sent model name becomes a
    label only once the upstream charged for it."""
    labels = (tenant or NO_TENANT, charge.model)
    usage = charge.usage
    for kind, amount in (
        ("input", usage.input_tokens),
        ("cached_input", usage.cached_input_tokens),
        ("output", usage.output_tokens),
        ("reasoning", usage.reasoning_tokens),
    ):
        if amount > 0:
            labelled(TOKENS, *labels, kind).inc(amount)
    if charge.cost_ticks > 0:
        labelled(COST_USD, *labels).inc(ticks_to_usd(charge.cost_ticks))
