"""`python -m service.simulator --port 8081`: serve the simulated xAI API.

It binds its port first, then prints where it listens and the XAI_BASE_URL that points a
gateway at it; a port in use is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn

from service.simulator.app import create_app
from service.simulator.state import KEY_STATUSES, SimulatorConfig


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m service.simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--delay-ms", type=float, default=0, help="spacing between chunks")
    parser.add_argument("--first-byte-delay-ms", type=float, default=0)
    parser.add_argument("--api-key", help="accept only this key (others get xAI's 400)")
    parser.add_argument("--fault", help="default fault for every request (docs/simulator.md)")
    parser.add_argument("--fault-after", type=int, default=2)
    parser.add_argument(
        "--openai-shapes",
        action="store_true",
        help="OpenAI's stream and usage shapes instead of xAI's (usage only when asked for)",
    )
    parser.add_argument(
        "--key-status", choices=KEY_STATUSES, default="ok", help="what /v1/api-key reports"
    )
    parser.add_argument(
        "--max-stored-responses", type=int, default=10_000, help="oldest dropped past this"
    )
    parser.add_argument(
        "--answer",
        choices=("rate_limited", "no_credits", "server_error"),
        help="answer every inference call so, as xAI answers a team in trouble",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    config = SimulatorConfig(
        chunks=args.chunks,
        delay_ms=args.delay_ms,
        first_byte_delay_ms=args.first_byte_delay_ms,
        api_key=args.api_key,
        fault=args.fault,
        fault_after=args.fault_after,
        openai_shapes=args.openai_shapes,
        key_status=args.key_status,
        max_stored_responses=args.max_stored_responses,
        team_answer=args.answer,
    )
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(
            f"simulator: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
        )
        return 2
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    print(
        f"simulated xAI API listening on http://{host}:{port}/v1\n"
        f"point a gateway at it: XAI_BASE_URL=http://{host}:{port}/v1 XAI_API_KEY=any-key",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level=args.log_level,
            timeout_keep_alive=75,  # like real APIs; uvicorn's 5 s default races pooled clients
        )
    )
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
