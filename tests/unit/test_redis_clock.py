"""The offset to Redis's clock, learnt from round trips."""

from __future__ import annotations

from service.redis.clock import RedisClock


def test_redis_clock_keeps_the_tightest_lower_bound_and_follows_a_step_back():
    clock = RedisClock(lambda: 0.0)
    clock.observe(sent_ms=1000, received_ms=1010, redis_ms=5005)  # offset in [3995, 4006]
    assert clock.offset_ms == 3995
    clock.observe(sent_ms=2000, received_ms=2002, redis_ms=6001)  # [3999, 4002]: tighter
    assert clock.offset_ms == 3999
    clock.observe(sent_ms=3000, received_ms=3030, redis_ms=7000)  # [3970, 4001]: looser
    assert clock.offset_ms == 3999
    clock.observe(sent_ms=4000, received_ms=4001, redis_ms=6000)  # Redis stepped back 2 s
    assert clock.offset_ms == 1999
