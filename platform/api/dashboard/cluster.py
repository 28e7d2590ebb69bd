"""Cluster capacity and use, as Ray's dashboard reports it (``GET /api/cluster_status``).

Ray being down is an ordinary state for an operator's screen, not an error: the answer then says
``reachable: false`` and why.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

from moeplane.config import Settings

__all__ = ["ClusterPublic", "ResourceUse", "cluster_status", "parse_cluster_status"]

# Ray's own timeout for this call is GCS-bound; an operator's page should not hang on it.
TIMEOUT_S = 3.0
GIB = 1024**3
# (Ray's name with "_" removed and lower-cased, label, unit, divisor); others are not shown
_SHOWN = (
    ("cpu", "CPU", "cores", 1),
    ("gpu", "GPU", "devices", 1),
    ("memory", "Memory", "GiB", GIB),
    ("objectstorememory", "Object store", "GiB", GIB),
)


class ResourceUse(BaseModel):
    name: str
    used: float
    total: float
    unit: str


class ClusterPublic(BaseModel):
    object: Literal["admin.cluster"] = "admin.cluster"
    reachable: bool
    error: str | None = Field(default=None, description="Why Ray could not be read")
    nodes: int | None = Field(default=None, description="Nodes reporting resources")
    resources: list[ResourceUse] = Field(default_factory=list)
    pending_demand: int = Field(default=0, description="Resource requests Ray cannot place yet")


def _get(data: dict[str, Any], *names: str) -> Any:
    """Ray answers in camelCase (its "google style"); older ones in snake_case."""
    for name in names:
        if name in data:
            return data[name]
    return None


def parse_cluster_status(body: dict[str, Any]) -> ClusterPublic:
    status = _get(body.get("data") or {}, "clusterStatus", "cluster_status") or {}
    report = _get(status, "loadMetricsReport", "load_metrics_report")
    if not isinstance(report, dict):
        return ClusterPublic(reachable=True, error="Ray has not reported its resources yet")
    usage = _get(report, "usage") or {}
    normalised = {k.replace("_", "").lower(): v for k, v in usage.items()}
    resources = []
    for key, label, unit, divisor in _SHOWN:
        pair = normalised.get(key)
        if isinstance(pair, list | tuple) and len(pair) == 2:
            used, total = (float(x) / divisor for x in pair)
            resources.append(
                ResourceUse(name=label, used=round(used, 2), total=round(total, 2), unit=unit)
            )
    by_node = _get(report, "usageByNode", "usage_by_node")
    demand = _get(report, "resourceDemand", "resource_demand") or []
    pending = sum(int(n) for item in demand if isinstance(item, list) for n in item[1:2])
    return ClusterPublic(
        reachable=True,
        nodes=len(by_node) if isinstance(by_node, dict) else None,
        resources=resources,
        pending_demand=pending,
    )


async def cluster_status(settings: Settings) -> ClusterPublic:
    url = settings.ray_dashboard_url.rstrip("/") + "/api/cluster_status"
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(url, headers=settings.ray_auth_headers())
        response.raise_for_status()
        return parse_cluster_status(response.json())
    except httpx.HTTPStatusError as exc:
        return ClusterPublic(reachable=False, error=f"Ray answered {exc.response.status_code}")
    except httpx.HTTPError as exc:
        return ClusterPublic(reachable=False, error=f"Ray unreachable ({type(exc).__name__})")
    except ValueError:  # not JSON, or numbers that are not numbers
        return ClusterPublic(reachable=False, error="Ray's answer could not be read")
