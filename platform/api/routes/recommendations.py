"""``POST /v1/recommendations``: ranked products of a catalog, served by its Serve deployment.

Before the call, in one short transaction: the tenant's catalog (another tenant's is a 404), its
recommender deployment (503 ``deployment_not_ready`` while it deploys), the anchor product's
existence and the user's recent interactions, and the request counted as usage kind
``recommendations`` (handed back if the replica fails: reserve, then settle, with no second write
on the way of a served request). The replica scores (``moeplane.serving.recommend``). rpm applies
as to every route.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from moeplane.api.deps import TenantNow, TenantScope, in_short_transaction
from moeplane.api.schemas.recommend import RecommendationList, RecommendationRequest
from moeplane.errors import InvalidRequest, NotFound, ServiceUnavailable
from moeplane.recommend.catalogs import product_exists, user_history
from moeplane.serving.gateway import Target, raise_not_serving, serves
from moeplane.store.ids import new_id
from moeplane.store.models import Catalog, Deployment
from moeplane.store.scoping import scoped
from moeplane.store.usage import record_usage

router = APIRouter(prefix="/v1", tags=["recommendations"])

USAGE_KIND = "recommendations"


def _check(body: RecommendationRequest) -> None:
    if body.user_id is None and body.product_id is None and body.query is None:
        raise InvalidRequest("give user_id, product_id or query", param="user_id")
    f = body.filters
    if f.price_min is not None and f.price_max is not None and f.price_min > f.price_max:
        raise InvalidRequest("price_min is above price_max", param="filters.price_max")


def _prepare(session, tenant: TenantScope, body: RecommendationRequest):
    found = session.execute(  # the catalog and its deployment: one query
        scoped(Catalog, tenant.id)
        .where(Catalog.id == body.catalog)
        .outerjoin(
            Deployment,
            (Deployment.id == Catalog.deployment_id) & (Deployment.tenant_id == Catalog.tenant_id),
        )
        .add_columns(Deployment)
    ).first()
    if found is None:
        raise NotFound(f"No catalog with id '{body.catalog}'", param="catalog")
    catalog, deployment = found
    if catalog.built_generation == 0:
        detail = f": {catalog.error['message']}" if catalog.error else ""
        raise ServiceUnavailable(
            f"The catalog's index is {catalog.status} ({catalog.progress:.0%}){detail}; "
            "retry when it is ready",
            code="catalog_not_ready",
        )
    if deployment is None:
        detail = f": {catalog.error['message']}" if catalog.error else ""
        raise ServiceUnavailable(f"The catalog is not served{detail}", code="deployment_not_ready")
    if not serves(deployment):
        raise_not_serving(deployment)
    target = Target(deployment.id, deployment.app_name, deployment.id, "", "")
    if body.product_id is not None and not product_exists(
        session, tenant.id, catalog.id, body.product_id
    ):
        raise NotFound(f"No product '{body.product_id}' in this catalog", param="product_id")
    history = user_history(session, tenant.id, catalog.id, body.user_id) if body.user_id else []
    record_usage(session, tenant.id, USAGE_KIND, 1)
    return target, history


async def _handle(request: Request, target: Target) -> Any:
    """The app's recommender handle for this event loop (`loop_handle`), kept per app and loop
    (its router lives on the loop that made it)."""
    handles = getattr(request.app.state, "recommender_handles", None)
    if handles is None:
        handles = request.app.state.recommender_handles = {}
    key = (target.app_name, id(asyncio.get_running_loop()))
    if key not in handles:
        # connects to Ray and checks that Serve knows the app (blocking: in a thread)
        await run_in_threadpool(request.app.state.gateway.handle, target.app_name)
        from moeplane.serving.recommend import loop_handle  # imports Ray: after connecting

        handles[key] = loop_handle(target.app_name)
    return handles[key]


async def _call(request: Request, target: Target, payload: dict[str, Any]) -> dict[str, Any]:
    handle = await _handle(request, target)
    try:
        return await handle.recommend.remote(payload)
    except Exception as exc:  # the replica failed or went away: a clear 503
        raise ServiceUnavailable(
            f"The recommender could not serve the request: {type(exc).__name__}: {exc}"[:500],
            code="replica_failed",
        ) from exc


@router.post("/recommendations", response_model=RecommendationList)
async def recommendations(body: RecommendationRequest, request: Request, tenant: TenantNow):
    _check(body)
    target, history = await in_short_transaction(request, _prepare, tenant, body)
    f = body.filters
    payload = {
        "request_id": new_id("req"),
        "k": body.k,
        "history": history,
        "product_id": body.product_id,
        "query": body.query,
        "filters": {
            "categories": list(f.categories()),
            "price_min": f.price_min,
            "price_max": f.price_max,
            "in_stock": f.in_stock,
        },
        "exclude_seen": body.exclude_seen,
    }
    try:
        result = await _call(request, target, payload)
    except ServiceUnavailable:
        await in_short_transaction(request, record_usage, tenant.id, USAGE_KIND, -1)
        raise
    response = RecommendationList(
        data=result["data"], catalog=body.catalog, strategy=result["strategy"]
    )
    return JSONResponse(response.model_dump())
