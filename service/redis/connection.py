"""REDIS_URL to a redis-py asyncio client, with short timeouts and a blocking pool.

redis-py's default async pool raises MaxConnectionsError past 100 concurrent commands instead
of waiting; a BlockingConnectionPool of modest size waits (up to the timeout), which serves a
burst better than hundreds of connections. Timeouts are short so a slow Redis never stalls a
request: the failover decides what happens instead.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from service.redis.cluster import MultiplexedCluster, cluster_url
from service.redis.multiplexed import MultiplexedConnection, Shared


def connect(url: str, timeout: float = 1.0, pool_size: int = 32) -> Redis:
    """A client for `redis://`, `rediss://`, `unix://`, `redis+sentinel://`, `redis+cluster://`.

    Sentinel: `redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]`;
    Cluster: `redis+cluster://[:password@]host:port[,host:port...]` (any of its nodes).
    Raises ValueError for anything else.
    """
    parts = urlsplit(url)
    common = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if parts.scheme in ("redis", "rediss", "unix"):
        # Waiting for a free pooled connection during a burst is not a Redis failure: it
        # gets a longer bound than one command.
        pool = BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=max(1.0, 4 * timeout), **common
        )
        return Redis(connection_pool=pool)
    if parts.scheme == "redis+cluster":
        seeds, username, password = cluster_url(url)
        return RedisCluster(  # type: ignore[return-value]
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            username=username,
            password=password,
            max_connections=pool_size,
            **common,
        )
    if parts.scheme == "redis+sentinel":
        hosts, service, db, password = _sentinel_url(url)
        sentinel = Sentinel(hosts, sentinel_kwargs=common, password=password, **common)
        return sentinel.master_for(service, db=db, max_connections=pool_size)
    raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")


def connect_shared(url: str, timeout: float = 1.0) -> Shared | None:
    """The process's multiplexed connection for the limiter's scripts: to the one server, to
    the master the sentinels name now, or to every master of a Cluster; None for `rediss://`
    (TLS stays on redis-py)."""
    scheme = urlsplit(url).scheme
    if scheme == "redis+cluster":
        return MultiplexedCluster.from_url(url, timeout)
    if scheme == "redis+sentinel":
        hosts, service, db, password = _sentinel_url(url)
        common = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        sentinel = Sentinel(hosts, sentinel_kwargs=common)
        return MultiplexedConnection(
            password=password,
            db=db,
            timeout=timeout,
            locate=lambda: sentinel.discover_master(service),
        )
    return MultiplexedConnection.from_url(url, timeout)


def _sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """(sentinels, service name, db, the master's password) of a `redis+sentinel://` URL."""
    parts = urlsplit(url)
    hosts = []
    for netloc in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = netloc.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("redis+sentinel:// needs the service name: .../service_name[/db]")
    password = unquote(parts.password) if parts.password else None
    return hosts, path[0], int(path[1]) if len(path) > 1 else 0, password


def redis_address(url: str) -> str:
    """Where `url` points, for log lines: host:port (every one listed), or the socket path;
    never the password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    default = 26379 if parts.scheme == "redis+sentinel" else 6379
    hosts = []
    for netloc in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, colon, port = netloc.rpartition(":")
        if not colon or "]" in port:  # no port, or the end of an IPv6 address
            host, port = netloc, ""
        hosts.append(f"{host}:{port or default}")
    where = ",".join(hosts)
    return f"sentinel {where}" if parts.scheme == "redis+sentinel" else where
