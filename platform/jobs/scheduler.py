"""Fair-share admission of queued fine-tune jobs: a pure function, no I/O.

`plan(queued, running, capacity, policies, now)` returns the jobs to start now
and, for every other queued job, a short reason. The policy:

1. Tenants take turns in order of normalised share, least first:
   ``(attained_service + horizon * cost(running and just-admitted jobs)) / weight``.
   ``attained_service`` is the caller's decayed cpu-equivalent-seconds; the
   horizon term charges jobs in advance, so that a tenant's many new jobs count
   before their usage shows up in ``attained_service``.
2. Within a tenant: highest effective priority first, where a job gains one
   priority level per ``aging_seconds`` waited; then oldest, then job id.
3. A job is admitted only if it fits the remaining free capacity and its
   tenant stays within ``max_concurrent_jobs`` (running + admitted this tick).
   A job that does not fit is passed over and smaller jobs may go ahead of it.
4. Except once *aged* (waited ``aging_seconds`` or more): the first aged job
   that does not fit sets aside the free capacity it needs (reservation), so
   jobs that come after it only get what is left. Freed capacity therefore
   accumulates for it tick after tick until it fits: no job starves by size.

Aging never overrides the order between tenants: under sustained overload
every job is old, and "oldest first" across tenants would degrade to FIFO and
hand the cluster to whoever submits most. Between tenants, starvation is
prevented by the decay of ``attained_service`` (done by the caller): a tenant
with nothing running decays towards zero share and so reaches the front.
Ties are broken by tenant id and job id, so equal inputs give equal plans.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "REASON_CAPACITY",
    "REASON_NO_POLICY",
    "REASON_RESERVED",
    "REASON_TENANT_LIMIT",
    "REASON_TICK_LIMIT",
    "REASON_TOO_LARGE",
    "Plan",
    "QueuedJob",
    "Resources",
    "RunningJob",
    "SchedulerConfig",
    "TenantPolicy",
    "plan",
    "training_capacity",
]

REASON_NO_POLICY = "no policy for tenant"
REASON_TENANT_LIMIT = "tenant at max_concurrent_jobs"
REASON_CAPACITY = "insufficient capacity"
REASON_RESERVED = "waiting for capacity (reserved)"
REASON_TICK_LIMIT = "admission limit per tick reached"
REASON_TOO_LARGE = "larger than the cluster"

# Slack for float sums of fractional cpus (0.1 + 0.2 must fit in 0.3).
_EPS = 1e-9


def _check_amount(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of cluster resources; never negative."""

    cpus: float
    gpus: float = 0.0

    def __post_init__(self) -> None:
        _check_amount("cpus", self.cpus)
        _check_amount("gpus", self.gpus)

    def fits(self, available: Resources) -> bool:
        """Whether this amount fits within `available`."""
        return self.cpus <= available.cpus + _EPS and self.gpus <= available.gpus + _EPS

    def add(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.gpus + other.gpus)

    def sub(self, other: Resources) -> Resources:
        """Saturating difference: each dimension is clipped at zero."""
        return Resources(max(0.0, self.cpus - other.cpus), max(0.0, self.gpus - other.gpus))

    def cost(self, gpu_weight: float) -> float:
        """Cpu-equivalents: one GPU counts as `gpu_weight` CPUs."""
        return self.cpus + gpu_weight * self.gpus


def training_capacity(
    cpus: float | None, gpus: float | None, cluster: Resources | None
) -> Resources | None:
    """What fine-tuning may use in all: each configured limit, else the cluster's live total.

    None when a limit is neither configured nor known (the cluster could not be asked): the
    caller then admits nothing rather than guess.
    """
    if cluster is None and (cpus is None or gpus is None):
        if cpus is None:
            return None
        return Resources(cpus, gpus or 0.0)  # CPUs capped, GPUs unknown: none assumed
    return Resources(
        cpus if cpus is not None else cluster.cpus, gpus if gpus is not None else cluster.gpus
    )


@dataclass(frozen=True, slots=True)
class QueuedJob:
    id: str
    tenant_id: str
    demand: Resources
    queued_at: float  # epoch seconds
    priority: int = 0  # higher first, within a tenant only


@dataclass(frozen=True, slots=True)
class RunningJob:
    id: str
    tenant_id: str
    demand: Resources


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    tenant_id: str
    max_concurrent_jobs: int
    weight: float = 1.0
    # Recent usage in cpu-equivalent-seconds (see SchedulerConfig.gpu_weight),
    # e.g. decayed over the last 24 h; computed by the caller.
    attained_service: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight must be finite and > 0, got {self.weight!r}")
        if self.max_concurrent_jobs < 0:
            raise ValueError(f"max_concurrent_jobs must be >= 0, got {self.max_concurrent_jobs}")
        _check_amount("attained_service", self.attained_service)


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    # Waiting this long is worth one priority level within a tenant, and makes
    # a job "aged": an aged job that does not fit reserves capacity. math.inf
    # disables aging (and with it reservations).
    aging_seconds: float = 600.0
    # At most this many admissions per plan (None: no limit), so one tick
    # cannot flood Ray with submissions.
    max_admissions_per_tick: int | None = 64
    # A running or just-admitted job is charged this many seconds of its
    # demand in advance when ordering tenants.
    running_horizon_seconds: float = 300.0
    # One GPU counts as this many CPUs in service and share arithmetic.
    gpu_weight: float = 8.0

    def __post_init__(self) -> None:
        if not self.aging_seconds > 0:
            raise ValueError(f"aging_seconds must be > 0, got {self.aging_seconds!r}")
        if self.max_admissions_per_tick is not None and self.max_admissions_per_tick < 1:
            raise ValueError("max_admissions_per_tick must be >= 1 or None")
        _check_amount("running_horizon_seconds", self.running_horizon_seconds)
        _check_amount("gpu_weight", self.gpu_weight)


@dataclass(frozen=True, slots=True)
class Plan:
    admit: tuple[str, ...]  # job ids, in admission order
    skipped: Mapping[str, str] = field(default_factory=dict)  # job id -> reason


@dataclass(slots=True)
class _Tick:
    """Mutable bookkeeping for one call of `plan`."""

    remaining: Resources
    shares: dict[str, float]
    counts: dict[str, int]
    min_demand: Resources
    reserved: bool = False

    def nothing_fits(self) -> bool:
        return not self.min_demand.fits(self.remaining)


def plan(
    queued: Iterable[QueuedJob],
    running: Iterable[RunningJob],
    capacity: Resources,
    policies: Mapping[str, TenantPolicy],
    now: float,
    config: SchedulerConfig = SchedulerConfig(),
    *,
    total_capacity: Resources | None = None,
) -> Plan:
    """Choose the queued jobs to start now (see the module docstring).

    `capacity` is the free capacity now. `total_capacity`, if given, is the
    whole cluster: jobs larger than it are skipped and never reserve.
    """
    skipped: dict[str, str] = {}
    queues = _tenant_queues(queued, policies, config, total_capacity, skipped)
    tick = _start_tick(queues, running, capacity, policies, config)
    admitted = _admit(queues, tick, policies, now, config, skipped)
    return Plan(admit=tuple(admitted), skipped=MappingProxyType(skipped))


def _tenant_queues(
    queued: Iterable[QueuedJob],
    policies: Mapping[str, TenantPolicy],
    config: SchedulerConfig,
    total_capacity: Resources | None,
    skipped: dict[str, str],
) -> dict[str, list[QueuedJob]]:
    """Group admissible jobs per tenant, each list in within-tenant order."""
    keyed: dict[str, list[tuple[float, float, str, QueuedJob]]] = {}
    seen: set[str] = set()
    aging = config.aging_seconds
    for job in queued:
        if job.id in seen:
            raise ValueError(f"duplicate queued job id {job.id!r}")
        seen.add(job.id)
        if job.tenant_id not in policies:
            skipped[job.id] = REASON_NO_POLICY
        elif total_capacity is not None and not job.demand.fits(total_capacity):
            skipped[job.id] = REASON_TOO_LARGE
        else:
            # priority + waited/aging, negated; `now` cancels out of the order.
            key = job.queued_at / aging - job.priority
            keyed.setdefault(job.tenant_id, []).append((key, job.queued_at, job.id, job))
    return {tenant: [entry[3] for entry in sorted(jobs)] for tenant, jobs in keyed.items()}


def _start_tick(
    queues: Mapping[str, list[QueuedJob]],
    running: Iterable[RunningJob],
    capacity: Resources,
    policies: Mapping[str, TenantPolicy],
    config: SchedulerConfig,
) -> _Tick:
    service = {tenant: policies[tenant].attained_service for tenant in queues}
    counts = dict.fromkeys(queues, 0)
    for job in running:
        if job.tenant_id in service:
            service[job.tenant_id] += job.demand.cost(config.gpu_weight) * (
                config.running_horizon_seconds
            )
            counts[job.tenant_id] += 1
    shares = {tenant: service[tenant] / policies[tenant].weight for tenant in queues}
    jobs = [job for tenant_jobs in queues.values() for job in tenant_jobs]
    min_demand = Resources(
        min((job.demand.cpus for job in jobs), default=0.0),
        min((job.demand.gpus for job in jobs), default=0.0),
    )
    return _Tick(capacity, shares, counts, min_demand)


def _admit(
    queues: Mapping[str, list[QueuedJob]],
    tick: _Tick,
    policies: Mapping[str, TenantPolicy],
    now: float,
    config: SchedulerConfig,
    skipped: dict[str, str],
) -> list[str]:
    """Serve tenants least share first until capacity or the tick limit runs out."""
    cursors = dict.fromkeys(queues, 0)
    heap = []
    for tenant, jobs in queues.items():
        if tick.counts[tenant] >= policies[tenant].max_concurrent_jobs:
            _skip_rest(jobs, 0, REASON_TENANT_LIMIT, skipped)
        else:
            heap.append((tick.shares[tenant], tenant))
    heapq.heapify(heap)
    limit = config.max_admissions_per_tick or math.inf
    admitted: list[str] = []
    while heap:
        if len(admitted) >= limit or tick.nothing_fits():
            break
        _, tenant = heapq.heappop(heap)
        job = _next_fitting(queues[tenant], cursors, tenant, tick, now, config, skipped)
        if job is not None:
            admitted.append(job.id)
            if _charge(tick, job, policies[tenant], config, queues[tenant], cursors, skipped):
                heapq.heappush(heap, (tick.shares[tenant], tenant))
    reason = REASON_TICK_LIMIT if len(admitted) >= limit else REASON_CAPACITY
    for _, tenant in heap:
        _skip_rest(queues[tenant], cursors[tenant], reason, skipped)
    return admitted


def _next_fitting(
    jobs: list[QueuedJob],
    cursors: dict[str, int],
    tenant: str,
    tick: _Tick,
    now: float,
    config: SchedulerConfig,
    skipped: dict[str, str],
) -> QueuedJob | None:
    """The tenant's next job that fits, passing over (or reserving for) the rest.

    Capacity only shrinks during a tick, so a job passed over stays passed over.
    """
    index = cursors[tenant]
    while index < len(jobs):
        job = jobs[index]
        index += 1
        if job.demand.fits(tick.remaining):
            cursors[tenant] = index
            return job
        if not tick.reserved and now - job.queued_at >= config.aging_seconds:
            tick.reserved = True
            tick.remaining = tick.remaining.sub(job.demand)
            skipped[job.id] = REASON_RESERVED
        else:
            skipped[job.id] = REASON_CAPACITY
    cursors[tenant] = index
    return None


def _charge(
    tick: _Tick,
    job: QueuedJob,
    policy: TenantPolicy,
    config: SchedulerConfig,
    jobs: list[QueuedJob],
    cursors: dict[str, int],
    skipped: dict[str, str],
) -> bool:
    """Book an admitted job; return whether its tenant may admit more."""
    tenant = job.tenant_id
    tick.remaining = tick.remaining.sub(job.demand)
    tick.counts[tenant] += 1
    charge = job.demand.cost(config.gpu_weight) * config.running_horizon_seconds
    tick.shares[tenant] += charge / policy.weight
    if tick.counts[tenant] >= policy.max_concurrent_jobs:
        _skip_rest(jobs, cursors[tenant], REASON_TENANT_LIMIT, skipped)
        return False
    return cursors[tenant] < len(jobs)


def _skip_rest(jobs: list[QueuedJob], start: int, reason: str, skipped: dict[str, str]) -> None:
    for job in jobs[start:]:
        skipped[job.id] = reason
