"""The dashboard over HTTP: sessions, CSRF, roles, escaping, and that its forms do what the admin
API does — on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from moeplane.api.app import create_app
from moeplane.config import Settings
from moeplane.limits import MemoryLimiter
from moeplane.store.models import ApiKey, AuditEntry, FineTuneJob, Quota, Tenant
from tests.browser.seed import EVIL_NAME, seed_platform
from tests.factories import make_tenant

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def login(client: TestClient, key: str, next_url: str = "/admin"):
    form = client.get("/admin/login")
    token = CSRF.search(form.text).group(1)
    return client.post(
        "/admin/login",
        data={"csrf_token": token, "api_key": key, "next": next_url},
        follow_redirects=False,
    )


def csrf_of(client: TestClient, path: str = "/admin/tenants") -> str:
    return CSRF.search(client.get(path).text).group(1)


@pytest.fixture
def operator(client, admin_headers) -> TestClient:
    assert login(client, _key(admin_headers)).status_code == 303
    return client


def test_pages_and_dashboard_json_need_a_session(client, admin_headers):
    for path in ("/admin", "/admin/tenants", "/admin/jobs/x", "/admin/usage.csv", "/admin/audit"):
        page = client.get(path, follow_redirects=False)
        assert page.status_code == 303, path
        assert page.headers["location"].startswith("/admin/login?next=")
    # an admin key in a header is the API's auth, not the dashboard's: still no session
    assert client.get("/admin", headers=admin_headers, follow_redirects=False).status_code == 303
    assert client.get("/admin/api/overview").status_code == 401
    assert client.get("/admin/api/cluster").status_code == 401
    refused = client.post("/admin/tenants", data={"name": "sneaky"}, follow_redirects=False)
    assert refused.status_code == 401
    listed = client.get("/v1/admin/tenants", headers=admin_headers).json()["data"]
    assert listed == []


def test_login_sets_a_strict_httponly_expiring_cookie(client, admin_headers):
    response = login(client, _key(admin_headers), next_url="/admin/usage")
    assert response.status_code == 303 and response.headers["location"] == "/admin/usage"
    raw = next(v for v in response.headers.get_list("set-cookie") if v.startswith("mp_session="))
    cookie = SimpleCookie(raw)["mp_session"]
    assert cookie["httponly"] and cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/admin" and 0 < int(cookie["max-age"]) <= 8 * 3600
    assert _key(admin_headers) not in raw  # the key itself never goes into the cookie
    assert client.get("/admin/usage").status_code == 200


def test_tenant_keys_bad_keys_and_forms_without_token_cannot_log_in(client, database):
    tenant = make_tenant(database)
    refused = login(client, tenant.key)
    assert refused.status_code == 403 and "tenant key" in refused.text
    assert "mp_session" not in client.cookies
    assert login(client, "mp-not-a-real-key-at-all-000000").status_code == 401
    no_token = client.post("/admin/login", data={"api_key": tenant.key}, follow_redirects=False)
    assert no_token.status_code == 403 and "mp_session" not in client.cookies
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_open_redirects_are_not_followed(client, admin_headers):
    for target in ("https://evil.example/", "//evil.example/admin", "/admin\\@evil", "/v1/me"):
        client.cookies.clear()
        assert login(client, _key(admin_headers), target).headers["location"] == "/admin"


def test_forms_without_the_csrf_token_are_refused(operator, database):
    for data in ({"name": "nope"}, {"name": "nope", "csrf_token": "forged"}):
        refused = operator.post("/admin/tenants", data=data, follow_redirects=False)
        assert refused.status_code == 403
    with database.session() as s:
        assert s.scalars(select(Tenant)).all() == []
    created = operator.post(
        "/admin/tenants",
        data={"name": "acme", "csrf_token": csrf_of(operator)},
        follow_redirects=False,
    )
    assert created.status_code == 303
    assert created.headers["location"].startswith("/admin/tenants/ten-")


def test_a_token_belongs_to_its_session(operator, app, admin_headers):
    token = csrf_of(operator)
    with TestClient(app) as other:
        login(other, _key(admin_headers))
        assert csrf_of(other) != token
        stolen = other.post("/admin/tenants", data={"name": "x", "csrf_token": token})
        assert stolen.status_code == 403


def test_tampered_cookies_and_revoked_keys_end_the_session(client, database, admin_headers):
    login(client, _key(admin_headers))
    good = client.cookies["mp_session"]
    body, mac = good.split(".")
    for forged in (body + "." + mac[::-1], body[:-2] + "xx." + mac, "garbage", body):
        client.cookies.clear()
        client.cookies.set("mp_session", forged, path="/admin")
        assert client.get("/admin", follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.set("mp_session", good, path="/admin")
    assert client.get("/admin").status_code == 200
    with database.session() as s:
        key = s.scalars(select(ApiKey).where(ApiKey.role == "admin")).one()
        key_id = key.id
    with TestClient(client.app) as api:
        api.delete(f"/v1/admin/keys/{key_id}", headers=admin_headers)
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_logout_needs_the_token_and_ends_the_session(operator):
    token = csrf_of(operator)
    refused = operator.post("/admin/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403
    out = operator.post("/admin/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"].startswith("/admin/login")
    assert "mp_session" not in operator.cookies
    assert operator.get("/admin", follow_redirects=False).status_code == 303


def test_sessions_hold_across_api_replicas_sharing_the_secret(tmp_path, database, admin_headers):
    """Two API processes with the same MOEPLANE_ADMIN_KEY (as compose and Kubernetes run them)
    accept each other's cookies; with neither that nor a shared home, they do not."""

    def replica(home: str, admin_key: str | None = None):
        settings = Settings(
            home=tmp_path / home, database_url=database.url, admin_key=admin_key, redis_url=None
        )
        return create_app(settings, db=database, limiter=MemoryLimiter())

    shared = "mp-shared-bootstrap-secret-0123456789"
    with TestClient(replica("a", shared)) as a, TestClient(replica("b", shared)) as b:
        login(a, _key(admin_headers))
        b.cookies.set("mp_session", a.cookies["mp_session"], path="/admin")
        assert b.get("/admin", follow_redirects=False).status_code == 200
    with TestClient(replica("c")) as c, TestClient(replica("d")) as d:
        login(c, _key(admin_headers))
        d.cookies.set("mp_session", c.cookies["mp_session"], path="/admin")
        assert d.get("/admin", follow_redirects=False).status_code == 303
    with TestClient(replica("c")) as c2:  # same home: same generated secret
        c2.cookies.set("mp_session", c.cookies["mp_session"], path="/admin")
        assert c2.get("/admin", follow_redirects=False).status_code == 200


def test_xss_looking_names_are_escaped_everywhere(operator, database):
    seeded = seed_platform(database)
    pages = [
        "/admin",
        "/admin/tenants",
        f"/admin/tenants/{seeded.evil.id}",
        f"/admin/jobs?tenant_id={seeded.evil.id}",
        f"/admin/jobs/{seeded.queued_job_id}",
        "/admin/deployments",
        "/admin/usage",
        "/admin/audit",
    ]
    for path in pages:
        page = operator.get(path)
        assert page.status_code == 200, path
        assert EVIL_NAME not in page.text and "<script>alert" not in page.text, path
        assert "onerror=alert" not in page.text.replace("onerror=alert(1)&gt;", ""), path
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in operator.get(pages[1]).text
    csv = operator.get("/admin/usage.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert EVIL_NAME in csv.text  # data, not markup: a CSV is not rendered


def test_csv_cells_that_look_like_formulas_are_quoted(operator, database, admin_headers):
    from moeplane.store.usage import record_usage

    tenant = make_tenant(database, "=HYPERLINK(1)")
    with database.session() as s:
        record_usage(s, tenant.id, "completion_tokens", 5)
    rows = operator.get("/admin/usage.csv").text.splitlines()
    assert rows[0] == "period,tenant_id,tenant,kind,amount"
    assert rows[1].endswith(",'=HYPERLINK(1),completion_tokens,5")


def test_quota_edit_and_key_shown_once(operator, database, admin_headers):
    tenant = make_tenant(database, "acme")
    token = csrf_of(operator, f"/admin/tenants/{tenant.id}")
    saved = operator.post(
        f"/admin/tenants/{tenant.id}/quota",
        data={"csrf_token": token, "rpm": "1234", "tpm": "", "max_replicas": "7"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    quota = operator.get(f"/v1/admin/tenants/{tenant.id}/quota", headers=admin_headers).json()
    assert quota["rpm"] == 1234 and quota["max_replicas"] == 7 and quota["tpm"] == 100_000
    assert "Quota saved." in operator.get(saved.headers["location"]).text

    invalid = operator.post(
        f"/admin/tenants/{tenant.id}/quota", data={"csrf_token": token, "rpm": "0"}
    )
    assert invalid.status_code == 422 and "rpm" in invalid.text
    with database.session() as s:
        assert s.get(Quota, tenant.id).rpm == 1234

    created = operator.post(
        f"/admin/tenants/{tenant.id}/keys", data={"csrf_token": token, "name": "backend"}
    )
    secret = re.search(r'id="new-key"[^>]*>(mp-[^<]+)<', created.text).group(1)
    assert operator.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert secret not in operator.get(f"/admin/tenants/{tenant.id}").text
    with database.session() as s:
        actions = s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["quota.update", "key.create"]


def test_suspend_reactivate_and_revoke(operator, database, admin_headers):
    tenant = make_tenant(database, "acme")
    token = csrf_of(operator, f"/admin/tenants/{tenant.id}")
    me = {"Authorization": f"Bearer {tenant.key}"}
    operator.post(
        f"/admin/tenants/{tenant.id}/status", data={"csrf_token": token, "status": "suspended"}
    )
    assert operator.get("/v1/me", headers=me).status_code == 403
    bad = operator.post(
        f"/admin/tenants/{tenant.id}/status", data={"csrf_token": token, "status": "deleted"}
    )
    assert bad.status_code == 422
    operator.post(
        f"/admin/tenants/{tenant.id}/status", data={"csrf_token": token, "status": "active"}
    )
    assert operator.get("/v1/me", headers=me).status_code == 200
    revoked = operator.post(
        f"/admin/keys/{tenant.key_id}/revoke",
        data={"csrf_token": token, "tenant_id": tenant.id},
        follow_redirects=False,
    )
    assert revoked.headers["location"] == f"/admin/tenants/{tenant.id}?done=revoked"
    assert operator.get("/v1/me", headers=me).status_code == 401


def test_duplicate_tenant_is_shown_not_raised(operator, database):
    make_tenant(database, "acme")
    again = operator.post("/admin/tenants", data={"csrf_token": csrf_of(operator), "name": "ACME"})
    assert again.status_code == 409 and "already exists" in again.text


def test_cancel_a_job_from_its_page(operator, database):
    seeded = seed_platform(database)
    token = csrf_of(operator, f"/admin/jobs/{seeded.queued_job_id}")
    done = operator.post(
        f"/admin/jobs/{seeded.queued_job_id}/cancel",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert done.status_code == 303
    with database.session() as s:
        assert s.get(FineTuneJob, seeded.queued_job_id).status == "cancelled"
        entry = s.scalars(select(AuditEntry)).one()
        assert entry.action == "fine_tuning_job.cancel" and entry.actor_role == "admin"
        assert entry.tenant_id == seeded.evil.id
    again = operator.post(f"/admin/jobs/{seeded.queued_job_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 409 and "already cancelled" in again.text


def test_every_page_renders_seeded_data(operator, database):
    seeded = seed_platform(database)
    expectations = {
        "/admin": ["Ray cluster", "acme", "running"],
        f"/admin/tenants/{seeded.acme.id}": ["Save quota", "1200", "completion_tokens"],
        f"/admin/jobs/{seeded.done_job_id}": ["Checkpoint saved at step 36", "v1"],
        "/admin/models": ["qwen3-moe-tiny", seeded.done_job_id, "8 \N{MULTIPLICATION SIGN} top-2"],
        "/admin/deployments": ["support", "2 / 1 / 3", str(seeded.requests)],
        f"/admin/deployments/{seeded.deployment_id}": [
            "mp-acme-support",
            "tokens/s",
            "packed weights off",
        ],
        "/admin/usage?kind=training_tokens": ["47,512"],
        "/admin/nope": [],
    }
    for path, texts in expectations.items():
        page = operator.get(path)
        if path == "/admin/nope":
            assert page.status_code == 404
            continue
        assert page.status_code == 200, path
        for text in texts:
            assert text in page.text, (path, text)
    missing = operator.get("/admin/jobs/ftjob-nope")
    assert missing.status_code == 404 and "No fine-tuning job" in missing.text


def test_static_files_are_served_from_the_package(client):
    js = client.get("/admin/static/charts.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "immutable" in js.headers["cache-control"]
    assert client.get("/admin/static/../auth.py").status_code == 404
    assert client.get("/admin/static/nope.js").status_code == 404
