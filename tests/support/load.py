"""Traffic for tests across gateway replicas: a burst of concurrent requests, and a steady
streaming load that runs while a test breaks something, recording every answer."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.support.keyfiles import MODEL


def chat_body(**sim: object) -> dict:
    doc: dict = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if sim:
        doc["sim"] = sim
    return doc


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def fire(urls: list[str], secret: str, n: int, **sim: object) -> list[httpx.Response]:
    """n concurrent streaming chat requests, spread round-robin over the replicas."""
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        targets = itertools.islice(itertools.cycle(urls), n)
        return await asyncio.gather(
            *(
                client.post(
                    f"{url}/api/v1/chat/completions", json=chat_body(**sim), headers=auth(secret)
                )
                for url in targets
            )
        )


def label(response: httpx.Response) -> object:
    """200, or the error's code (a 5xx without a JSON error: its status)."""
    if response.status_code == 200:
        return 200
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return response.status_code


def codes(responses: list[httpx.Response]) -> dict[object, int]:
    return dict(Counter(label(r) for r in responses))


@dataclass
class Answer:
    at: float  # monotonic time the answer ended
    status: int
    code: object  # label()
    complete: bool  # a 200 stream that ended with [DONE]


@dataclass
class StreamingLoad:
    """`workers` clients each sending streaming requests one after another, round-robin over
    the replicas, until `stop()`; every answer is kept."""

    urls: list[str]
    secret: str
    workers: int = 8
    sim: dict = field(default_factory=lambda: {"chunks": 10, "delay_ms": 30})
    answers: list[Answer] = field(default_factory=list)
    _task: asyncio.Task | None = None
    _stopping: bool = False

    def start(self) -> StreamingLoad:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> list[Answer]:
        self._stopping = True
        assert self._task is not None
        await self._task
        return self.answers

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.workers)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await asyncio.gather(*(self._worker(client, i) for i in range(self.workers)))

    async def _worker(self, client: httpx.AsyncClient, index: int) -> None:
        replicas = itertools.cycle(self.urls[index % len(self.urls) :] + self.urls)
        while not self._stopping:
            url = next(replicas)
            try:
                response = await client.post(
                    f"{url}/api/v1/chat/completions",
                    json=chat_body(**self.sim),
                    headers=auth(self.secret),
                )
            except httpx.HTTPError as exc:  # a broken connection is an answer too
                self.answers.append(Answer(time.monotonic(), 0, type(exc).__name__, False))
                continue
            complete = response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
            self.answers.append(
                Answer(time.monotonic(), response.status_code, label(response), complete)
            )
            if response.status_code != 200:
                await asyncio.sleep(0.05)  # refused: don't spin

    def since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.at >= moment]
