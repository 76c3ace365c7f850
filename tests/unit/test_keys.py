"""The key registry: parsing, digests, defaults, aliases, prices and admin keys."""

from __future__ import annotations

import logging

import pytest

from service.registry.keys import RegistryError, parse_registry
from service.usage.charge import charge_for
from service.usage.prices import Price
from service.usage.record import Usage
from tests.support.keyfiles import digest

D1 = digest("one")
D2 = digest("two")


def registry(text: str):
    return parse_registry(text.encode(), "keys.toml")


def test_lookup_finds_a_key_by_its_secret_and_nothing_else():
    reg = registry(f'[[keys]]\nid = "a"\nsha256 = "{D1}"\n')
    assert reg.lookup("one").id == "a"
    assert reg.lookup("two") is None
    assert reg.lookup(D1) is None  # the digest itself is not a key


def test_digest_is_case_insensitive_in_the_file():
    reg = registry(f'[[keys]]\nid = "a"\nsha256 = "{D1.upper()}"\n')
    assert reg.lookup("one").id == "a"


def test_defaults_apply_unless_a_key_sets_its_own():
    reg = registry(
        f"""
[defaults]
requests = "60/minute"
concurrent = 4
tokens = "1000/hour"

[tenants.acme]
requests = "1000/minute;5000/day"

[[keys]]
id = "a"
tenant = "acme"
sha256 = "{D1}"
requests = "600/minute;10000/day"

[[keys]]
id = "b"
sha256 = "{D2}"
"""
    )
    a, b = reg.lookup("one").policy, reg.lookup("two").policy
    assert [(w.limit, w.seconds) for w in a.requests] == [(600, 60), (10000, 86400)]
    assert [(w.limit, w.seconds) for w in a.tenant_requests] == [(1000, 60), (5000, 86400)]
    assert a.concurrent == 4 and a.tokens[0].limit == 1000
    assert [(w.limit, w.seconds) for w in b.requests] == [(60, 60)]
    assert b.tenant_requests == ()


def test_disabled_key_is_refused():
    reg = registry(f'[[keys]]\nid = "a"\nsha256 = "{D1}"\ndisabled = true\n')
    assert reg.lookup("one") is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[keys]\nid=", "not valid TOML"),
        ('[[keys]]\nid = "a"\nsha256 = "abc"\n', "keys[0] (a): sha256 must be 64 hex"),
        (f'[[keys]]\nid = "a"\nsha256 = "{D1}"\nrequests = "lots"\n', "keys[0] (a): requests"),
        (f'[[keys]]\nid = "a"\nsha256 = "{D1}"\nconcurrent = 0\n', "concurrent must be"),
        (f'[[keys]]\nid = "a"\nsha256 = "{D1}"\nrequest = "1/second"\n', "unknown field"),
        (f'[[keys]]\nid = "a"\nsha256 = "{D1}"\n[[keys]]\nid = "a"\nsha256 = "{D2}"\n', "dup"),
        (f'[[keys]]\nid = "a"\nsha256 = "{D1}"\n[[keys]]\nid = "b"\nsha256 = "{D1}"\n', "dup"),
        ('[defaults]\nrequests = "5/fortnight"\n', "[defaults]: requests"),
        (f'[[keys]]\nid = "bad id!"\nsha256 = "{D1}"\n', "keys[0]: id must be"),
        ("[limits]\nrequests = 1\n", "unknown section(s) ['limits']"),
        ("[models.aliases]\nold = 3\n", '[models.aliases] "old": must be a non-empty model'),
        ('[models.aliases]\na = "b"\nb = "a"\n', "cycle (a -> b -> a)"),
        ('[models]\ndefault = "x"\n', "[models]: unknown field(s) ['default']"),
        ('[prices."m"]\ninput = 1\n', '[prices."m"]: output is required'),
        ('[prices."m"]\ninput = -1\noutput = 1\n', '[prices."m"]: input: must be a finite'),
        ('[prices."m"]\ninput = "2"\noutput = 1\n', '[prices."m"]: input: must be a number'),
        ('[prices."m"]\ninput = 1\noutput = 0.00000000001\n', "more than 10 decimal places"),
        ('[prices."m"]\ninput = 1\noutput = 1\ncache = 1\n', "unknown field(s) ['cache']"),
        (
            '[models.aliases]\nold = "new"\n[prices."old"]\ninput = 1\noutput = 1\n',
            '[prices."old"]: never used, "old" is an alias of "new"',
        ),
        ('[[admin_keys]]\nid = "ops"\nsha256 = "xyz"\n', "admin_keys[0] (ops): sha256 must"),
        (
            f'[[admin_keys]]\nid = "ops"\nsha256 = "{D1}"\ntenant = "acme"\n',
            "admin_keys[0] (ops): unknown field(s) ['tenant']",
        ),
        (
            f'[[keys]]\nid = "a"\nsha256 = "{D1}"\n[[admin_keys]]\nid = "a"\nsha256 = "{D2}"\n',
            "admin_keys[0] (a): duplicate id",
        ),
        (
            f'[[keys]]\nid = "a"\nsha256 = "{D1}"\n[[admin_keys]]\nid = "b"\nsha256 = "{D1}"\n',
            "admin_keys[0] (b): duplicate sha256",
        ),
    ],
)
def test_invalid_file_is_refused_naming_the_entry(text, fragment):
    with pytest.raises(RegistryError) as raised:
        registry(text)
    assert fragment in str(raised.value)
    assert str(raised.value).startswith("keys.toml")


def test_model_aliases_resolve_to_the_last_name_of_a_chain():
    reg = registry(
        '[models.aliases]\n"grok-beta" = "grok-2"\n"grok-2" = "grok-4"\n"grok-3" = "grok-4"\n'
    )
    catalog = reg.models
    assert catalog.upstream_name("grok-beta") == "grok-4"
    assert catalog.upstream_name("grok-3") == "grok-4"
    assert catalog.upstream_name("grok-4") == "grok-4"


def test_prices_are_read_exactly_as_written_in_ticks():
    reg = registry(
        '[prices."grok-4"]\ninput = 3.0000000001\ncached_input = 0.75\noutput = 15\n'
        '[prices."grok-mini"]\ninput = 0.2\noutput = 0.5\n'
    )
    # 3.0000000001 as a float is 3.00000000009999...: only exact decimals give ...0001.
    assert reg.prices["grok-4"] == Price(30_000_000_001, 7_500_000_000, 150_000_000_000)
    # Without cached_input, cached tokens cost what other input tokens cost.
    assert reg.prices["grok-mini"] == Price(2_000_000_000, 2_000_000_000, 5_000_000_000)


def test_prices_are_looked_up_by_the_aliased_name():
    reg = registry('[models.aliases]\nold = "new"\n[prices."new"]\ninput = 1\noutput = 2\n')
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    charge = charge_for(usage, "old", reg.models.upstream_name("old"), reg.prices)
    assert (charge.cost_ticks, charge.cost_known) == (30_000_000_000, True)


def test_admin_key_is_found_only_as_an_admin_key():
    reg = registry(
        f'[[keys]]\nid = "t"\nsha256 = "{D1}"\n\n[[admin_keys]]\nid = "ops"\nsha256 = "{D2}"\n'
    )
    assert reg.lookup_admin("two").id == "ops"
    assert reg.lookup("two") is None
    assert reg.lookup_admin("one") is None
    assert reg.lookup("one").id == "t"


def test_disabled_admin_key_is_refused():
    reg = registry(f'[[admin_keys]]\nid = "ops"\nsha256 = "{D2}"\ndisabled = true\n')
    assert reg.lookup_admin("two") is None


def test_keys_without_a_request_limit_at_any_level_are_named_in_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="service.registry")
    registry(
        f"""
[tenants.acme]
requests = "100/minute"

[[keys]]
id = "free-for-all"
sha256 = "{D1}"
tokens = "1000/minute"

[[keys]]
id = "tenant-capped"
tenant = "acme"
sha256 = "{D2}"
"""
    )
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("keys.toml: 1 key(s) have no request limit at any level")
    assert warning.endswith(": free-for-all")


def test_defaults_with_a_request_limit_silence_the_warning(caplog):
    caplog.set_level(logging.WARNING, logger="service.registry")
    registry(f'[defaults]\nrequests = "60/minute"\n[[keys]]\nid = "a"\nsha256 = "{D1}"\n')
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
