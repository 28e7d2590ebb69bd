"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


def _check_database(request: Request) -> str:
    with request.app.state.db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


def _check_redis(request: Request) -> str:
    client = request.app.state.redis
    if client is None:
        return "embedded"
    client.ping()
    return "ok"


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is unavailable"}},
)
def readyz(request: Request) -> JSONResponse:
    """Every dependency this process needs answers (503 naming the ones that do not)."""
    checks: dict[str, str] = {}
    for name, check in (("database", _check_database), ("redis", _check_redis)):
        try:
            checks[name] = check(request)
        except Exception as exc:  # a readiness probe reports any failure, it never raises
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ready = all(not v.startswith("error") for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
