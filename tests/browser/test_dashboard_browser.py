"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): an operator logs
in, creates a tenant and edits its quota, reads a job's loss curve and a deployment's charts,
and logs out; a tenant key is refused. No page logs a console error. A screenshot of every page
lands in the test's tmp_path (docs/img/dashboard-*.png were taken this way)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from moeplane.api.app import create_app
from moeplane.config import Settings
from moeplane.limits import MemoryLimiter
from moeplane.store.db import Database
from moeplane.store.models import Quota, Tenant
from tests.browser.seed import EVIL_NAME, EXPERTS, LAYERS, seed_platform
from tests.factories import make_admin_key

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow


def _chromium() -> str:
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture
def site(tmp_path, sqlite_template, live_server_factory):
    path = tmp_path / "moeplane.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite:///{path}")
    seeded = seed_platform(db)
    admin_key = make_admin_key(db)["Authorization"].removeprefix("Bearer ")
    settings = Settings(
        home=tmp_path / "home",
        database_url=db.url,
        redis_url=None,
        storage_uri=(tmp_path / "storage").as_uri(),
        ray_dashboard_url="http://127.0.0.1:9",  # nothing listens: "Ray unreachable"
    )
    server = live_server_factory(create_app(settings, db=db, limiter=MemoryLimiter()))
    yield server.url, db, seeded, admin_key
    db.dispose()


class Watched:
    """A page whose console errors, uncaught exceptions and dialogs are collected."""

    def __init__(self, page, shots: Path):
        self.page = page
        self.shots = shots
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:  # an alert() would be an XSS
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"dashboard-{name}.png"), full_page=True)


def test_operator_journey(browser, site, tmp_path):
    url, db, seeded, admin_key = site
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    w = Watched(context.new_page(), tmp_path)
    page = w.page
    page.set_default_timeout(10_000)

    # a tenant key cannot open the dashboard
    page.goto(f"{url}/admin/tenants")
    assert page.url.startswith(f"{url}/admin/login")
    w.shot("login")
    page.fill("input[name=api_key]", seeded.acme.key)
    page.click("button[type=submit]")
    assert "tenant key" in page.inner_text("[role=alert]")
    assert page.url.startswith(f"{url}/admin/login")
    # the refusal is a 403 document, which Chromium reports on the console; nothing else may be
    assert w.problems == [
        "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    ]
    w.problems.clear()

    # an admin key does, and lands where it was going
    page.fill("input[name=api_key]", admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/admin/tenants")
    cookie = next(c for c in context.cookies() if c["name"] == "mp_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    # tenants: the XSS-looking name is plain text, and nothing ran
    assert page.get_by_text(EVIL_NAME).count() == 1
    w.shot("tenants")

    # overview: Ray is down and says so; the traffic charts are drawn
    page.click("nav >> text=Overview")
    page.wait_for_selector("#cluster[data-state=unreachable]")
    assert "Ray unreachable" in page.inner_text("#cluster")
    page.wait_for_selector("#chart-requests[data-state=ready] svg path")
    page.wait_for_selector("#chart-tokens[data-state=ready] svg path")
    w.shot("overview")

    # create a tenant, edit its quota, issue a key (shown once)
    page.click("nav >> text=Tenants")
    page.fill("#create-tenant input[name=name]", "globex")
    page.click("#create-tenant button")
    page.wait_for_selector("text=Tenant created.")
    page.fill("#quota-form input[name=rpm]", "4321")
    page.fill("#quota-form input[name=monthly_tokens]", "2500000")
    page.click("#quota-form button")
    page.wait_for_selector("text=Quota saved.")
    assert page.input_value("#quota-form input[name=rpm]") == "4321"
    with db.session() as s:
        tenant = s.scalars(select(Tenant).where(Tenant.name == "globex")).one()
        quota = s.get(Quota, tenant.id)
        assert (quota.rpm, quota.monthly_tokens) == (4321, 2_500_000)
    page.fill("#create-key input[name=name]", "backend")
    page.click("#create-key button")
    assert page.inner_text("#new-key").startswith("mp-")
    w.shot("tenant")

    # a finished job: loss curve with checkpoints, events, its resulting version
    page.click("nav >> text=Fine-tuning")
    page.click(f"a[href='/admin/jobs/{seeded.done_job_id}']")
    page.wait_for_selector("#chart-loss[data-state=ready] svg path")
    assert page.locator("#chart-loss svg circle").count() == 36
    assert "step (of 36)" in page.inner_text("#chart-loss")
    assert "Checkpoint saved at step 36" in page.content()
    w.shot("job")

    page.click("nav >> text=Models")
    assert page.locator(f"a[href='/admin/jobs/{seeded.done_job_id}']").count() == 1
    w.shot("models")

    # a deployment: replicas, latency, tokens/s, and the expert-load heatmap
    page.click("nav >> text=Deployments")
    assert "2 / 1 / 3" in page.inner_text("table")
    w.shot("deployments")
    page.click(f"a[href='/admin/deployments/{seeded.deployment_id}']")
    for chart in ("requests", "latency", "tokens", "experts"):
        page.wait_for_selector(f"#chart-{chart}[data-state=ready] svg")
    assert page.locator("#chart-experts svg rect[width]").count() == LAYERS * EXPERTS + 1
    w.shot("deployment")

    page.click("nav >> text=Usage")
    page.wait_for_selector("#chart-usage[data-state=ready] svg path")
    w.shot("usage")
    page.click("nav >> text=Audit log")
    assert "quota.update" in page.inner_text("table")
    w.shot("audit")

    # log out: the session is gone
    page.click("text=Log out")
    page.wait_for_url(f"{url}/admin/login**")
    page.goto(f"{url}/admin")
    assert page.url.startswith(f"{url}/admin/login")
    assert not [c for c in context.cookies() if c["name"] == "mp_session"]

    assert w.problems == []
    context.close()
