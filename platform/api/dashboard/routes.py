"""The dashboard's router: log in and out, static files, the pages and forms, and the admin JSON
views mounted under ``/admin/api`` for the session cookie (the charts' data source)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from moeplane.api import deps
from moeplane.api.dashboard import actions, pages
from moeplane.api.dashboard.auth import (
    DashboardSession,
    check_login_csrf,
    clear_session,
    login_csrf,
    open_session,
    read_session,
    require_operator_api,
    set_login_csrf,
)
from moeplane.api.dashboard.render import SECURITY_HEADERS, page, redirect, static_files
from moeplane.api.deps import DbSession
from moeplane.api.routes.admin_dashboard import live_views, views
from moeplane.errors import DomainError
from moeplane.store.keys import authenticate

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
session_routes = APIRouter(prefix="/admin", include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only paths inside the dashboard: never another site (an open redirect)."""
    inside = bool(target) and target.startswith("/admin") and "//" not in target
    if inside and "\\" not in target and not target.startswith("/admin/login"):
        return target
    return "/admin"


def _login_page(
    request: Request, *, next_url: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = login_csrf(request)
    response = page(
        request,
        "login.html",
        None,
        status_code=status_code,
        csrf_token=token,
        next_url=next_url,
        error=error,
    )
    set_login_csrf(request, response, token)
    return response


@session_routes.get("/login")
def login_form(request: Request, db: DbSession, next: str | None = None):
    if read_session(request, db) is not None:
        return redirect(_safe_next(next))
    return _login_page(request, next_url=_safe_next(next))


@session_routes.post("/login")
async def login(request: Request):
    form = await request.form()
    next_url = _safe_next(str(form.get("next") or ""))
    if not check_login_csrf(request, form):
        return _login_page(
            request,
            next_url=next_url,
            error="The form expired (missing CSRF token): try again.",
            status_code=403,
        )
    presented = str(form.get("api_key") or "").strip()

    def check(session):  # type: ignore[no-untyped-def]
        key, _, _ = authenticate(session, presented)
        return key

    try:
        key = await deps.in_short_transaction(request, check)
    except DomainError as exc:
        return _login_page(request, next_url=next_url, error=exc.message, status_code=401)
    if key.role != "admin":
        return _login_page(
            request,
            next_url=next_url,
            error="This is a tenant key: the dashboard needs an admin key.",
            status_code=403,
        )
    response = redirect(next_url)
    open_session(request, response, key)
    return response


async def _logout_csrf(request: Request, db: DbSession) -> DashboardSession | None:
    session = read_session(request, db)
    form = await request.form()
    token = str(form.get("csrf_token") or "")
    if session is not None and not hmac.compare_digest(token, session.csrf_token):
        raise HTTPException(403, "Missing or wrong CSRF token: reload the page and try again")
    return session


@session_routes.post("/logout")
def logout(request: Request, _: DashboardSession | None = Depends(_logout_csrf)):
    response = redirect("/admin/login?next=/admin")
    clear_session(request, response)
    return response


@session_routes.get("/static/{name}")
def static(name: str):
    found = static_files().get(name)
    if found is None:
        raise HTTPException(404, "No such file")
    content, media_type, _ = found
    headers = {
        **SECURITY_HEADERS,
        # names carry ?v=<content hash>, so a new release is a new URL
        "Cache-Control": "public, max-age=31536000, immutable",
    }
    return Response(content, media_type=media_type, headers=headers)


async def _operator_briefly(request: Request) -> None:
    """The session check in a short transaction of its own (for views that hold no session)."""
    session = await deps.in_short_transaction(request, lambda db: read_session(request, db))
    if session is None:
        raise HTTPException(401, "No dashboard session: log in again")


api = APIRouter(prefix="/admin/api", include_in_schema=False)
api.include_router(views, dependencies=[Depends(require_operator_api)])
api.include_router(live_views, dependencies=[Depends(_operator_briefly)])

router.include_router(session_routes)
router.include_router(api)
router.include_router(pages.router)
router.include_router(actions.router)
