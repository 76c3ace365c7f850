"""The limiter's shared Redis connection without a server: commands packed as RESP, the
URLs it serves, a Cluster's slot map, error replies told apart."""

from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot
from redis.exceptions import ConnectionError, OutOfMemoryError, ReadOnlyError, ResponseError

from service.redis.cluster import MultiplexedCluster
from service.redis.connection import connect_shared
from service.redis.multiplexed import MultiplexedConnection, _Protocol, pack_command


def test_pack_command_is_resp_bulk_strings():
    assert pack_command("SET", "k", 12, b"\xff") == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$1\r\n\xff\r\n"
    )


def test_only_plain_tcp_and_unix_urls_are_served_by_one_connection():
    assert MultiplexedConnection.from_url("redis://h:7/2") is not None
    assert MultiplexedConnection.from_url("unix:///tmp/redis.sock?db=1") is not None
    assert MultiplexedConnection.from_url("rediss://h:7/0") is None
    assert MultiplexedConnection.from_url("redis+sentinel://h:26379/main") is None
    assert MultiplexedConnection.from_url("redis+cluster://h:7000") is None


def test_every_url_but_tls_gets_a_shared_connection():
    assert isinstance(connect_shared("redis://h:7/2"), MultiplexedConnection)
    sentinel = connect_shared("redis+sentinel://:pw@s1:26379,s2:26380/gateway/3")
    assert isinstance(sentinel, MultiplexedConnection)
    assert (sentinel.password, sentinel.db, sentinel.locate is not None) == ("pw", 3, True)
    cluster = connect_shared("redis+cluster://:pw@n1:7000,n2:7001/0")
    assert isinstance(cluster, MultiplexedCluster)
    assert (cluster.seeds, cluster.password) == ([("n1", 7000), ("n2", 7001)], "pw")
    assert connect_shared("rediss://h:7/0") is None


def test_a_sentinel_url_without_its_service_name_is_refused():
    with pytest.raises(ValueError, match="service name"):
        connect_shared("redis+sentinel://s1:26379")


async def test_a_cluster_call_goes_to_the_master_of_its_keys_slot():
    cluster = MultiplexedCluster([("seed", 7000)])
    # CLUSTER SLOTS as Redis answers it: [first, last, [host, port, id], replicas...]
    reply = [
        [0, 5460, [b"a", 7000, b"id-a"], [b"d", 7003, b"id-d"]],
        [5461, 10922, [b"", 7001, b"id-b"]],  # an empty host: the node that answered
        [10923, 16383, [b"c", 7002, b"id-c"]],
    ]
    table = cluster._slot_table(reply, "seed")
    tenant = b"gw:{t:acme}"
    expected = {0: ("a", 7000), 1: ("seed", 7001), 2: ("c", 7002)}
    band = 0 if key_slot(tenant) <= 5460 else 1 if key_slot(tenant) <= 10922 else 2
    node = cluster._master(table, tenant)
    assert (node.host, node.port) == expected[band]
    # every key of one tenant shares its slot, whatever follows the tag
    assert key_slot(b"gw:{t:acme}:led:2026-01-01:k1") == key_slot(tenant)


def test_a_cluster_missing_slots_is_not_mapped():
    cluster = MultiplexedCluster([("seed", 7000)])
    with pytest.raises(ConnectionError, match="every hash slot"):
        cluster._slot_table([[0, 100, [b"a", 7000, b"id"]]], "seed")


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (b"-OOM command not allowed when used memory > 'maxmemory'.\r\n", OutOfMemoryError),
        (b"-READONLY You can't write against a read only replica.\r\n", ReadOnlyError),
        (b"-ERR user_script:1: something else\r\n", ResponseError),
    ],
)
async def test_error_replies_are_told_apart_as_redis_py_tells_them(reply, kind):
    protocol = _Protocol(timeout=1.0)
    waiting = asyncio.get_running_loop().create_future()
    protocol.waiting.append(waiting)
    protocol.data_received(reply)
    error = waiting.exception()
    assert type(error) is kind
    assert str(error) == reply[1:-2].decode()  # the message kept whole
