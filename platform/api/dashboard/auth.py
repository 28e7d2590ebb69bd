"""Dashboard sessions: an admin key logs in once; the browser then holds a signed cookie.

The cookie is ``base64(payload).base64(mac)`` with payload ``{kid, sid, exp}``: the id of the
admin key that logged in, a random session id and the expiry. Nothing is stored server-side, so
any API replica can check it. The MAC key is derived per API key:

    session_key = HMAC-SHA256(server_secret, "moeplane.dashboard.session" || key_hash)

so revoking (or expiring) the admin key ends its sessions at once, and the database alone (which
holds ``key_hash``) is not enough to forge one. ``server_secret`` is derived from
MOEPLANE_ADMIN_KEY when it is set (every replica of a production deployment already shares it);
otherwise (the embedded ``moeplane up``) it is 32 random bytes generated once in
``$MOEPLANE_HOME/dashboard-secret``.

CSRF: every form carries ``csrf_token = HMAC(session_key, "csrf" || sid)`` and POSTs without the
right one are refused (403); the login form, before a session exists, uses a double-submit
cookie. The session cookie is HttpOnly and SameSite=Strict, Secure over HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from moeplane.api.deps import DbSession, Principal
from moeplane.config import Settings
from moeplane.store.models import ApiKey, utcnow

__all__ = [
    "COOKIE",
    "CsrfForm",
    "DashboardSession",
    "Operator",
    "OperatorApi",
    "clear_session",
    "login_csrf",
    "open_session",
    "read_session",
]

COOKIE = "mp_session"
LOGIN_CSRF_COOKIE = "mp_login_csrf"
SESSION_TTL_S = 8 * 3600  # a working day; the admin key's own expiry cuts it shorter
_CONTEXT = b"moeplane.dashboard.session\x00"
SECRET_FILE = "dashboard-secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=8)
def _secret_file(home: Path) -> bytes:
    """32 random bytes in ``home/dashboard-secret``, created once (atomically: processes that
    race all end up reading the winner's file)."""
    path = home / SECRET_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # fails if another process created it first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = path.read_bytes()
    if len(secret) < 16:
        raise RuntimeError(f"{path} holds fewer than 16 bytes; delete it to generate a new one")
    return secret


def server_secret(settings: Settings) -> bytes:
    if settings.admin_key is not None:
        configured = settings.admin_key.get_secret_value().encode()
        return hashlib.sha256(b"moeplane.dashboard.secret\x00" + configured).digest()
    return _secret_file(settings.home)


def _session_key(settings: Settings, key_hash: str) -> bytes:
    return hmac.new(server_secret(settings), _CONTEXT + key_hash.encode(), "sha256").digest()


@dataclass(frozen=True)
class DashboardSession:
    """A logged-in operator: the admin key they used, and this session's CSRF token."""

    key: ApiKey
    sid: str
    expires_at: int
    csrf_token: str

    @property
    def principal(self) -> Principal:
        return Principal(key=self.key, tenant=None, quota=None)


def _csrf(session_key: bytes, sid: str) -> str:
    return _b64(hmac.new(session_key, b"csrf\x00" + sid.encode(), "sha256").digest())


def _usable(key: ApiKey | None) -> bool:
    if key is None or key.role != "admin" or key.revoked_at is not None:
        return False
    return key.expires_at is None or key.expires_at > utcnow()


def _cookie_flags(request: Request) -> dict:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/admin",
    }


def open_session(request: Request, response: Response, key: ApiKey) -> None:
    """Set the session cookie for an authenticated admin key."""
    settings: Settings = request.app.state.settings
    expires = int(time.time()) + SESSION_TTL_S
    if key.expires_at is not None:
        expires = min(expires, int(key.expires_at.timestamp()))
    payload = json.dumps({"kid": key.id, "sid": _b64(secrets.token_bytes(16)), "exp": expires})
    body = _b64(payload.encode())
    mac = hmac.new(_session_key(settings, key.key_hash), body.encode(), "sha256").digest()
    response.set_cookie(
        COOKIE, f"{body}.{_b64(mac)}", max_age=expires - int(time.time()), **_cookie_flags(request)
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin")


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, **_cookie_flags(request))


def read_session(request: Request, db: Session) -> DashboardSession | None:
    """The valid session this request carries, or None (absent, forged, expired, revoked)."""
    raw = request.cookies.get(COOKIE, "")
    body, _, mac = raw.partition(".")
    if not body or not mac:
        return None
    try:
        payload = json.loads(_unb64(body))
        kid, sid, exp = str(payload["kid"]), str(payload["sid"]), int(payload["exp"])
        presented = _unb64(mac)
    except (ValueError, KeyError, TypeError):
        return None
    key = db.get(ApiKey, kid)
    if not _usable(key) or exp <= time.time():
        return None
    session_key = _session_key(request.app.state.settings, key.key_hash)
    expected = hmac.new(session_key, body.encode(), "sha256").digest()
    if not hmac.compare_digest(presented, expected):
        return None
    return DashboardSession(key=key, sid=sid, expires_at=exp, csrf_token=_csrf(session_key, sid))


def _login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/admin/login?next={quote(target, safe='')}"


def require_operator(request: Request, db: DbSession) -> DashboardSession:
    """Pages: a valid session, else a redirect to the login page (GET) or 401 (forms)."""
    session = read_session(request, db)
    if session is not None:
        return session
    if request.method in ("GET", "HEAD"):
        raise HTTPException(303, "Log in first", headers={"Location": _login_url(request)})
    raise HTTPException(401, "No dashboard session: log in again")


def require_operator_api(request: Request, db: DbSession) -> DashboardSession:
    """The dashboard's JSON (its charts): a valid session, else 401."""
    session = read_session(request, db)
    if session is None:
        raise HTTPException(401, "No dashboard session: log in again")
    return session


Operator = Annotated[DashboardSession, Depends(require_operator)]
OperatorApi = Annotated[DashboardSession, Depends(require_operator_api)]


def _same_token(presented: object, expected: str) -> bool:
    return isinstance(presented, str) and hmac.compare_digest(presented, expected)


async def _csrf_form(request: Request, operator: Operator) -> FormData:
    """The posted form, once its CSRF token matches this session's (else 403)."""
    form = await request.form()
    if not _same_token(form.get("csrf_token"), operator.csrf_token):
        raise HTTPException(403, "Missing or wrong CSRF token: reload the page and try again")
    return form


CsrfForm = Annotated[FormData, Depends(_csrf_form)]


def login_csrf(request: Request) -> str:
    """The login form's token: the one already in the browser's cookie, or a new one."""
    current = request.cookies.get(LOGIN_CSRF_COOKIE)
    return current if current and len(current) >= 32 else _b64(secrets.token_bytes(32))


def set_login_csrf(request: Request, response: Response, token: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, **_cookie_flags(request))


def check_login_csrf(request: Request, form: FormData) -> bool:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(cookie) and _same_token(form.get("csrf_token"), cookie)
