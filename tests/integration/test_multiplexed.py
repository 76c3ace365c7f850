"""The limiter's shared Redis connection, against real redis-server processes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError, TimeoutError

from service.redis.multiplexed import MultiplexedConnection, MultiplexedScript
from tests.support.processes import free_port, start_redis


@pytest.fixture
async def connection(redis_server):
    conn = MultiplexedConnection.from_url(redis_server.url, timeout=2.0)
    assert conn is not None
    yield conn
    await conn.aclose()


async def test_concurrent_callers_each_get_their_own_reply(connection):
    values = [uuid.uuid4().hex for _ in range(1000)]
    replies = await asyncio.gather(*(connection.execute("ECHO", v) for v in values))
    assert replies == [v.encode() for v in values]


async def test_an_error_reply_raises_for_its_caller_only(connection):
    key = uuid.uuid4().hex
    await connection.execute("SET", key, "text")
    good, bad, after = await asyncio.gather(
        connection.execute("GET", key),
        connection.execute("INCR", key),
        connection.execute("ECHO", "next"),
        return_exceptions=True,
    )
    assert good == b"text"
    assert isinstance(bad, ResponseError) and "not an integer" in str(bad)
    assert after == b"next"


async def test_a_timed_out_or_cancelled_call_does_not_shift_later_replies(redis_server):
    conn = MultiplexedConnection.from_url(redis_server.url, timeout=0.2)
    admin = aioredis.from_url(redis_server.url)
    try:
        await conn.execute("PING")
        await admin.execute_command("CLIENT", "PAUSE", "600", "ALL")
        slow = asyncio.ensure_future(conn.execute("ECHO", "late"))
        cancelled = asyncio.ensure_future(conn.execute("ECHO", "cancelled"))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(TimeoutError, match=r"no reply from Redis within 0\.2s"):
            await slow
        await asyncio.sleep(0.6)  # the pause ends; the late replies arrive and are dropped
        assert await conn.execute("ECHO", "fresh") == b"fresh"
        assert cancelled.cancelled()
    finally:
        await conn.aclose()
        await admin.aclose()


async def test_a_killed_connection_fails_its_callers_and_the_next_call_reconnects(connection):
    waiting = asyncio.ensure_future(connection.execute("BLPOP", uuid.uuid4().hex, 1.5))
    await asyncio.sleep(0.1)
    admin = aioredis.from_url(f"redis://127.0.0.1:{connection.port}/0")
    await admin.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
    await admin.aclose()
    with pytest.raises(ConnectionError, match="connection to Redis lost"):
        await waiting
    assert await connection.execute("PING") == b"PONG"


async def test_an_unreachable_server_is_a_connection_error():
    conn = MultiplexedConnection("127.0.0.1", free_port(), timeout=0.5)
    with pytest.raises(ConnectionError, match="could not connect to Redis"):
        await conn.execute("PING")


async def test_password_and_database_from_the_url():
    server = start_redis(extra=("--requirepass", "s3cret"))
    try:
        conn = MultiplexedConnection.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        await conn.execute("SET", "where", "db3")
        await conn.aclose()
        check = aioredis.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        assert await check.get("where") == b"db3"
        await check.aclose()
        wrong = MultiplexedConnection.from_url(f"redis://:nope@127.0.0.1:{server.port}/0")
        with pytest.raises(AuthenticationError, match="refused the credentials"):
            await wrong.execute("PING")
        await wrong.aclose()
    finally:
        server.stop()


async def test_unix_socket(tmp_path):
    path = tmp_path / "redis.sock"
    server = start_redis(extra=("--unixsocket", str(path), "--unixsocketperm", "700"))
    try:
        conn = MultiplexedConnection.from_url(f"unix://{path}?db=1")
        assert await conn.execute("ECHO", "over unix") == b"over unix"
        await conn.aclose()
    finally:
        server.stop()


async def test_a_script_survives_a_flushed_script_cache(connection):
    script = MultiplexedScript(connection, "return tonumber(ARGV[1]) + 1")
    assert await script([], [41]) == 42
    await connection.execute("SCRIPT", "FLUSH")
    assert await script([], [1]) == 2  # NOSCRIPT, then EVAL loads it again
    assert await connection.execute("SCRIPT", "EXISTS", script.sha) == [1]


class _CountingTransport:
    """Delegates to a real transport, counting its writes."""

    def __init__(self, transport) -> None:
        self._transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._transport.write(data)

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


async def test_commands_sent_in_one_loop_turn_share_a_write(connection):
    await connection.execute("PING")  # connected
    counting = _CountingTransport(connection._protocol.transport)
    connection._protocol.transport = counting
    values = [uuid.uuid4().hex for _ in range(100)]
    replies = await asyncio.gather(*(connection.execute("ECHO", v) for v in values))
    assert replies == [v.encode() for v in values]
    assert counting.writes <= 2  # the first at once, the other 99 at the turn's end
