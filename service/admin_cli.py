"""`python -m service keys create|list|get|update|rotate|delete` and `tenants list|get|put|
delete`: the admin API (SPEC 10) from a shell.

Each command is one HTTP call to a running gateway (`--url`, else GATEWAY_URL) with the admin
key from GATEWAY_ADMIN_KEY (never a flag: it would show in `ps` and shell history). It prints
the API's answer as JSON (`--format json`, exactly what the API answered) or a table. An API
error prints its message and code and exits 1; a missing admin key exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from service.settings import AdminClientSettings, ConfigError

KEY_COMMANDS = ("create", "list", "get", "update", "rotate", "delete")
TENANT_COMMANDS = ("list", "get", "put", "delete")
EXIT_API = 1
EXIT_CONFIG = 2
_LIMITS = ("requests", "tokens", "concurrent", "spend")
_KEY_COLUMNS = ("id", "tenant", "source", "disabled", "expires_at", *_LIMITS)
_TENANT_COLUMNS = ("id", "source", "requests", "tokens", "spend")


def add_key_commands(sub: argparse._SubParsersAction) -> None:
    """The API's key commands, beside the offline `keys new` and `keys digest`."""
    create = _command(sub, "create", "issue a key through the admin API; prints its secret once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--id", help="the key's id (default: the gateway makes one)")
    _limit_options(create, clearable=False)
    create.add_argument("--expires-at", metavar="RFC3339", help="e.g. 2027-01-31T00:00:00Z")
    create.add_argument("--metadata", action="append", metavar="NAME=VALUE", default=None)
    listing = _command(sub, "list", "list the keys (file and API)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    _command(sub, "get", "show one key").add_argument("id")
    update = _command(sub, "update", "change an API key ('none' removes a field)")
    update.add_argument("id")
    _limit_options(update, clearable=True)
    update.add_argument("--expires-at", metavar="RFC3339|none")
    update.add_argument("--metadata", action="append", metavar="NAME=VALUE", default=None)
    update.add_argument("--clear-metadata", action="store_true")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--disable", action="store_true", help="refuse the key (401) until enabled")
    state.add_argument("--enable", action="store_true")
    rotate = _command(sub, "rotate", "a new secret for a key; the old one works for the grace")
    rotate.add_argument("id")
    rotate.add_argument("--grace-seconds", type=int, help="default 3600 (0: the old one stops now)")
    _command(sub, "delete", "delete an API key (its secrets get 401)").add_argument("id")


def tenants_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="grok-gateway tenants", description="Tenants' budgets through the admin API."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _command(sub, "list", "list the tenants (file and API)")
    _command(sub, "get", "show one tenant").add_argument("id")
    put = _command(sub, "put", "set an API tenant's budgets (fields not given are unset)")
    put.add_argument("id")
    for name in ("requests", "tokens", "spend"):
        put.add_argument(f"--{name}", metavar="RATE" if name != "spend" else "USD/PERIOD")
    _command(sub, "delete", "delete an API tenant's budgets").add_argument("id")
    args = parser.parse_args(argv)
    return run(args, "tenants")


def _command(sub: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=text, description=text)
    parser.add_argument("--url", help="the gateway (default: GATEWAY_URL, else 127.0.0.1:8000)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    return parser


def _limit_options(parser: argparse.ArgumentParser, clearable: bool) -> None:
    extra = " ('none' removes it)" if clearable else ""
    parser.add_argument("--requests", metavar="RATE", help="e.g. 600/minute;10000/day" + extra)
    parser.add_argument("--tokens", metavar="RATE", help="e.g. 100000/minute" + extra)
    parser.add_argument("--concurrent", metavar="N", help="requests in flight at once" + extra)
    parser.add_argument("--spend", metavar="USD/PERIOD", help="e.g. 25/day;500/month" + extra)
    parser.add_argument("--models", metavar="A,B", help="allow-list, comma-separated" + extra)


def run(args: argparse.Namespace, group: str) -> int:
    """Call the API for a parsed `keys …` or `tenants …` command and print its answer."""
    prog = f"grok-gateway {group}"
    try:
        settings = AdminClientSettings.from_env()
        method, path, body = _request(group, args)
    except (ConfigError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not settings.admin_key:
        print(f"{prog}: set GATEWAY_ADMIN_KEY to an admin key ([[admin_keys]])", file=sys.stderr)
        return EXIT_CONFIG
    url = (args.url or settings.url).rstrip("/")
    try:
        response = httpx.request(
            method,
            url + path,
            json=body,
            headers={"authorization": f"Bearer {settings.admin_key}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        print(f"{prog}: cannot reach {url}: {exc}", file=sys.stderr)
        return EXIT_API
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code >= 400 or not isinstance(answer, dict):
        error = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
        message = error.get("message") or response.text[:200]
        print(
            f"{prog}: {message} (HTTP {response.status_code} {error.get('code', '')})".rstrip(),
            file=sys.stderr,
        )
        return EXIT_API
    if args.format == "json":
        print(json.dumps(answer, indent=2))
    else:
        _print_table(answer)
    if "secret" in answer:
        print("The secret is shown once: give it to the tenant now.", file=sys.stderr)
    return 0


def _request(group: str, args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    command = args.command
    if group == "tenants":
        if command == "list":
            return "GET", "/admin/v1/tenants", None
        path = f"/admin/v1/tenants/{args.id}"
        if command == "put":
            body = {n: getattr(args, n) for n in ("requests", "tokens", "spend")}
            return "PUT", path, {k: v for k, v in body.items() if v is not None}
        return ("GET" if command == "get" else "DELETE"), path, None
    if command == "list":
        suffix = f"?tenant={args.tenant}" if args.tenant else ""
        return "GET", f"/admin/v1/keys{suffix}", None
    if command == "create":
        body = {"tenant": args.tenant, **_limits(args, clearable=False)}
        if args.id:
            body["id"] = args.id
        if args.expires_at:
            body["expires_at"] = args.expires_at
        if args.metadata:
            body["metadata"] = _metadata(args.metadata)
        return "POST", "/admin/v1/keys", body
    path = f"/admin/v1/keys/{args.id}"
    if command == "get":
        return "GET", path, None
    if command == "delete":
        return "DELETE", path, None
    if command == "rotate":
        grace = {} if args.grace_seconds is None else {"grace_seconds": args.grace_seconds}
        return "POST", f"{path}/rotate", grace
    body = _limits(args, clearable=True)
    if args.expires_at is not None:
        body["expires_at"] = None if args.expires_at == "none" else args.expires_at
    if args.clear_metadata:
        body["metadata"] = None
    if args.metadata:
        body["metadata"] = _metadata(args.metadata)
    if args.disable or args.enable:
        body["disabled"] = bool(args.disable)
    if not body:
        raise ValueError("update: nothing to change (give --requests, --disable, ...)")
    return "PATCH", path, body


def _limits(args: argparse.Namespace, clearable: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in (*_LIMITS, "models"):
        value = getattr(args, name)
        if value is None:
            continue
        if clearable and value == "none":
            body[name] = None
        elif name == "concurrent":
            try:
                body[name] = int(value)
            except ValueError:
                raise ValueError(f"--concurrent must be an integer, got {value!r}") from None
        elif name == "models":
            body[name] = [m.strip() for m in value.split(",") if m.strip()]
        else:
            body[name] = value
    return body


def _metadata(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--metadata takes NAME=VALUE, got {pair!r}")
        out[name] = value
    return out


def _print_table(answer: dict[str, Any]) -> None:
    if answer.get("object") == "list":
        rows = answer.get("data", [])
        first = rows[0] if rows else {}
        columns = _TENANT_COLUMNS if first.get("object") == "tenant" else _KEY_COLUMNS
        table = [list(columns)] + [[_cell(row.get(c)) for c in columns] for row in rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return
    width = max(len(name) for name in answer)
    for name, value in answer.items():
        if name != "object":
            print(f"{name.ljust(width)}  {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
