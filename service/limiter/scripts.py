"""The limiter's Lua scripts, read once from `lua/` with the preludes each one uses.

Each script runs atomically in Redis and touches only keys under one tenant's hash tag
(Cluster: the one key a call names is that tag). Its arguments are the caller's deadline
(`time.lua`), the policy as a record and the call's records (JSON, read with Redis's
`cjson`): nothing is addressed by position in a flat argument list. What each takes and
returns is said at the top of its file.
"""

from __future__ import annotations

from importlib.resources import files

MARKER_MS = 300_000  # how long an admission's marker lives, and a release's outlives it

_PRELUDES = {
    "admit": ("time", "periods", "standing"),
    "release": ("time", "periods", "standing", "accounting"),
    "cancel": ("time", "periods", "standing"),
    "snapshot": ("time", "periods", "standing"),
    "refresh": (),
}


def lua_source(name: str) -> str:
    """The text of `lua/<name>.lua` (a script or a prelude), as shipped."""
    return files(__package__).joinpath("lua", f"{name}.lua").read_text()


def load(name: str) -> str:
    """Script `name` (admit, release, cancel, snapshot, refresh) with its preludes first."""
    return "\n".join(lua_source(part) for part in (*_PRELUDES[name], name))


ADMIT, RELEASE, CANCEL, SNAPSHOT, REFRESH = (load(name) for name in _PRELUDES)
