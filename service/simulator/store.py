"""Stored Responses API objects, in memory and bounded: the oldest is dropped past the limit.

xAI keeps a stored response for 30 days; the simulator keeps the newest `limit` instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class ResponseStore:
    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, response: dict[str, Any]) -> None:
        self._items[response["id"]] = response
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def get(self, response_id: str) -> dict[str, Any] | None:
        return self._items.get(response_id)

    def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None

    def clear(self) -> None:
        self._items.clear()
