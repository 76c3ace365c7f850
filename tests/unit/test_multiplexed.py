"""The limiter's shared Redis connection without a server: commands packed as RESP, and the
URLs it serves."""

from __future__ import annotations

from service.redis.multiplexed import MultiplexedConnection, pack_command


def test_pack_command_is_resp_bulk_strings():
    assert pack_command("SET", "k", 12, b"\xff") == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$1\r\n\xff\r\n"
    )


def test_only_plain_tcp_and_unix_urls_are_served():
    assert MultiplexedConnection.from_url("redis://h:7/2") is not None
    assert MultiplexedConnection.from_url("unix:///tmp/redis.sock?db=1") is not None
    assert MultiplexedConnection.from_url("rediss://h:7/0") is None
    assert MultiplexedConnection.from_url("redis+sentinel://h:26379/main") is None
    assert MultiplexedConnection.from_url("redis+cluster://h:7000") is None
