"""`POST /v1/images/generations`: images as URLs or base64, with their cost in xAI's `usage`.

xAI refuses a `stream` field (images never stream) and prices each image (`usage.py`).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import Send

from service.simulator import faults
from service.simulator.state import State
from service.simulator.usage import image_price_of
from service.simulator.wire import Watch, send_json, xai_error

DEFAULT_MODEL = "grok-2-image-1212"
_PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


async def generate(body: Any, state: State, watch: Watch, send: Send) -> None:
    if not isinstance(body, dict):
        await xai_error(send, 400, "Failed to parse the request body as JSON")
        return
    if "stream" in body:
        await xai_error(send, 400, "Argument not supported: stream")
        return
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        await xai_error(send, 400, "Field 'prompt' is required")
        return
    options = faults.options_for(body, state)
    if await faults.before_answer(options, state, watch, send):
        return
    n = body.get("n", 1)
    count = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    model = body.get("model") if isinstance(body.get("model"), str) else DEFAULT_MODEL
    b64 = body.get("response_format") == "b64_json"
    data = [
        {"b64_json": _PNG_1PX} if b64 else {"url": f"https://sim.invalid/img/{i}.png"}
        for i in range(count)
    ]
    for item in data:
        item["revised_prompt"] = f"A picture of {prompt}"
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    if not state.config.openai_shapes:
        answer["usage"] = {"cost_in_usd_ticks": count * image_price_of(model).image}
    await send_json(send, 200, answer)
