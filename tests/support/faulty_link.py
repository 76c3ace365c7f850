"""A TCP relay in front of Redis that can stop passing one direction: a lost request or a
lost reply, as a network fault makes them."""

from __future__ import annotations

import asyncio


class FaultyLink:
    """A TCP relay to Redis that can stop passing requests, or replies (a network fault)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests_pass = True
        self.replies_pass = True
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._relays: set[asyncio.Task] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    def heal(self) -> None:
        """Pass everything again; the connections that lost bytes are closed."""
        self.requests_pass = self.replies_pass = True
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self.heal()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._relays.add(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer, "requests_pass"),
            self._pipe(up_reader, writer, "replies_pass"),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: str):
        try:
            while data := await reader.read(65536):
                if getattr(self, gate):
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()
