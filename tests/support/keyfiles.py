"""Key files for tests: the usual secrets and model, and `[[keys]]` entries written as TOML."""

from __future__ import annotations

import hashlib

MAIN_SECRET = "gk-test-main-0123456789"
MODELS_SECRET = "gk-test-models-0123456789"
MODEL = "grok-4-1-fast-non-reasoning"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def keys_toml(*entries: str, defaults: str = 'requests = "100000/minute"') -> str:
    """A key file: `[defaults]` then the given `[[keys]]` entries."""
    return f"[defaults]\n{defaults}\n\n" + "\n".join(entries)


def key_entry(key_id: str, secret: str, extra: str = "", tenant: str | None = None) -> str:
    tenant_line = f'tenant = "{tenant}"\n' if tenant else ""
    return f'[[keys]]\nid = "{key_id}"\n{tenant_line}sha256 = "{digest(secret)}"\n{extra}\n'
