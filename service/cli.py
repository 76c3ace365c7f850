"""Command line: `python -m service [--demo]`, and `python -m service keys new`.

Start-up problems (bad settings, a broken key file, a bad Redis URL) print one line naming
the problem and exit 2: never a traceback, never a half-started server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

from service import __version__
from service.registry.keys import (
    KeyRegistry,
    RegistryError,
    hash_key,
    load_registry,
    new_key_secret,
    parse_registry,
)
from service.settings import ConfigError, Settings

log = logging.getLogger("service")

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        return _keys(argv[1:])
    parser = argparse.ArgumentParser(
        prog="grok-gateway",
        description="OpenAI-compatible gateway in front of the xAI Grok API. "
        "Configured by environment variables (see the README). "
        "Subcommand: 'keys new --id ID [--tenant T]' makes a tenant key.",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run on the built-in simulated upstream, in-memory limits, a demo key printed",
    )
    parser.add_argument("--version", action="version", version=f"grok-gateway {__version__}")
    args = parser.parse_args(argv)
    try:
        return _serve(demo=args.demo)
    except (ConfigError, RegistryError, ValueError) as exc:
        print(f"grok-gateway: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _serve(demo: bool) -> int:
    from service.observability.logging import configure_logging

    settings = Settings.from_env(demo=demo)
    configure_logging(settings.log_level)
    if demo:
        return _run_demo(settings)
    registry = load_registry(settings.keys_file)
    if settings.redis_url is None:
        log.warning(
            "REDIS_URL is not set: limits are counted in memory, per replica. "
            "Run one replica only, or set REDIS_URL."
        )
    if settings.workers > 1:
        return _serve_workers(settings)
    return _serve_one(settings, registry)


def _serve_one(settings: Settings, registry: KeyRegistry) -> int:
    import uvloop

    from service.app import create_app
    from service.lifecycle import LIFECYCLE
    from service.server import GatewayServer, uvicorn_config

    app = create_app(settings, registry)  # validates REDIS_URL etc. before listening
    config = uvicorn_config(app, settings)
    server = GatewayServer(config, LIFECYCLE, settings.drain_delay)
    uvloop.run(server.serve())
    return 0 if server.started else 1


def _serve_workers(settings: Settings) -> int:
    from service.server import run_workers, uvicorn_config

    # prometheus-client aggregates the workers' series through files in this directory.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="grok-gateway-metrics-")
    config = uvicorn_config("service.app:create_app_from_env", settings)
    config.factory = True
    config.workers = settings.workers
    run_workers(config)
    return 0


def _run_demo(settings: Settings) -> int:
    import uvloop

    from service.demo import run_demo

    return uvloop.run(run_demo(settings))


def _keys(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="grok-gateway keys")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="make a new tenant key; prints the secret once")
    new.add_argument("--id", required=True, help="public key id (logs, metrics, headers)")
    new.add_argument("--tenant", help="tenant the key belongs to")
    digest = sub.add_parser("digest", help="print the sha256 entry for an existing secret")
    digest.add_argument("secret")
    args = parser.parse_args(argv)
    if args.command == "digest":
        print(hash_key(args.secret))
        return 0
    try:
        # Validate the id and tenant the same way the registry will.
        secret = new_key_secret()
        entry = _toml_entry(args.id, args.tenant, hash_key(secret))
        parse_registry(entry.encode())
    except RegistryError as exc:
        print(f"grok-gateway keys: {str(exc).split(': ', 1)[-1]}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"Key (shown once, give it to the tenant): {secret}", file=sys.stderr)
    print("Add this entry to the key file (GATEWAY_KEYS_FILE):", file=sys.stderr)
    print(entry, end="")
    return 0


def _toml_entry(key_id: str, tenant: str | None, digest: str) -> str:
    lines = ["[[keys]]", f'id = "{key_id}"']
    if tenant:
        lines.append(f'tenant = "{tenant}"')
    lines.append(f'sha256 = "{digest}"')
    return "\n".join(lines) + "\n"
