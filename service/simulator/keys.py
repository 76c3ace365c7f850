"""`GET /v1/api-key`, xAI's key-status endpoint, and the key's status behind it.

The status (`ok`, `blocked`, `disabled`) starts as `--key-status` and changes at run time with
`POST /sim/key-status {"status": "blocked"}`. A blocked or disabled key still reads its own
status; every other call it makes is refused with xAI's 403.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.types import Send

from service.simulator.state import KEY_STATUSES, State
from service.simulator.wire import send_json, xai_error

_NAMESPACE = uuid.UUID("5e1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b")
_TEAM_ID = "5ea6f6bd-7815-4b8a-9135-28b2d7ba6722"
_USER_ID = "59fbe5f2-040b-46d5-8325-868bb8f23eb2"


def info(token: str, status: str) -> dict[str, Any]:
    """The key-status document xAI answers for `token`."""
    return {
        "redacted_api_key": _redact(token),
        "user_id": _USER_ID,
        "name": "Simulator key",
        "create_time": "2026-01-01T12:00:00.000000Z",
        "modify_time": "2026-01-01T12:00:00.000000Z",
        "modified_by": _USER_ID,
        "team_id": _TEAM_ID,
        "acls": ["api-key:model:*", "api-key:endpoint:*"],
        "api_key_id": str(uuid.uuid5(_NAMESPACE, token)),
        "team_blocked": False,
        "api_key_blocked": status == "blocked",
        "api_key_disabled": status == "disabled",
    }


def refusal(status: str) -> str | None:
    """xAI's 403 message for calls made with a key in this status, or None."""
    if status == "blocked":
        return "Your API key has been blocked. Contact support@x.ai or your team admin."
    if status == "disabled":
        return "Your API key is disabled. Enable it in the xAI Console (console.x.ai)."
    return None


async def set_status(body: Any, state: State, send: Send) -> None:
    """`POST /sim/key-status {"status": "ok" | "blocked" | "disabled"}`."""
    status = body.get("status") if isinstance(body, dict) else None
    if status not in KEY_STATUSES:
        await xai_error(send, 400, f"status must be one of {', '.join(KEY_STATUSES)}")
        return
    state.key_status = status
    await send_json(send, 200, {"key_status": status})


def _redact(token: str) -> str:
    return f"{token[:4]}...{token[-4:]}" if len(token) > 12 else "***"
