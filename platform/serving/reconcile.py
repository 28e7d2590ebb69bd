"""Converge Ray Serve to the deployments in the database.

Desired state is the ``deployments`` table; actual state is what Serve reports, including the
``args`` each application was deployed with (so the generation Serve runs is read back, not
remembered). `diff` is a pure function from the two to a list of actions; `reconcile_deployments`
(one Celery beat tick) reads both sides, applies the actions and records what it saw. Because
nothing is remembered between ticks, it converges after a restart of the API or the worker, and
recreates a Serve application someone deleted.

Serve is driven declaratively through its REST API (the dashboard's ``/api/serve/applications/``,
like the Jobs API for fine-tuning): one PUT carries every application, Serve computes the
rollout. A changed ``args`` is a rolling update; with ``max_surge_percent=100`` (set in
`moeplane.serving.app`) the new replicas start before the old ones stop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from moeplane.config import Settings
from moeplane.errors import DomainError, ServiceUnavailable
from moeplane.serving.spec import APP_BUILDERS
from moeplane.store.db import Database
from moeplane.store.models import Deployment, ModelVersion

__all__ = [
    "APP_PREFIX",
    "ActualApp",
    "Apply",
    "DesiredApp",
    "Observe",
    "Purge",
    "Remove",
    "ServeClient",
    "diff",
    "reconcile_deployments",
]

log = logging.getLogger(__name__)

APP_PREFIX = "mp-"  # every Serve application the platform owns; others are left alone


@dataclass(frozen=True)
class DesiredApp:
    deployment_id: str
    app_name: str
    generation: int
    deleting: bool
    args: dict[str, Any] | None  # the ServingSpec args; None when deleting or unresolvable
    error: str | None = None  # why args could not be built (e.g. a missing checkpoint)


@dataclass(frozen=True)
class ActualApp:
    app_name: str
    status: str  # Serve's: DEPLOYING | RUNNING | DEPLOY_FAILED | UNHEALTHY | DELETING | ...
    message: str
    args: dict[str, Any]
    running_replicas: int

    @property
    def generation(self) -> int | None:
        return self.args.get("generation")


@dataclass(frozen=True)
class Apply:
    app_name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Remove:
    app_name: str


@dataclass(frozen=True)
class Observe:
    deployment_id: str
    status: str
    reason: str | None = None
    observed_generation: int | None = None  # set when Serve runs the desired generation
    observed_version_id: str | None = None
    replicas: int = 0


@dataclass(frozen=True)
class Purge:
    deployment_id: str


Action = Apply | Remove | Observe | Purge


def diff(desired: list[DesiredApp], actual: dict[str, ActualApp]) -> list[Action]:
    """What to do so that Serve runs exactly the desired applications. Pure."""
    actions: list[Action] = []
    wanted = {d.app_name for d in desired}
    for d in desired:
        app = actual.get(d.app_name)
        if d.deleting:
            actions += [Remove(d.app_name)] if app else [Purge(d.deployment_id)]
            continue
        if d.args is None:
            actions.append(Observe(d.deployment_id, "failed", d.error))
            continue
        replicas = app.running_replicas if app else 0
        if app is None or app.generation != d.generation:
            actions.append(Apply(d.app_name, d.args))
            reason = None
            if app is None and d.generation > 1:
                reason = f"Serve application {d.app_name} not found: creating it"
            actions.append(Observe(d.deployment_id, "deploying", reason, replicas=replicas))
            continue
        if app.status == "RUNNING":
            actions.append(
                Observe(
                    d.deployment_id,
                    "running",
                    observed_generation=d.generation,
                    observed_version_id=d.args.get("model_version_id"),
                    replicas=replicas,
                )
            )
        elif app.status == "DEPLOY_FAILED":
            actions.append(Observe(d.deployment_id, "failed", app.message or "deploy failed"))
        elif app.status == "UNHEALTHY":
            reason = f"unhealthy, Serve is replacing replicas: {app.message}".strip(": ")
            actions.append(Observe(d.deployment_id, "deploying", reason, replicas=replicas))
        else:
            actions.append(Observe(d.deployment_id, "deploying", replicas=replicas))
    for name in sorted(actual):
        if name.startswith(APP_PREFIX) and name not in wanted:
            actions.append(Remove(name))  # an orphan: its deployment row is gone
    return actions


class ServeClient:
    """Serve's REST API on the Ray dashboard (the same place as the Jobs API)."""

    def __init__(self, settings: Settings, timeout_s: float = 30.0):
        self.url = settings.ray_dashboard_url.rstrip("/") + "/api/serve/applications/"
        self.headers = settings.ray_auth_headers()
        self.timeout_s = timeout_s

    def details(self) -> dict[str, Any]:
        try:
            response = httpx.get(self.url, headers=self.headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"Ray dashboard unreachable: {exc}") from exc
        if response.status_code != 200:
            raise ServiceUnavailable(
                f"Serve status failed: HTTP {response.status_code} {response.text[:300]}"
            )
        return response.json()

    def apps(self, details: dict[str, Any] | None = None) -> dict[str, ActualApp]:
        details = details if details is not None else self.details()
        apps = {}
        for name, app in (details.get("applications") or {}).items():
            config = app.get("deployed_app_config") or {}
            running = sum(
                1
                for dep in (app.get("deployments") or {}).values()
                for replica in dep.get("replicas") or []
                if replica.get("state") == "RUNNING"
            )
            apps[name] = ActualApp(
                app_name=name,
                status=str(app.get("status", "")),
                message=str(app.get("message", ""))[:2000],
                args=dict(config.get("args") or {}),
                running_replicas=running,
            )
        return apps

    def put(self, applications: list[dict[str, Any]]) -> None:
        body = {"proxy_location": "Disabled", "applications": applications}
        try:
            response = httpx.put(self.url, json=body, headers=self.headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"Ray dashboard unreachable: {exc}") from exc
        if response.status_code != 200:
            raise ServiceUnavailable(
                f"Serve refused the config: HTTP {response.status_code} {response.text[:500]}"
            )


def app_config(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "import_path": APP_BUILDERS[args.get("kind", "llm")],
        "route_prefix": f"/{name}",
        "args": args,
    }


def _desired(db: Session, settings: Settings) -> list[DesiredApp]:
    from moeplane.serving.deployments import serving_spec

    desired = []
    for dep in db.scalars(select(Deployment).order_by(Deployment.id)):
        if dep.status == "deleting":
            desired.append(DesiredApp(dep.id, dep.app_name, dep.generation, True, None))
            continue
        version = db.get(ModelVersion, dep.model_version_id) if dep.model_version_id else None
        args, error = None, None
        if dep.model_version_id and version is None:
            error = f"model version {dep.model_version_id} no longer exists"
        else:
            try:
                args = serving_spec(dep, version, settings.database_url or "").to_args()
            except DomainError as exc:  # a spec that cannot run is reported, not retried
                error = str(exc)
        desired.append(DesiredApp(dep.id, dep.app_name, dep.generation, False, args, error))
    return desired


@dataclass
class TickReport:
    applied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)


def reconcile_deployments(database: Database, settings: Settings, serve: ServeClient) -> TickReport:
    """One reconcile pass: read both sides, PUT a new Serve config if needed, record status.

    The database is read and written in two short transactions, never across the HTTP calls
    (on SQLite a transaction holds the only write lock). Concurrent passes are harmless: they
    PUT the same config, and an observation is dropped if the deployment changed meanwhile.
    """
    with database.session() as db:
        desired = _desired(db, settings)
    details = serve.details()
    actions = diff(desired, serve.apps(details))
    report = TickReport()
    applies = {a.app_name: a.args for a in actions if isinstance(a, Apply)}
    removes = {a.app_name for a in actions if isinstance(a, Remove)}
    if applies or removes:
        configs = []
        for name, app in (details.get("applications") or {}).items():
            deployed = app.get("deployed_app_config")
            if name in removes or name in applies or deployed is None:
                continue
            configs.append(deployed)  # unchanged: Serve leaves it alone
        configs += [app_config(name, args) for name, args in applies.items()]
        serve.put(configs)
        report.applied, report.removed = sorted(applies), sorted(removes)
    generations = {d.deployment_id: d.generation for d in desired}
    with database.session() as db:
        for action in actions:
            if isinstance(action, Observe):
                dep = db.get(Deployment, action.deployment_id)
                if dep is None or dep.status == "deleting":
                    continue
                if dep.generation != generations[dep.id]:
                    continue  # PATCHed since we read it: the next pass looks again
                dep.status = action.status
                dep.status_reason = action.reason
                dep.current_replicas = action.replicas
                if action.observed_generation is not None:
                    dep.observed_generation = action.observed_generation
                    dep.observed_version_id = action.observed_version_id
            elif isinstance(action, Purge):
                dep = db.get(Deployment, action.deployment_id)
                if dep is not None and dep.status == "deleting":
                    db.delete(dep)
                    report.purged.append(action.deployment_id)
    if report.applied or report.removed or report.purged:
        log.info("reconciled deployments: %s", report)
    return report
