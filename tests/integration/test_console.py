"""The web console at /console (SPEC section 12), driven in a real headless Chromium against a
real gateway on Redis: an operator and a tenant sign in, a tenant named as an HTML payload is
text, the key lives in the tab's sessionStorage and goes as a bearer header, and the page asks
nothing of another host. Screenshots are kept in .artifacts/console/."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis as redis_py

from tests.support.keyfiles import MODEL, key_entry
from tests.support.processes import REPO, Proc, gateway_env, start_gateway, start_redis
from tests.support.usage import admin_entry

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / ".artifacts" / "console"
ADMIN = "gk-admin-console-0123456789"
ACME = "gk-console-acme-0123456789"
GLOBEX = "gk-console-globex-0123456789"
HOSTILE = "<img src=x onerror=alert(1)>"
KEYS_TOML = (
    '[defaults]\nrequests = "1000/minute;100000/day"\n\n'
    '[tenants.acme]\nspend = "5/day;50/month"\ntokens = "1000000/day"\n\n'
    + key_entry("acme-prod", ACME, 'spend = "1/day;20/month"\ntokens = "50000/day"', "acme")
    + key_entry("globex-web", GLOBEX, tenant="globex")
    + admin_entry("ops", ADMIN)
)


def _playwright():
    """Playwright's sync API and the system Chromium; without them, skip (fail under CI)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.path.exists(CHROMIUM):
        reason = f"the console tests need the playwright package and {CHROMIUM} (apt chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_playwright


@dataclass
class Site:
    gateway: Proc
    redis_url: str


@pytest.fixture(scope="module")
def site(simulator: Proc, tmp_path_factory) -> Iterator[Site]:
    """A gateway on its own Redis with traffic from two tenants, and a ledger row of a tenant
    whose name is an HTML payload (the key file refuses such names; a ledger written by
    anything else may hold one, and the console must still show it as text)."""
    redis = start_redis()
    keys = tmp_path_factory.mktemp("console") / "keys.toml"
    keys.write_text(KEYS_TOML)
    gw = start_gateway(gateway_env(simulator, str(keys), REDIS_URL=redis.url))
    for secret in (ACME, GLOBEX, ACME):
        response = httpx.post(
            f"{gw.url}/api/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hello " * 40}]},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=15,
        )
        assert response.status_code == 200, response.text
    store = redis_py.Redis.from_url(redis.url)
    today = datetime.now(UTC).date()
    # The month before: the ledger rows a month of both tenants' traffic leaves behind.
    for back in range(1, 30):
        day = (today - timedelta(days=back)).isoformat()
        for key_id, tenant, scale in (("acme-prod", "acme", 3), ("globex-web", "globex", 2)):
            requests = 40 + (back * 37 * scale) % 90
            store.hset(
                f"gw:{{t:{tenant}}}:led:{day}:{key_id}",
                mapping={
                    f"r|{MODEL}": requests,
                    f"i|{MODEL}": requests * 900,
                    f"o|{MODEL}": requests * 400,
                    f"$|{MODEL}": requests * 25_000_000 * scale,
                },
            )
    for back in (0, 3, 9):
        day = (today - timedelta(days=back)).isoformat()
        store.hset(
            f"gw:{{t:{HOSTILE}}}:led:{day}:hostile-key",
            mapping={f"r|{MODEL}": 2, f"i|{MODEL}": 300, f"o|{MODEL}": 700, f"$|{MODEL}": 10**8},
        )
    store.close()
    yield Site(gw, redis.url)
    gw.stop()
    redis.stop()


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _playwright()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@dataclass
class Session:
    """One browser tab on the console, with what it asked for and what it raised."""

    page: object
    requests: list = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def open_console(browser, site: Site, key: str | None, ready: str | None = None) -> Session:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    session = Session(page)
    page.on("request", lambda request: session.requests.append(request))
    page.on("dialog", lambda dialog: (session.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{site.gateway.url}/console")
    if key is not None:
        page.fill("#login-key", key)
        page.click("#login-form button[type=submit]")
        if ready is not None:
            page.wait_for_selector(ready, timeout=15000)
    return session


def screenshot(session: Session, name: str) -> None:
    session.page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_the_console_is_served_with_a_strict_content_security_policy(site):
    for path in ("/console", "/console/app.js", "/console/app.css"):
        response = httpx.get(f"{site.gateway.url}{path}")
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["connect-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "set-cookie" not in response.headers


def test_the_page_holds_no_inline_script_and_names_no_other_host(site):
    html = httpx.get(f"{site.gateway.url}/console").text
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all('src="/console/' in tag for tag in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    for path in ("/console", "/console/app.js", "/console/app.css"):
        text = httpx.get(f"{site.gateway.url}{path}").text
        assert not re.search(
            r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text.replace("http://www.w3.org/2000/svg", "")
        )


def test_the_admin_status_names_every_budget_in_force_and_the_replica(site):
    response = httpx.get(
        f"{site.gateway.url}/admin/v1/status", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 200
    doc = response.json()
    assert doc["replica"]["upstream"] == "ok" and doc["replica"]["limiter"] == "redis"
    assert doc["replica"]["active_streams"] == 0
    keys = {key["id"]: key for key in doc["keys"]}
    assert set(keys) == {"acme-prod", "globex-web"}
    acme = keys["acme-prod"]
    assert [w["limit"] for w in acme["requests"]] == [1000, 100000]  # from [defaults]
    assert [(s["usd"], s["period"]) for s in acme["spend"]] == [(1.0, "day"), (20.0, "month")]
    tenants = {tenant["id"]: tenant for tenant in doc["tenants"]}
    assert [(s["usd"], s["period"]) for s in tenants["acme"]["spend"]] == [
        (5.0, "day"),
        (50.0, "month"),
    ]
    assert tenants["globex"]["spend"] == []


@pytest.mark.parametrize("secret", [ACME, None])
def test_the_admin_status_is_for_admin_keys_only(site, secret):
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    response = httpx.get(f"{site.gateway.url}/admin/v1/status", headers=headers)
    assert response.status_code == 401


def test_an_unknown_console_file_is_a_404(site):
    response = httpx.get(f"{site.gateway.url}/console/secrets.txt")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_operator_sees_spend_per_day_by_tenant_as_a_chart_and_a_table(browser, site):
    session = open_console(browser, site, ADMIN, ready=".chart rect.bar")
    page = session.page
    legend = page.locator(".legend-item").all_text_contents()
    assert {"acme", "globex", HOSTILE} <= set(legend)
    rows = page.locator("section.card", has_text="Tenants").locator("tbody tr")
    tenants = [row.locator("td").first.text_content() for row in rows.all()]
    assert {"acme", "globex", HOSTILE} <= set(tenants)
    acme = rows.filter(has_text="acme").first
    assert "$5.00 today" in acme.text_content()  # the tenant's daily spend budget, against use
    assert "/ $50.00 this month" in acme.text_content()
    keys = page.locator("section.card", has_text="Keys").locator("tbody tr")
    assert {"acme-prod", "globex-web"} <= set(
        row.locator("td").first.text_content() for row in keys.all()
    )
    assert page.locator(".kpi", has_text="Upstream").locator(".kpi-value").text_content() == "ok"
    screenshot(session, "operator.png")
    page.click(".toggle button:text('Tokens')")
    page.wait_for_selector(".toggle button.on:text('Tokens')")
    screenshot(session, "operator-tokens.png")
    assert session.dialogs == []


def test_a_tenant_named_as_html_is_shown_as_text(browser, site):
    session = open_console(browser, site, ADMIN, ready=".chart rect.bar")
    page = session.page
    shown = page.get_by_text(HOSTILE, exact=True)
    assert shown.count() >= 2  # the legend and the tenants table, at least
    assert shown.first.is_visible()
    assert page.locator("img").count() == 0
    assert session.dialogs == []
    assert not [r for r in session.requests if r.url.rstrip("/").endswith("/x")]


def test_a_tenant_sees_its_own_budgets_and_usage_and_nothing_of_others(browser, site):
    session = open_console(browser, site, ACME, ready=".chart rect")
    page = session.page
    text = page.locator("main").inner_text()
    assert "acme-prod" in text
    assert "globex" not in text and HOSTILE not in text and "hostile-key" not in text
    labels = page.locator(".chart text.label").all_text_contents()
    assert "key · spend per day" in labels and "tenant · spend per month" in labels
    assert page.locator(".role").text_content() == "Tenant"
    screenshot(session, "tenant.png")
    paths = {r.url.split(site.gateway.url, 1)[-1] for r in session.requests}
    assert not any(p.startswith("/admin/") for p in paths if "status" not in p)


def test_the_key_lives_in_session_storage_and_goes_as_a_bearer_header(browser, site):
    session = open_console(browser, site, ACME, ready=".chart rect")
    page = session.page
    assert page.context.cookies() == []
    assert page.evaluate("Object.values(sessionStorage)") == [ACME]
    calls = [r for r in session.requests if "/api/v1/usage" in r.url]
    assert calls and all(r.headers["authorization"] == f"Bearer {ACME}" for r in calls)
    page.reload()  # the same tab keeps it
    page.wait_for_selector(".chart rect")
    other = page.context.new_page()  # another tab does not
    other.goto(f"{site.gateway.url}/console")
    other.wait_for_selector("#login-key")
    assert other.is_visible("#login-key")
    page.click("button:text('Sign out')")
    page.wait_for_selector("#login-key")
    assert page.evaluate("sessionStorage.length") == 0


def test_a_key_the_gateway_refuses_gets_a_message(browser, site):
    session = open_console(browser, site, "gk-not-a-key")
    session.page.wait_for_selector("#login-error:text('did not accept')")
    assert session.page.evaluate("sessionStorage.length") == 0


def test_the_page_asks_nothing_of_another_host(browser, site):
    sessions = [
        open_console(browser, site, ADMIN, ready=".chart rect.bar"),
        open_console(browser, site, ACME, ready=".chart rect"),
    ]
    for session in sessions:
        session.page.click("button:text('Refresh')")
        session.page.wait_for_load_state("networkidle")
    urls = [r.url for session in sessions for r in session.requests]
    assert len(urls) >= 8
    assert all(url.startswith(site.gateway.url + "/") for url in urls), urls


def _keys_api(site: Site) -> bool:
    response = httpx.get(
        f"{site.gateway.url}/admin/v1/keys", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    return response.status_code == 200


def _models(site: Site, secret: str) -> int:
    response = httpx.get(
        f"{site.gateway.url}/api/v1/models", headers={"Authorization": f"Bearer {secret}"}
    )
    return response.status_code


def test_an_operator_creates_rotates_disables_and_deletes_a_key(browser, site):
    if not _keys_api(site):
        pytest.skip("this gateway has no admin keys API (SPEC 10) to manage keys through")
    session = open_console(browser, site, ADMIN, ready=".chart rect.bar")
    page = session.page
    form = page.locator("form.create")
    form.locator("input[name=tenant]").fill("initech")
    form.locator("input[name=id]").fill("initech-ci")
    form.locator("input[name=requests]").fill("60/minute")
    form.locator("input[name=spend]").fill("2/day")
    form.locator("button[type=submit]").click()
    secret = page.locator(".secret-panel input.secret").input_value()
    assert secret and _models(site, secret) == 200  # the new key works at once
    screenshot(session, "operator-new-key.png")
    page.click(".secret-panel button:text('Done')")
    page.wait_for_selector(".secret-panel", state="detached")
    assert secret not in page.content()  # shown once, then gone from the page
    row = page.locator("tr[data-key='initech-ci']")
    assert "initech" in row.text_content()

    row.locator("button:text('Rotate')").click()
    rotated = page.locator(".secret-panel input.secret").input_value()
    assert rotated and rotated != secret and _models(site, rotated) == 200
    page.click(".secret-panel button:text('Done')")

    row.locator("button:text('Disable')").click()
    page.wait_for_selector("tr[data-key='initech-ci'] .pill.disabled")
    assert _models(site, rotated) == 401
    row.locator("button:text('Enable')").click()
    page.wait_for_selector("tr[data-key='initech-ci'] .pill.active")
    assert _models(site, rotated) == 200

    row.locator("button:text('Delete')").click()
    row.locator("button:text('Really delete?')").click()
    # Gone from the keys; its row stays, marked removed, for what it spent this month.
    page.wait_for_selector("tr[data-key='initech-ci'] .pill.removed")
    assert "Rotate" not in row.text_content()
    assert _models(site, rotated) == 401
    assert session.dialogs == []


def test_keys_from_the_key_file_cannot_be_changed_from_the_console(browser, site):
    session = open_console(browser, site, ADMIN, ready=".chart rect.bar")
    row = session.page.locator("tr[data-key='acme-prod']")
    assert "edit the key file" in row.text_content()
    assert row.locator("button").count() == 0
