"""`python -m bench.affinity [--turns 10]`: what cache affinity saves on one conversation.

Runs the same multi-turn chat conversation (a system prompt, then each turn adds the reply and
a new question) through a gateway on the simulator, whose prompt cache works as xAI's does
(per `x-grok-conv-id`, a repeated prefix billed at the cached price), three ways: affinity off
(`GATEWAY_CACHE_AFFINITY=off`, no id: every turn cache-cold), on (the gateway derives the id),
and with the client's own `x-grok-conv-id`. Prints the billed cost (the upstream's
`cost_in_usd_ticks`) and the cached share of input of each. Not a speed measurement.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import httpx

from bench.targets import BENCH_KEY, Proc, start_gateway, start_simulator

MODEL = "grok-4-1-fast-non-reasoning"
TICKS_PER_USD = 10**10
# A system prompt of the size agents and assistants send (a few hundred tokens).
SYSTEM = " ".join(
    f"Rule {i}: answer precisely, cite the section you rely on, keep the tone neutral."
    for i in range(30)
)


def conversation(url: str, turns: int, headers: dict[str, str]) -> dict[str, int]:
    """Run one conversation of `turns` turns; its summed usage."""
    messages = [{"role": "system", "content": SYSTEM}]
    sums = {"prompt": 0, "cached": 0, "ticks": 0}
    with httpx.Client(base_url=url, timeout=30) as client:
        for turn in range(turns):
            messages.append(
                {"role": "user", "content": f"Question {turn}: what changed since the last answer?"}
            )
            response = client.post(
                "/api/v1/chat/completions",
                json={"model": MODEL, "messages": messages},
                headers={"Authorization": f"Bearer {BENCH_KEY}", **headers},
            )
            response.raise_for_status()
            doc = response.json()
            messages.append(doc["choices"][0]["message"])
            usage = doc["usage"]
            sums["prompt"] += usage["prompt_tokens"]
            sums["cached"] += usage["prompt_tokens_details"]["cached_tokens"]
            sums["ticks"] += usage["cost_in_usd_ticks"]
    return sums


def measure(turns: int) -> dict[str, dict[str, int]]:
    workdir = Path(tempfile.mkdtemp(prefix="grok-bench-affinity-"))
    procs: list[Proc] = []
    try:
        simulator = start_simulator(workdir)
        procs.append(simulator)
        off = start_gateway(workdir, simulator, None, name="gw-off", GATEWAY_CACHE_AFFINITY="off")
        procs.append(off)
        on = start_gateway(workdir, simulator, None, name="gw-on")
        procs.append(on)
        return {
            "affinity off": conversation(off.url, turns, {}),
            "affinity on (derived id)": conversation(on.url, turns, {}),
            "client's x-grok-conv-id": conversation(on.url, turns, {"x-grok-conv-id": "c-1"}),
        }
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.affinity")
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    results = measure(args.turns)
    base = results["affinity off"]["ticks"]
    print(f"{args.turns}-turn conversation, {MODEL}, on the simulator's prompt cache")
    print(f"{'':26} {'input tok':>9} {'cached':>7} {'hit':>6} {'cost USD':>11} {'vs off':>7}")
    for name, sums in results.items():
        hit = sums["cached"] / sums["prompt"] if sums["prompt"] else 0.0
        usd = sums["ticks"] / TICKS_PER_USD
        print(
            f"{name:26} {sums['prompt']:9d} {sums['cached']:7d} {hit:6.1%} {usd:11.7f} "
            f"{sums['ticks'] / base:7.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
