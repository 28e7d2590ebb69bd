"""Templates, static files and the headers every dashboard response carries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from moeplane.api.dashboard.auth import DashboardSession

__all__ = ["STATIC", "page", "redirect", "static_files"]

HERE = Path(__file__).parent
STATIC = HERE / "static"
_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}

# No inline script or style anywhere: data reaches the scripts through data-* attributes, so a
# strict policy costs nothing and turns any injected markup into inert text.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@lru_cache(maxsize=1)
def static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, media type, short content hash): the whole, fixed set we serve."""
    files = {}
    for path in sorted(STATIC.iterdir()):
        if path.suffix in _TYPES:
            content = path.read_bytes()
            digest = hashlib.sha256(content).hexdigest()[:12]
            files[path.name] = (content, _TYPES[path.suffix], digest)
    return files


def _static_url(name: str) -> str:
    return f"/admin/static/{name}?v={static_files()[name][2]}"


def _when(value: int | datetime | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _number(value: object, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.{digits}f}"
    return f"{int(value):,}"


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["static_url"] = _static_url
    templates.env.filters["when"] = _when
    templates.env.filters["num"] = _number
    return templates


TEMPLATES = _templates()

NAV = (
    ("overview", "/admin", "Overview"),
    ("tenants", "/admin/tenants", "Tenants"),
    ("jobs", "/admin/jobs", "Fine-tuning"),
    ("models", "/admin/models", "Models"),
    ("deployments", "/admin/deployments", "Deployments"),
    ("usage", "/admin/usage", "Usage"),
    ("audit", "/admin/audit", "Audit log"),
)

# ?done=<code> after a redirect: fixed texts, so a crafted link cannot put words on the page
DONE = {
    "created": "Tenant created.",
    "quota": "Quota saved.",
    "suspended": "Tenant suspended: its keys are refused until it is reactivated.",
    "active": "Tenant reactivated.",
    "revoked": "Key revoked.",
    "cancelled": "Job cancelled.",
}


def page(
    request: Request,
    template: str,
    operator: DashboardSession | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    context.setdefault("section", None)
    context.update(nav=NAV, operator=operator)
    context.setdefault("notice", DONE.get(request.query_params.get("done", "")))
    return TEMPLATES.TemplateResponse(
        request, template, context, status_code=status_code, headers=SECURITY_HEADERS
    )


def redirect(url: str) -> RedirectResponse:
    """After a successful form: Post/Redirect/Get, so a reload does not post again."""
    assert url.startswith("/admin"), "the dashboard only redirects within itself"
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)
