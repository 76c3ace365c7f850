"""The admin API's keys: input rules, the merge with the key file, the clock checks at auth,
and the store's writes (memory, and the Redis script on fakeredis), with an injected clock."""

from __future__ import annotations

import asyncio
import logging

import fakeredis
import pytest

from service.registry import store as store_module
from service.registry.follow import StoreFollower
from service.registry.keys import hash_key, parse_registry, rfc3339
from service.registry.merge import MergedView
from service.registry.records import (
    InvalidInput,
    KeyRecord,
    TenantRecord,
    apply_update,
    key_object,
    parse_create,
    parse_rotate,
    parse_tenant,
    parse_time,
    parse_update,
    rotate,
)
from service.registry.reload import RegistryHolder
from service.registry.store import (
    MemoryKeyStore,
    RedisKeyStore,
    Snapshot,
    Write,
    WriteRefused,
)
from tests.support.keyfiles import digest, key_entry, keys_toml

NOW = 1_800_000_000.0
FILE = keys_toml(
    key_entry("file-key", "gk-file-secret", tenant="filed"),
    key_entry("file-key-of-api-tenant", "gk-file-other", tenant="api-tenant"),
    '[tenants.filed]\nrequests = "50/minute"\n',
    defaults='requests = "60/minute"\ntokens = "1000/minute"',
)


def record(key_id: str = "k1", secret: str = "gk-api-secret", **fields) -> KeyRecord:
    return KeyRecord(id=key_id, tenant="t1", digest=hash_key(secret), created_at=NOW, **fields)


def view(*records: KeyRecord, tenants: tuple[TenantRecord, ...] = ()) -> MergedView:
    merged = MergedView(parse_registry(FILE.encode()))
    merged.load(Snapshot(1, {r.id: r for r in records}, {t.id: t for t in tenants}))
    return merged


# --- input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key_id", ["", "a" * 65, "a b", "é", "..", ".", "a/b", 5])
def test_a_key_id_outside_the_rule_is_refused_naming_id(key_id):
    with pytest.raises(InvalidInput) as caught:
        parse_create({"id": key_id, "tenant": "t"})
    assert caught.value.param == "id"


def test_a_key_id_of_64_allowed_characters_is_taken():
    assert parse_create({"id": "A-z_0.9" + "x" * 57, "tenant": "t"}).id == "A-z_0.9" + "x" * 57


def test_an_unknown_field_is_refused_by_name():
    with pytest.raises(InvalidInput) as caught:
        parse_create({"tenant": "t", "sha256": "0" * 64})
    assert caught.value.param == "sha256"


def test_a_key_needs_a_tenant():
    with pytest.raises(InvalidInput, match="tenant"):
        parse_create({"id": "k"})


@pytest.mark.parametrize(
    "field, value",
    [
        ("requests", "lots"),
        ("requests", 5),
        ("tokens", "0/minute"),
        ("spend", "10/week"),
        ("spend", "1e999999999/day"),
        ("concurrent", 0),
        ("concurrent", True),
        ("models", "grok"),
        ("models", ["bad model"]),
        ("expires_at", "tomorrow"),
        ("expires_at", "2027-01-01T00:00:00"),  # no offset: which zone?
    ],
)
def test_a_bad_limit_or_time_is_refused_naming_the_field(field, value):
    with pytest.raises(InvalidInput) as caught:
        parse_create({"tenant": "t", field: value})
    assert caught.value.param == field


def test_metadata_is_a_flat_object_of_at_most_16_strings():
    assert parse_create({"tenant": "t", "metadata": {"a": "1"}}).fields["metadata"] == {"a": "1"}
    for bad in ({"a": 1}, {"a": {"b": "c"}}, {str(i): "v" for i in range(17)}, ["a"]):
        with pytest.raises(InvalidInput):
            parse_create({"tenant": "t", "metadata": bad})


@pytest.mark.parametrize(
    "moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z"]
)
def test_expires_at_outside_1970_to_9999_is_refused(moment):
    with pytest.raises(InvalidInput):
        parse_time(moment)


def test_a_time_is_answered_to_the_millisecond_never_rounded_up_to_the_next_second():
    assert rfc3339(1_800_000_000.9996) == "2027-01-15T08:00:00.999Z"


def test_expires_at_is_read_with_its_offset_and_answered_in_utc():
    seconds = parse_time("2027-01-01T02:00:00+02:00")
    assert rfc3339(seconds) == "2027-01-01T00:00:00Z"


def test_patch_null_removes_a_field_and_disabled_null_enables():
    changes = parse_update({"requests": None, "disabled": None, "metadata": None})
    changed = apply_update(record(requests="5/minute", disabled=True, metadata={"a": "b"}), changes)
    assert (changed.requests, changed.disabled, changed.metadata) == (None, False, {})


def test_patch_cannot_move_a_key_to_another_tenant():
    with pytest.raises(InvalidInput):
        parse_update({"tenant": "other"})


@pytest.mark.parametrize("grace", [-1, 604801, 1.5, "60", True])
def test_a_grace_outside_0_to_a_week_is_refused(grace):
    with pytest.raises(InvalidInput):
        parse_rotate({"grace_seconds": grace})


def test_the_grace_defaults_to_an_hour():
    assert parse_rotate({}) == 3600


def test_a_tenant_wide_concurrency_cap_is_refused_not_ignored():
    with pytest.raises(InvalidInput) as caught:
        parse_tenant("t", {"concurrent": 4})
    assert caught.value.param == "concurrent"


def test_a_key_object_never_carries_a_digest():
    answer = key_object(rotate(record(), digest("gk-new"), 60, NOW))
    assert not any(
        isinstance(v, str) and (hash_key("gk-api-secret") in v or digest("gk-new") in v)
        for v in answer.values()
    )
    assert set(answer) == {
        "object", "id", "tenant", "source", "created_at", "expires_at", "disabled",
        "requests", "tokens", "concurrent", "spend", "models", "metadata",
    }  # fmt: skip


# --- the merge and the clock at auth -------------------------------------------------------


def test_an_api_key_gets_the_files_defaults_for_what_it_does_not_set():
    key = view(record(tokens="5/minute")).build().lookup("gk-api-secret")
    assert [w.text for w in key.policy.requests] == ["60 per 1 minute"]
    assert [w.text for w in key.policy.tokens] == ["5 per 1 minute"]


def test_the_file_wins_an_id_clash_with_one_warning(caplog):
    merged = view(record("file-key", "gk-api-clash"))
    with caplog.at_level(logging.WARNING, "service.registry"):
        first = merged.build()
        merged.build()
    assert first.lookup("gk-api-clash") is None
    assert first.lookup("gk-file-secret").id == "file-key"
    assert len([r for r in caplog.records if "file-key" in r.getMessage()]) == 1


def test_an_api_tenants_budget_applies_to_its_file_and_api_keys():
    api_key = KeyRecord(
        id="k1", tenant="api-tenant", digest=hash_key("gk-api-secret"), created_at=NOW
    )
    merged = view(api_key, tenants=(TenantRecord("api-tenant", requests="7/minute"),))
    registry = merged.build()
    for secret in ("gk-api-secret", "gk-file-other"):
        assert [w.limit for w in registry.lookup(secret).policy.tenant_requests] == [7]


def test_a_file_tenant_wins_over_an_api_tenant_of_the_same_name():
    merged = view(tenants=(TenantRecord("filed", requests="7/minute"),))
    key = merged.build().lookup("gk-file-secret")
    assert [w.limit for w in key.policy.tenant_requests] == [50]


def test_a_disabled_key_is_refused_saying_so():
    key = view(record(disabled=True)).build().lookup("gk-api-secret")
    assert key.refusal(NOW) == "this key is disabled"


def test_an_expired_key_is_refused_saying_when():
    key = view(record(expires_at=NOW + 10)).build().lookup("gk-api-secret")
    assert key.refusal(NOW + 9.9) is None
    assert key.refusal(NOW + 10) == f"this key expired at {rfc3339(NOW + 10)}"


def test_a_rotated_out_secret_works_until_its_grace_ends():
    rotated = rotate(record(), hash_key("gk-new-secret"), 30, NOW)
    registry = view(rotated).build()
    old, new = registry.lookup("gk-api-secret"), registry.lookup("gk-new-secret")
    assert old.id == new.id == "k1" and old.policy == new.policy  # same budgets, same counters
    assert old.refusal(NOW + 29.9) is None and new.refusal(NOW + 29.9) is None
    assert old.refusal(NOW + 30) == "Incorrect API key provided."
    assert new.refusal(NOW + 10_000) is None


def test_a_rotation_without_grace_retires_the_old_secret_at_once():
    registry = view(rotate(record(), hash_key("gk-new-secret"), 0, NOW)).build()
    assert registry.lookup("gk-api-secret") is None


def test_a_file_key_is_never_gated():
    assert not view().build().lookup("gk-file-secret").gated


# --- the stores ----------------------------------------------------------------------------


def stores() -> list:
    return [MemoryKeyStore, lambda: RedisKeyStore(fakeredis.FakeAsyncRedis())]


AUDIT = {"action": "key.create", "admin_key_id": "ops", "target": "k1"}


@pytest.mark.parametrize("make", stores(), ids=["memory", "redis"])
def test_create_refuses_an_existing_id_and_changes_nothing(make):
    store = make()

    async def scenario():
        await store.write(Write("key", "k1", "create", record().dumps()), AUDIT)
        with pytest.raises(WriteRefused) as caught:
            await store.write(Write("key", "k1", "create", record(secret="other").dumps()), AUDIT)
        return caught.value.reason, await store.snapshot()

    reason, snapshot = asyncio.run(scenario())
    assert reason == "exists"
    assert snapshot.version == 1 and snapshot.keys["k1"] == record()


@pytest.mark.parametrize("make", stores(), ids=["memory", "redis"])
def test_replace_refuses_a_record_changed_meanwhile(make):
    store = make()

    async def scenario():
        first = record().dumps()
        await store.write(Write("key", "k1", "create", first), AUDIT)
        disabled = record(disabled=True).dumps()
        await store.write(Write("key", "k1", "replace", disabled, first), AUDIT)
        with pytest.raises(WriteRefused) as caught:
            await store.write(Write("key", "k1", "replace", first, first), AUDIT)
        return caught.value.reason

    assert asyncio.run(scenario()) == "changed"


@pytest.mark.parametrize("make", stores(), ids=["memory", "redis"])
def test_delete_of_a_missing_record_is_refused(make):
    store = make()

    async def scenario():
        with pytest.raises(WriteRefused) as caught:
            await store.write(Write("tenant", "t", "delete"), AUDIT)
        return caught.value.reason, await store.version()

    assert asyncio.run(scenario()) == ("missing", 0)


@pytest.mark.parametrize("make", stores(), ids=["memory", "redis"])
def test_the_audit_answers_newest_first_and_keeps_the_last_records(make, monkeypatch):
    monkeypatch.setattr(store_module, "AUDIT_KEPT", 20)  # 10,000 in production
    store = make()

    async def scenario():
        for i in range(25):
            await store.write(Write("tenant", "t", "put", f'{{"id":"t{i}"}}'), {"n": i})
        return await store.audit(3), len(await store.audit(100))

    newest, kept = asyncio.run(scenario())
    assert [r["n"] for r in newest] == [24, 23, 22]
    assert kept == 20


def test_a_replica_that_missed_a_notice_catches_up_at_its_second_check():
    """Two followers on one store: the writer's notice never reaches the other."""

    async def scenario():
        store = MemoryKeyStore()
        writer = StoreFollower(store, RegistryHolder(parse_registry(FILE.encode()), None))
        other = StoreFollower(store, RegistryHolder(parse_registry(FILE.encode()), None))
        await writer.write(Write("key", "k1", "create", record().dumps()), AUDIT)
        await other.check()  # sees the store ahead: gives the notice one check to arrive
        before = other.holder.current.lookup("gk-api-secret")
        await other.check()
        return before, other.holder.current.lookup("gk-api-secret")

    before, after = asyncio.run(scenario())
    assert before is None and after is not None and after.id == "k1"


def test_a_notice_for_the_next_version_applies_that_record_alone():
    async def scenario():
        store = MemoryKeyStore()
        writer = StoreFollower(store, RegistryHolder(parse_registry(FILE.encode()), None))
        other = StoreFollower(store, RegistryHolder(parse_registry(FILE.encode()), None))
        version = await writer.write(Write("key", "k1", "create", record().dumps()), AUDIT)
        await other.on_notice(version, "key", "k1")
        return other.holder.view.version, other.holder.current.lookup("gk-api-secret")

    version, key = asyncio.run(scenario())
    assert version == 1 and key.id == "k1"
