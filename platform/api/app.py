"""Builds the FastAPI application. Nothing happens at import time: call :func:`create_app`.

uvicorn runs it as ``moeplane.api.app:create_app`` with ``--factory``.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

from moeplane.api.dashboard import routes as dashboard
from moeplane.api.errors import install_error_handlers
from moeplane.api.metrics import ApiMetrics, MetricsMiddleware
from moeplane.api.routes import (
    admin,
    admin_dashboard,
    admin_tenants,
    catalogs,
    deployments,
    embeddings,
    files,
    fine_tuning,
    health,
    inference,
    models,
    recommendations,
    support,
    tenant,
)
from moeplane.api.schemas.common import ErrorResponse
from moeplane.config import Settings, get_settings
from moeplane.jobs.celery_app import create_celery
from moeplane.jobs.tasks import Dispatch
from moeplane.limits import Limiter, make_limiter
from moeplane.serving.gateway import Gateway
from moeplane.storage import Storage
from moeplane.store.db import Database

__all__ = ["create_app"]

VERSION = "0.1.0"

_ERRORS = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (401, "Missing, invalid, revoked or expired API key"),
        (403, "Wrong role, or the tenant is suspended"),
        (404, "No such object (or it belongs to another tenant)"),
        (409, "Conflict"),
        (422, "Invalid request: the error names the field"),
        (429, "Rate limit or quota reached; see Retry-After"),
        (503, "A dependency is unavailable"),
    )
}


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    limiter: Limiter | None = None,
    dispatch: Dispatch | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    # The inference gateway is a Ray driver; Ray reads its token mode from the environment
    # when it is first imported, so set it now, before anything imports ray.
    os.environ.update(settings.ray_driver_env())
    owns_db = db is None
    db = db or Database(settings.database_url)
    limiter = limiter or make_limiter(settings.redis_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if owns_db:
            db.dispose()

    app = FastAPI(
        title="moeplane",
        version=VERSION,
        summary="Fine-tune and serve Mixture-of-Experts models, per tenant, on Ray",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.db_gate = asyncio.Lock() if db.dialect == "sqlite" else None
    app.state.limiter = limiter
    app.state.redis = _redis_client(settings.redis_url)
    app.state.storage = Storage(settings.storage_uri)
    app.state.dispatch = dispatch or Dispatch(create_celery(settings))
    app.state.metrics = ApiMetrics()
    app.state.gateway = Gateway(settings)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    # FastAPI matches routers in this order (~30 us per router passed on this machine): the
    # per-request hot paths first, then the rest
    routers = (
        health,
        inference,
        recommendations,
        embeddings,
        admin_tenants,
        admin,
        tenant,
        files,
        models,
        fine_tuning,
        deployments,
        admin_dashboard,
        dashboard,
        catalogs,
        support,
    )
    for module in routers:
        app.include_router(module.router)
    return app


def _redis_client(url: str | None):
    if url is None:
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
