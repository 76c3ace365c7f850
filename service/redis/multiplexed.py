"""One Redis connection per process, shared by every request: commands written as they come,
replies matched to callers in order (the design of ioredis's and Lettuce's connections).

redis-py checks a connection out of its pool, wraps the call in retry and timeout layers and
packs it in Python for every command, so when a wave of streams starts together each admission
waits behind the others' client CPU. On this connection a command is one buffered write and
one future resolved by hiredis's parser, and replies come back as Redis answers (the figures:
`python -m bench.admissions`, docs/performance.md).

It serves the limiter's scripts for `redis://`, `unix://` and, following the master the
sentinels name, `redis+sentinel://` URLs (`redis/cluster.py` routes it over a Cluster's
masters); TLS, the lease refresh and the health probe stay on redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import hiredis
from redis.asyncio.connection import UnixDomainSocketConnection, parse_url
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | int | bytes
# Error replies told apart as redis-py tells them (its message is kept whole): a write
# refused for memory, or by a demoted master, is a state of the server, not of the call.
_REPLY_ERRORS: dict[str, type[ResponseError]] = {"OOM": OutOfMemoryError, "READONLY": ReadOnlyError}
# Where the master is now (a Sentinel set's): asked again at every (re)connection.
Locate = Callable[[], Awaitable[tuple[str, int]]]


def pack_command(*args: Arg) -> bytes:
    """One command in RESP: an array of bulk strings (packed by hiredis, in C)."""
    return hiredis.pack_command(args)


def bulks(*args: Arg) -> bytes:
    """Arguments as RESP bulk strings, without the array's header: a part of a command."""
    packed = hiredis.pack_command(args)
    return packed[packed.index(b"\n") + 1 :]


def bulk(value: bytes) -> bytes:
    """One RESP bulk string: for a single value, formatting it here is cheaper than `bulks`'s
    call into hiredis, and every admission and release packs some."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


class _Protocol(asyncio.Protocol):
    """One connection: commands in, replies matched to their callers in order.

    Writes are coalesced: the first command of a loop turn is written at once, the ones that
    follow it in the same turn go out together at the turn's end (a burst of admissions costs
    one system call, not one each). Deadlines cost no timer per call: every command on the
    connection has the same timeout, so they expire in the order they were sent, and one
    timer, set for the oldest, fails the overdue ones.
    """

    def __init__(self, timeout: float) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._held: list[bytes] | None = None  # not None: a flush is due at the turn's end

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        loop = self._loop
        reply = loop.create_future()
        self.waiting.append(reply)
        deadline = loop.time() + self.timeout
        self._deadlines.append((deadline, reply))
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._expire)
        if self._held is None:
            self.transport.write(packed)  # type: ignore[union-attr]
            self._held = []
            loop.call_soon(self._flush)
        else:
            self._held.append(packed)
        return reply

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and self.usable:
            self.transport.write(b"".join(held))  # type: ignore[union-attr]

    def _expire(self) -> None:
        """Fail the commands past their deadline; set the timer for the next oldest one."""
        self._watchdog = None
        deadlines = self._deadlines
        now = self._loop.time()
        while deadlines:
            deadline, reply = deadlines[0]
            if not reply.done():
                if deadline > now:
                    self._watchdog = self._loop.call_at(deadline, self._expire)
                    return
                reply.set_exception(
                    RedisTimeoutError(f"no reply from Redis within {self.timeout:g}s")
                )
            deadlines.popleft()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.transport.close()  # type: ignore[union-attr]
                self._fail(ConnectionError(f"bad reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.transport.close()  # type: ignore[union-attr]
                return
            future = waiting.popleft()
            if future.done():  # its caller timed out or was cancelled
                continue
            if isinstance(reply, ResponseError):
                kind = _REPLY_ERRORS.get(str(reply).split(" ", 1)[0])
                future.set_exception(kind(str(reply)) if kind is not None else reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._deadlines.clear()
        self._fail(ConnectionError(f"connection to Redis lost ({exc or 'closed'})"))

    def _fail(self, error: Exception) -> None:
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class MultiplexedConnection:
    """A lazily (re)connected, shared Redis connection. Raises redis-py's exception types."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        *,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        timeout: float = 1.0,
        locate: Locate | None = None,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.username, self.password, self.db = username, password, db
        self.timeout = timeout
        # With `locate`, the address comes from it, and a server that is not a master (a
        # demoted one, back as a replica) is refused at the handshake.
        self.locate = locate
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, timeout: float = 1.0) -> MultiplexedConnection | None:
        """For `redis://` and `unix://` URLs; None for the ones it does not serve."""
        if not url.startswith(("redis://", "unix://")):
            return None
        options = parse_url(url)
        if options.get("connection_class") not in (None, UnixDomainSocketConnection):
            return None
        return cls(
            options.get("host", "localhost"),
            int(options.get("port", 6379)),
            path=options.get("path"),
            username=options.get("username"),
            password=options.get("password"),
            db=int(options.get("db", 0)),
            timeout=timeout,
        )

    def execute(self, *args: Arg) -> Awaitable[Any]:
        """Send one command; the awaitable gives its reply (or fails after `timeout`)."""
        return self.send(pack_command(*args))

    def send(self, packed: bytes, key: bytes | None = None) -> Awaitable[Any]:
        """Send one command already packed in RESP; the awaitable gives its reply. `key`
        (one of its keys) routes it on a Cluster; one server ignores it.

        Connected, the command goes out at once (commands keep the order of these calls) and
        the awaitable is the reply's future itself: no coroutine frames per command.
        """
        protocol = self._protocol
        if protocol is not None and protocol.usable:
            return protocol.send(packed)
        return self._connect_and_send(packed)

    async def _connect_and_send(self, packed: bytes) -> Any:
        protocol = await self._connect()
        return await protocol.send(packed)

    async def remap(self) -> None:
        """Nothing to map on one server (a Cluster's connection routes by slot)."""

    async def aclose(self) -> None:
        """Close the connection; commands waiting on it fail, the next one reconnects."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    async def _connect(self) -> _Protocol:
        async with self._connecting:
            if self._protocol is not None and self._protocol.usable:
                return self._protocol  # another caller connected while this one waited
            loop = asyncio.get_running_loop()

            def factory() -> _Protocol:
                return _Protocol(self.timeout)

            try:
                async with asyncio.timeout(self.timeout):
                    if self.locate is not None:
                        self.host, self.port = await self.locate()
                    if self.path is not None:
                        _, protocol = await loop.create_unix_connection(factory, self.path)
                    else:
                        _, protocol = await loop.create_connection(factory, self.host, self.port)
                    await self._handshake(protocol)
            except TimeoutError:
                raise RedisTimeoutError(
                    f"could not connect to Redis within {self.timeout:g}s"
                ) from None
            except OSError as exc:
                raise ConnectionError(f"could not connect to Redis: {exc}") from exc
            self._protocol = protocol
            return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        commands = []
        if self.password is not None:
            auth = [self.username, self.password] if self.username else [self.password]
            commands.append(pack_command("AUTH", *auth))
        if self.db:
            commands.append(pack_command("SELECT", self.db))
        if self.locate is not None:
            commands.append(pack_command("ROLE"))
        try:
            replies = [await reply for reply in [protocol.send(command) for command in commands]]
            if self.locate is not None and replies[-1][0] != b"master":
                protocol.transport.close()  # type: ignore[union-attr]
                raise ConnectionError(
                    f"{self.host}:{self.port} is no longer the master (a failover is under way)"
                )
        except ResponseError as exc:
            protocol.transport.close()  # type: ignore[union-attr]
            if "AUTH" in str(exc) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
                raise AuthenticationError(f"Redis refused the credentials: {exc}") from None
            raise ConnectionError(f"Redis refused the connection setup: {exc}") from None
        except BaseException:
            protocol.transport.close()  # type: ignore[union-attr]
            raise


class Shared(Protocol):
    """What the limiter's scripts are sent over: one MultiplexedConnection, or a Cluster's
    (`redis/cluster.py`)."""

    def send(self, packed: bytes, key: bytes | None = None) -> Awaitable[Any]: ...

    def execute(self, *args: Arg) -> Awaitable[Any]: ...

    async def remap(self) -> None: ...

    async def aclose(self) -> None: ...


class MultiplexedScript:
    """A Lua script called by digest on a multiplexed connection (loaded again on NOSCRIPT)."""

    def __init__(self, connection: Shared, script: str) -> None:
        self.connection = connection
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self._evalsha = bulks("EVALSHA", self.sha)
        self._eval = bulks("EVAL", script)

    def __call__(self, keys: list[str], args: list[int | str]) -> Awaitable[Any]:
        first = keys[0].encode() if keys else None
        return self.send_packed(1 + len(keys) + len(args), bulks(len(keys), *keys, *args), first)

    def send_packed(self, count: int, body: bytes, key: bytes | None = None) -> Awaitable[Any]:
        """Call it with `body`, the RESP bulk strings (`count` of them) of its key count, its
        keys and its arguments (parts fixed for a key's policy are packed once, not per call);
        `key`, its first key, routes it on a Cluster. The command is written now (when
        connected); the awaitable gives the reply."""
        packed = b"*%d\r\n%s%s" % (count + 2, self._evalsha, body)
        return self._loaded(self.connection.send(packed, key), count, body, key)

    async def _loaded(self, reply: Awaitable[Any], count: int, body: bytes, key: Any) -> Any:
        moved = False
        while True:
            try:
                return await reply
            except ResponseError as exc:
                text = str(exc)
                if text.startswith("MOVED") and not moved:
                    # A Cluster moved the slot (a failover, a resharding); the call did not
                    # run: map the slots again and send it where the slot is now.
                    moved = True
                    await self.connection.remap()
                    reply = self.connection.send(
                        b"*%d\r\n%s%s" % (count + 2, self._evalsha, body), key
                    )
                elif text.startswith("NOSCRIPT"):
                    # A restarted, flushed or newly promoted Redis: EVAL runs the script
                    # and caches it again.
                    return await self.connection.send(
                        b"*%d\r\n%s%s" % (count + 2, self._eval, body), key
                    )
                else:
                    raise


class RedisPyScript:
    """A redis-py script (TLS, Sentinel, Cluster) called as a MultiplexedScript is."""

    def __init__(self, script: Any) -> None:
        self.script = script

    def __call__(self, keys: list[str], args: list[int | str]) -> Awaitable[Any]:
        return self.script(keys, args)

    async def send_packed(self, count: int, body: bytes, key: bytes | None = None) -> Any:
        """As MultiplexedScript's, but sent when awaited (redis-py routes by the keys)."""
        reader = hiredis.Reader()
        reader.feed(b"*%d\r\n%s" % (count, body))
        items = reader.gets()  # the key count, the keys, the arguments
        keys = int(items[0])
        return await self.script(keys=items[1 : 1 + keys], args=items[1 + keys :])
