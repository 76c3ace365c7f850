"""GET /admin/v1/usage and `python -m service usage`: the ledger for operators.

Traffic goes through three real gateway replicas sharing one real Redis; the report must sum
it exactly, whichever replica served each request.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from service.usage.report import usd_text
from tests.support.keyfiles import key_entry
from tests.support.processes import (
    free_port,
    gateway_env,
    start_gateway,
    start_gateways,
    start_redis,
)
from tests.support.usage import (
    MEASURES,
    MODEL,
    PRICES_TOML,
    REASONING_MODEL,
    add,
    admin_entry,
    as_shown,
    chat,
    eventually,
    exact_json,
    measured,
)

pytestmark = pytest.mark.slow

ADMIN = "gk-admin-ops-0123456789"
ALIAS = "grok-legacy"  # a retired name the key file maps to MODEL
# key id -> (secret, tenant as the ledger names it)
KEYS = {
    "a-prod": ("gk-adm-a-prod", "alpha"),
    "a-dev": ("gk-adm-a-dev", "alpha"),
    "b-prod": ("gk-adm-b-prod", "beta"),
    "lone": ("gk-adm-lone", "-"),
}


@pytest.fixture(scope="module")
def cluster(simulator, tmp_path_factory):
    """Three replicas on a fresh Redis, and the traffic they served, summed per key and model."""
    redis = start_redis()
    keys = tmp_path_factory.mktemp("admin-usage") / "keys.toml"
    entries = [
        key_entry(key_id, secret, tenant=None if tenant == "-" else tenant)
        for key_id, (secret, tenant) in KEYS.items()
    ]
    keys.write_text(
        '[defaults]\nrequests = "100000/minute"\n'
        + f'[models.aliases]\n"{ALIAS}" = "{MODEL}"\n'
        + PRICES_TOML
        + "\n".join(entries)
        + admin_entry("ops", ADMIN)
    )
    procs = start_gateways(gateway_env(simulator, str(keys), REDIS_URL=redis.url), 3)
    replicas = itertools.cycle(procs)
    expected: dict[tuple[str, str, str], dict[str, int]] = {}
    plan = [
        ("a-prod", MODEL, "hello there"),
        ("a-prod", REASONING_MODEL, "think about it"),
        ("a-dev", MODEL, "one two three four five"),
        ("b-prod", MODEL, "x"),
        ("b-prod", ALIAS, "an old name"),
        ("lone", REASONING_MODEL, "on my own"),
    ]
    for round_ in range(4):
        for key_id, model, content in plan:
            secret, tenant = KEYS[key_id]
            response = chat(next(replicas).url, secret, f"{content} {round_}", model)
            assert response.status_code == 200, response.text
            group = (tenant, key_id, model)
            expected[group] = add(expected.get(group, {}), measured(response.json()["usage"]))
    total = sum(len(plan) for _ in range(4))
    group = Group(procs, redis, expected)
    eventually(lambda: group.admin(group_by="").json()["data"][0]["requests"], lambda n: n == total)
    yield group
    for proc in procs:
        proc.stop(signal.SIGKILL)
    redis.stop()


class Group:
    def __init__(self, procs, redis, expected) -> None:
        self.procs = procs
        self.redis = redis
        self.expected = expected
        # The ledger's days are UTC days on Redis's clock; a range around today covers them.
        today = datetime.now(UTC).date()
        self.first, self.last = today - timedelta(days=1), today + timedelta(days=1)

    def admin(self, secret: str | None = ADMIN, replica: int = 0, **params) -> httpx.Response:
        query = {"from": str(self.first), "to": str(self.last), **params}
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.get(
            f"{self.procs[replica].url}/admin/v1/usage", params=query, headers=headers, timeout=10
        )

    def sums(self, *fields: str) -> dict[tuple[str, ...], dict[str, int]]:
        """The expected sums grouped by any of tenant, key, model."""
        index = {"tenant": 0, "key": 1, "model": 2}
        out: dict[tuple[str, ...], dict[str, int]] = {}
        for group, sums in self.expected.items():
            label = tuple(group[index[f]] for f in fields)
            out[label] = add(out.get(label, {}), sums)
        return out


def rows(response: httpx.Response, *fields: str) -> dict[tuple[str, ...], dict]:
    """The report's lines by their group values, measures only."""
    data = exact_json(response)["data"]
    return {
        tuple(r[f] for f in fields): {m: r[m] for m in (*MEASURES, "cache_hit_ratio")} for r in data
    }


def test_json_report_sums_the_traffic_of_all_replicas_exactly(cluster):
    response = cluster.admin(group_by="tenant,key,model")
    assert response.status_code == 200
    assert exact_json(response)["object"] == "list"
    got = rows(response, "tenant", "key", "model")
    assert got == {
        group: as_shown(sums) for group, sums in cluster.sums("tenant", "key", "model").items()
    }


def test_every_replica_answers_the_same_report(cluster):
    bodies = {cluster.admin(replica=i, group_by="key,model").content for i in range(3)}
    assert len(bodies) == 1


def test_lines_are_sorted_by_their_group_values_in_group_by_order(cluster):
    data = cluster.admin(group_by="model,key").json()["data"]
    assert [list(r)[:2] for r in data] == [["model", "key"]] * len(data)
    assert [(r["model"], r["key"]) for r in data] == sorted((r["model"], r["key"]) for r in data)


def test_default_groups_by_day_tenant_key_and_model(cluster):
    data = cluster.admin().json()["data"]
    assert all(
        list(r) == ["day", "tenant", "key", "model", *MEASURES, "cache_hit_ratio"] for r in data
    )
    days = {date.fromisoformat(r["day"]) for r in data}
    assert days <= {cluster.first, cluster.first + timedelta(days=1), cluster.last}
    assert sum(r["requests"] for r in data) == 24


def test_an_aliased_model_is_reported_under_the_name_the_client_sent(cluster):
    got = rows(cluster.admin(group_by="model", key="b-prod"), "model")
    assert got == {
        (MODEL,): as_shown(cluster.sums("key", "model")[("b-prod", MODEL)]),
        (ALIAS,): as_shown(cluster.sums("key", "model")[("b-prod", ALIAS)]),
    }


def test_key_without_a_tenant_is_reported_under_tenant_dash(cluster):
    got = rows(cluster.admin(group_by="tenant"), "tenant")
    assert set(got) == {("alpha",), ("beta",), ("-",)}
    assert got[("-",)] == as_shown(cluster.sums("tenant")[("-",)])


def test_empty_group_by_answers_one_line_of_totals(cluster):
    [line] = exact_json(cluster.admin(group_by=""))["data"]
    assert line == as_shown(cluster.sums()[()])


def test_tenant_and_key_filters_narrow_the_report(cluster):
    by_tenant = rows(cluster.admin(group_by="key", tenant="alpha"), "key")
    assert set(by_tenant) == {("a-prod",), ("a-dev",)}
    by_key = rows(cluster.admin(group_by="model", key="a-prod"), "model")
    expected = {
        (m,): as_shown(s) for (k, m), s in cluster.sums("key", "model").items() if k == "a-prod"
    }
    assert by_key == expected


def test_a_range_without_traffic_has_no_lines(cluster):
    response = cluster.admin(**{"from": "2020-01-01", "to": "2020-01-31"})
    assert response.json() == {"object": "list", "data": []}


def test_csv_header_follows_group_by_then_the_six_measures(cluster):
    response = cluster.admin(group_by="model,tenant", format="csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    lines = response.text.split("\r\n")
    assert lines[0] == "model,tenant," + ",".join(MEASURES)
    assert lines[-1] == ""  # every line ends in CRLF


def test_csv_costs_are_exact_sums_of_ticks(cluster):
    table = list(csv.DictReader(io.StringIO(cluster.admin(group_by="key", format="csv").text)))
    expected = cluster.sums("key")
    assert {r["key"] for r in table} == {k for (k,) in expected}
    for row in table:
        sums = expected[(row["key"],)]
        assert row["cost_usd"] == usd_text(sums["cost_ticks"])
        assert Decimal(row["cost_usd"]) * 10**10 == sums["cost_ticks"]
        assert int(row["requests"]) == sums["requests"]
        assert int(row["output_tokens"]) == sums["output_tokens"]


def test_tenant_key_and_no_key_get_401(cluster):
    tenant_secret = KEYS["a-prod"][0]
    for secret in (tenant_secret, None, "gk-not-a-key"):
        response = cluster.admin(secret=secret)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"from": None}, "from"),
        ({"to": None}, "to"),
        ({"from": "2026-13-01"}, "from"),
        ({"from": "20260101"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "from"),
        ({"from": "2025-01-01", "to": "2026-02-05"}, "to"),
        ({"group_by": "day,customer"}, "group_by"),
        ({"group_by": "key,key"}, "group_by"),
        ({"format": "xml"}, "format"),
        ({"tenant": "no spaces please"}, "tenant"),
        ({"key": ""}, "key"),
        ({"granularity": "day"}, "granularity"),
    ],
)
def test_bad_parameters_get_400_naming_the_parameter(cluster, query, param):
    params = {"from": str(cluster.first), "to": str(cluster.last), **query}
    response = httpx.get(
        f"{cluster.procs[0].url}/admin/v1/usage",
        params={k: v for k, v in params.items() if v is not None},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request_error", param)
    assert param in error["message"]


def test_a_repeated_parameter_gets_400(cluster):
    url = f"{cluster.procs[0].url}/admin/v1/usage?from=2026-01-01&to=2026-01-02&to=2026-01-03"
    response = httpx.get(url, headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "to"


def test_admin_requests_are_logged_under_the_admin_key(cluster):
    response = httpx.get(
        f"{cluster.procs[1].url}/admin/v1/usage",
        params={"from": str(cluster.first), "to": str(cluster.last)},
        headers={"Authorization": f"Bearer {ADMIN}", "X-Request-ID": "admin-log-1"},
    )
    assert response.status_code == 200
    time.sleep(0.2)
    output = cluster.procs[1].read_output()
    [line] = [json.loads(x) for x in output.splitlines() if "admin-log-1" in x]
    assert (line["path"], line["key_id"], line["admin"], line["status"]) == (
        "/admin/v1/usage",
        "ops",
        True,
        200,
    )
    assert ADMIN not in output


def test_without_redis_the_admin_api_reads_the_gateways_own_ledger(simulator, tmp_path):
    keys = tmp_path / "keys.toml"
    secret = KEYS["a-prod"][0]
    keys.write_text(
        '[defaults]\nrequests = "100/minute"\n'
        + key_entry("a-prod", secret, tenant="alpha")
        + admin_entry("ops", ADMIN)
    )
    gw = start_gateway(gateway_env(simulator, str(keys)))
    try:
        sent = measured(chat(gw.url, secret).json()["usage"])
        sent = add(sent, measured(chat(gw.url, secret, "once again").json()["usage"]))
        today = datetime.now(UTC).date()
        response = eventually(
            lambda: httpx.get(
                f"{gw.url}/admin/v1/usage",
                params={"from": str(today - timedelta(days=1)), "to": str(today), "group_by": ""},
                headers={"Authorization": f"Bearer {ADMIN}"},
            ),
            lambda r: r.json()["data"][0]["requests"] == 2,
        )
        assert exact_json(response)["data"] == [as_shown(sent)]
    finally:
        gw.stop()


# --- the command line --------------------------------------------------------------------


def cli(*args: str, redis_url: str | None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "service", "usage", *args], env=env, capture_output=True
    )


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_cli_prints_what_the_admin_api_answers(cluster, fmt):
    group_by = "tenant,model,key"
    api = cluster.admin(group_by=group_by, format=fmt)
    done = cli(
        "--from", str(cluster.first), "--to", str(cluster.last),
        "--group-by", group_by, "--format", fmt,
        redis_url=cluster.redis.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == api.content + (b"\n" if fmt == "json" else b"")


def test_cli_table_shows_exact_costs_and_a_total(cluster):
    done = cli(
        "--from", str(cluster.first), "--to", str(cluster.last), "--group-by", "tenant",
        redis_url=cluster.redis.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].split() == ["tenant", *MEASURES]
    total = cluster.sums()[()]
    assert lines[-1].split() == [
        "total",
        *(str(total[m]) for m in MEASURES[:-1]),
        usd_text(total["cost_ticks"]),
    ]


def test_cli_without_redis_url_points_at_the_admin_api():
    done = cli("--from", "2026-01-01", "--to", "2026-01-31", redis_url=None)
    assert done.returncode == 2
    message = done.stderr.decode()
    assert "REDIS_URL is not set" in message and "GET /admin/v1/usage" in message
    assert "Traceback" not in message


def test_cli_with_a_bad_redis_url_says_so_in_one_line():
    done = cli("--from", "2026-01-01", "--to", "2026-01-31", redis_url="http://localhost")
    assert done.returncode == 2
    assert done.stderr.decode().count("\n") == 1
    assert "REDIS_URL" in done.stderr.decode()


def test_cli_with_unreachable_redis_fails_in_one_line():
    port = free_port()
    done = cli(
        "--from", "2026-01-01", "--to", "2026-01-31", redis_url=f"redis://127.0.0.1:{port}/0"
    )
    assert done.returncode == 1
    assert done.stderr.decode() == (
        f"grok-gateway usage: cannot read the ledger: Redis at 127.0.0.1:{port} is unreachable\n"
    )


def test_cli_bad_parameter_names_the_option():
    done = cli("--from", "2026-02-01", "--to", "2026-01-01", redis_url=None)
    assert done.returncode == 2
    assert done.stderr.decode().startswith("grok-gateway usage: --from:")


# --- the examples of docs/billing-and-usage.md that need an admin key and Redis --------------


def billing_example(phrase: str):
    from tests.support.doc_examples import examples_in

    (example,) = [e for e in examples_in("docs/billing-and-usage.md") if phrase in e.code]
    assert example.tested_by == "tests/integration/test_admin_usage.py"
    return example


def run_pasted(code: str, tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.sh"
    script.write_text(code)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "REDIS_"))}
    return subprocess.run(
        ["bash", "-euo", "pipefail", str(script)],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_docs_admin_csv_export_runs_as_pasted(cluster, tmp_path):
    example = billing_example("ADMIN_KEY")
    # The reader puts the admin key where the text says; the port is this run's replica's.
    code = example.code.replace("gk-admin-...", ADMIN).replace(
        "localhost:8000", f"localhost:{cluster.procs[0].port}"
    )
    done = run_pasted(code, tmp_path)
    assert done.returncode == 0, done.stderr
    (written,) = tmp_path.glob("usage-*.csv")
    header = written.read_text().splitlines()[0]
    assert header == "tenant,model," + ",".join(MEASURES)


def test_the_docs_usage_commands_run_as_pasted_with_the_gateways_redis_url(cluster, tmp_path):
    example = billing_example("python -m service usage")
    done = run_pasted(example.code, tmp_path, REDIS_URL=cluster.redis.url)
    assert done.returncode == 0, done.stderr
    (written,) = tmp_path.glob("usage-*.csv")
    assert written.read_text().splitlines()[0] == "tenant,model," + ",".join(MEASURES)
    table = done.stdout.splitlines()
    assert table[0].split() == ["tenant", *MEASURES] and table[-1].split()[0] == "total"
