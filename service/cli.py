"""Command line: `python -m service [--demo]`, `keys new|digest` (offline), `keys create|list|
get|update|rotate|delete` and `tenants …` (the admin API: `service.admin_cli`), and `usage`.

Start-up problems (bad settings, a broken key file, a bad Redis URL) print one line naming
the problem and exit 2: never a traceback, never a half-started server. `usage` reads the
ledger from REDIS_URL and prints what `GET /admin/v1/usage` answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import tempfile
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from service import __version__
from service.registry.keys import (
    ADMIN_KEY_PREFIX,
    KeyRegistry,
    RegistryError,
    hash_key,
    load_registry,
    new_key_secret,
    parse_registry,
)
from service.settings import ConfigError, Settings
from service.usage.report import (
    FORMATS,
    GROUP_FIELDS,
    QueryError,
    UsageQuery,
    render,
    summarize,
)

if TYPE_CHECKING:
    from service.usage.ledger import Ledger

log = logging.getLogger("service")

EXIT_CONFIG = 2
CLI_FORMATS = (*FORMATS, "table")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        return _keys(argv[1:])
    if argv[:1] == ["usage"]:
        return _usage(argv[1:])
    if argv[:1] == ["tenants"]:
        from service.admin_cli import tenants_main

        return tenants_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="grok-gateway",
        description="OpenAI-compatible gateway in front of the xAI Grok API. "
        "Configured by environment variables (see docs/configuration.md). "
        "Subcommands: 'keys new --id ID [--tenant T]' makes a tenant key for the file "
        "('--admin' an admin key); 'keys create|list|get|update|rotate|delete' and "
        "'tenants list|get|put|delete' call a gateway's admin API; "
        "'usage --from DAY --to DAY' prints the usage ledger.",
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
    from service.server.serve import bind_listener

    settings = Settings.from_env(demo=demo)
    configure_logging(settings.log_level)
    if demo:
        return _run_demo(settings, bind_listener(settings))
    registry = load_registry(settings.keys_file)
    sock = bind_listener(settings)
    if settings.redis_url is None:
        log.warning(
            "REDIS_URL is not set: limits are counted in memory, per replica. "
            "Run one replica only, or set REDIS_URL."
        )
    if settings.workers > 1:
        return _serve_workers(settings, sock)
    return _serve_one(settings, registry, sock)


def _serve_one(settings: Settings, registry: KeyRegistry, sock: socket.socket) -> int:
    import uvloop

    from service.app import create_app
    from service.server.lifecycle import LIFECYCLE
    from service.server.serve import GatewayServer, uvicorn_config

    app = create_app(settings, registry)  # validates REDIS_URL etc. before listening
    config = uvicorn_config(app, settings)
    server = GatewayServer(config, LIFECYCLE, settings.drain_delay)
    uvloop.run(server.serve(sockets=[sock]))
    return 0 if server.started else 1


def _serve_workers(settings: Settings, sock: socket.socket) -> int:
    from service.server.serve import run_workers, uvicorn_config

    # prometheus-client aggregates the workers' series through files in this directory.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="grok-gateway-metrics-")
    config = uvicorn_config("service.app:create_app_from_env", settings)
    config.factory = True
    config.workers = settings.workers
    run_workers(config, sock)
    return 0


def _run_demo(settings: Settings, sock: socket.socket) -> int:
    import uvloop

    from service.demo import run_demo

    return uvloop.run(run_demo(settings, sock))


DEFAULT_NEW_KEY_REQUESTS = "60/minute"


def _keys(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="grok-gateway keys")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="make a new key for the key file (offline); prints it once")
    new.add_argument("--id", required=True, help="public key id (logs, metrics, headers)")
    new.add_argument("--tenant", help="tenant the key belongs to")
    new.add_argument(
        "--requests",
        default=DEFAULT_NEW_KEY_REQUESTS,
        metavar="RATE",
        help=f"the key's own request limit (default {DEFAULT_NEW_KEY_REQUESTS})",
    )
    new.add_argument(
        "--spend",
        metavar="USD",
        help='the key\'s own spend budget in USD, e.g. "25/day;500/month" (default: none)',
    )
    new.add_argument(
        "--admin", action="store_true", help="an admin key for /admin/v1 (no tenant, no limits)"
    )
    digest = sub.add_parser("digest", help="print the sha256 entry for an existing secret")
    digest.add_argument("secret")
    from service.admin_cli import KEY_COMMANDS, add_key_commands, run

    add_key_commands(sub)
    args = parser.parse_args(argv)
    if args.command in KEY_COMMANDS:
        return run(args, "keys")
    if args.command == "digest":
        print(hash_key(args.secret))
        return 0
    if args.admin and (args.tenant or args.spend or args.requests != DEFAULT_NEW_KEY_REQUESTS):
        print(
            "grok-gateway keys: an admin key has no --tenant, --requests or --spend",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        # Validate the entry the same way the registry will.
        if args.admin:
            secret = new_key_secret(ADMIN_KEY_PREFIX)
            entry = _admin_entry(args.id, hash_key(secret))
        else:
            secret = new_key_secret()
            entry = _toml_entry(args.id, args.tenant, hash_key(secret), args.requests, args.spend)
        parse_registry(entry.encode())
    except RegistryError as exc:
        print(f"grok-gateway keys: {str(exc).split(': ', 1)[-1]}", file=sys.stderr)
        return EXIT_CONFIG
    who = "the operator" if args.admin else "the tenant"
    print(f"Key (shown once, give it to {who}): {secret}", file=sys.stderr)
    print("Add this entry to the key file (GATEWAY_KEYS_FILE):", file=sys.stderr)
    print(entry, end="")
    return 0


def _toml_entry(
    key_id: str, tenant: str | None, digest: str, requests: str, spend: str | None = None
) -> str:
    lines = ["[[keys]]", f'id = "{key_id}"']
    if tenant:
        lines.append(f'tenant = "{tenant}"')
    lines.append(f'sha256 = "{digest}"')
    # Always a request limit: a key without one at any level has no rate cap at all.
    lines.append(f"requests = {_toml_string(requests)}  # this key's own; overrides [defaults]")
    if spend:
        lines.append(f"spend = {_toml_string(spend)}  # USD per calendar day/month (UTC)")
    return "\n".join(lines) + "\n"


def _admin_entry(key_id: str, digest: str) -> str:
    return f'[[admin_keys]]\nid = "{key_id}"\nsha256 = "{digest}"\n'


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


def _usage(argv: list[str]) -> int:
    """`usage --from DAY --to DAY ...`: the ledger's sums, as the admin API answers them."""
    from redis.exceptions import RedisError

    from service.usage.ledger import LedgerUnavailable

    parser = argparse.ArgumentParser(
        prog="grok-gateway usage",
        description="Print the usage ledger (read from REDIS_URL) summed by day, tenant, key "
        "and model; the same report as GET /admin/v1/usage.",
    )
    parser.add_argument("--from", dest="first", required=True, metavar="YYYY-MM-DD")
    parser.add_argument("--to", dest="last", required=True, metavar="YYYY-MM-DD")
    parser.add_argument("--tenant", help="only this tenant ('-' for keys without one)")
    parser.add_argument("--key", help="only this key id")
    parser.add_argument(
        "--group-by",
        default=",".join(GROUP_FIELDS),
        metavar="FIELDS",
        help="comma-separated subset of day,tenant,key,model in the order wanted "
        "(default: all four; '' for one line of totals)",
    )
    parser.add_argument(
        "--format",
        default="table",
        choices=CLI_FORMATS,
        help="default: table; json and csv print exactly what the admin API answers",
    )
    args = parser.parse_args(argv)
    params = {
        "from": args.first,
        "to": args.last,
        "tenant": args.tenant,
        "key": args.key,
        "group_by": args.group_by,
        "format": args.format,
    }
    try:
        query = UsageQuery.parse(
            {k: v for k, v in params.items() if v is not None}, formats=CLI_FORMATS
        )
        # Only the REDIS_* settings matter here; the rest of the gateway's need not be set.
        settings = Settings.from_env(
            {k: v for k, v in os.environ.items() if k.startswith("REDIS_")}, demo=True
        )
    except QueryError as exc:
        print(f"grok-gateway usage: --{exc.param.replace('_', '-')}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"grok-gateway usage: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if settings.redis_url is None:
        print(
            "grok-gateway usage: REDIS_URL is not set. Without it the ledger lives in the "
            "gateway's memory: ask the running gateway instead, GET /admin/v1/usage with an "
            "admin key.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    from service.redis.connection import connect
    from service.usage.ledger import RedisLedger

    try:
        ledger = RedisLedger(connect(settings.redis_url, settings.redis_timeout, 4))
    except ValueError as exc:  # a URL the Redis client cannot use
        print(f"grok-gateway usage: configuration error: REDIS_URL: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        body = asyncio.run(_read_report(ledger, query))
    except (LedgerUnavailable, OSError, RedisError):
        where = urlsplit(settings.redis_url).netloc.rpartition("@")[2]  # never the password
        print(
            f"grok-gateway usage: cannot read the ledger: Redis at {where} is unreachable",
            file=sys.stderr,
        )
        return 1
    sys.stdout.buffer.write(body + (b"\n" if query.format == "json" else b""))
    sys.stdout.flush()
    return 0


async def _read_report(ledger: Ledger, query: UsageQuery) -> bytes:
    try:
        rows = await ledger.rows(query.first, query.last, query.tenant, query.key)
    finally:
        await ledger.aclose()
    return render(summarize(rows, query.group_by), query)
