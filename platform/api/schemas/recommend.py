"""Catalogs and recommendations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from moeplane.api.schemas.common import Input, epoch
from moeplane.store.models import Catalog

__all__ = [
    "CatalogCreate",
    "CatalogPublic",
    "EventsAppend",
    "EventsAppended",
    "RecommendationFilters",
    "RecommendationItem",
    "RecommendationList",
    "RecommendationRequest",
]


class CatalogCreate(Input):
    name: str = Field(min_length=1, max_length=100)
    products_file: str = Field(
        min_length=1, max_length=40, description="A file uploaded with purpose 'catalog' (JSONL)"
    )
    events_file: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description="A file uploaded with purpose 'events' (JSONL)",
    )


class CatalogPublic(BaseModel):
    id: str
    object: Literal["catalog"] = "catalog"
    name: str
    status: Literal["queued", "building", "ready", "failed"]
    progress: float = Field(description="0..1 of the current index build")
    products: int
    events: int
    created_at: int
    error: dict[str, Any] | None = Field(description="{code, message} when a build failed")
    generation: int = Field(description="Index builds requested so far")
    built_generation: int = Field(description="The index generation stored (0: none yet)")
    deployment_id: str | None = Field(description="The recommender deployment serving it")

    @classmethod
    def of(cls, c: Catalog) -> CatalogPublic:
        return cls(
            id=c.id,
            name=c.name,
            status=c.status,  # type: ignore[arg-type]
            progress=c.progress,
            products=c.product_count,
            events=c.event_count,
            created_at=epoch(c.created_at),
            error=c.error,
            generation=c.generation,
            built_generation=c.built_generation,
            deployment_id=c.deployment_id,
        )


class EventIn(Input):
    user_id: str = Field(min_length=1, max_length=200)
    product_id: str = Field(min_length=1, max_length=200)
    type: Literal["view", "cart", "purchase"]
    timestamp: str | float = Field(description="ISO 8601 or unix seconds")


class EventsAppend(Input):
    events: list[EventIn] = Field(min_length=1, max_length=10_000)
    reindex: bool = Field(default=False, description="Build a new index generation afterwards")


class EventsAppended(BaseModel):
    object: Literal["catalog.events"] = "catalog.events"
    added: int
    catalog: CatalogPublic


class RecommendationFilters(Input):
    category: str | list[str] | None = Field(default=None, description="One or more categories")
    price_min: float | None = Field(default=None, ge=0)
    price_max: float | None = Field(default=None, ge=0)
    in_stock: bool | None = Field(default=None, description="true: only products in stock")

    def categories(self) -> tuple[str, ...]:
        if self.category is None:
            return ()
        return (self.category,) if isinstance(self.category, str) else tuple(self.category)


class RecommendationRequest(Input):
    catalog: str = Field(min_length=1, max_length=40, description="A catalog id")
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    product_id: str | None = Field(default=None, min_length=1, max_length=200)
    query: str | None = Field(default=None, min_length=1, max_length=1000)
    k: int = Field(default=10, ge=1, le=100)
    filters: RecommendationFilters = Field(default_factory=RecommendationFilters)
    exclude_seen: bool = Field(default=True, description="Leave out what the user interacted with")


class RecommendationItem(BaseModel):
    product_id: str
    title: str
    score: float
    reason: str
    category: str
    price: float


class RecommendationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RecommendationItem]
    catalog: str
    strategy: Literal["hybrid", "similar_items", "search", "popular"]
