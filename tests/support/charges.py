"""Known charges for driving the limiter's release directly, and counting its round trips."""

from __future__ import annotations

from service.limiter.failover import FailoverLimiter
from service.limiter.memory_store import MemoryLimiter
from service.limiter.redis_store import RedisLimiter
from service.usage.ledger import Ledger, RedisLedger
from service.usage.record import Charge, Usage


def charge(
    tokens: int = 0,
    cost: int = 0,
    model: str = "grok-test",
    record: str | tuple[str, ...] = (),
    forget: str | None = None,
) -> Charge:
    """A request that used `tokens` (split 3:1 between input and output) and cost `cost` ticks;
    `record`: the stored ids (a response's, its items') it makes the tenant's."""
    inputs = tokens - tokens // 4
    usage = Usage(
        input_tokens=inputs,
        output_tokens=tokens - inputs,
        total_tokens=tokens,
        cost_ticks=cost or None,
    )
    return Charge(
        usage=usage,
        model=model,
        cost_ticks=cost,
        cost_known=True,
        record=(record,) if isinstance(record, str) else record,
        forget_response=forget,
    )


def count_round_trips(limiter: RedisLimiter) -> list[str]:
    """Record each command the limiter's clients send (one entry per round trip)."""
    sent: list[str] = []

    def counting(original):
        async def call(*args, **kwargs):
            sent.append(str(args[0]))
            return await original(*args, **kwargs)

        return call

    def counting_packed(original):
        def send(packed: bytes, *key):
            sent.append(packed.split(b"\r\n")[2].decode())  # the command's name
            return original(packed, *key)

        return send

    limiter.redis.execute_command = counting(limiter.redis.execute_command)
    if limiter.multiplexed is not None:
        limiter.multiplexed.send = counting_packed(limiter.multiplexed.send)
    return sent


def ledger_of(limiter: MemoryLimiter | RedisLimiter | FailoverLimiter) -> Ledger:
    """The ledger a limiter writes, as the usage reports read it."""
    if isinstance(limiter, MemoryLimiter):
        return limiter.ledger
    store = limiter.redis if isinstance(limiter, FailoverLimiter) else limiter
    return RedisLedger(store.redis, store.prefix)
