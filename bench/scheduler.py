"""Benchmark the fair-share scheduler: planning time and fairness over a simulated day.

    python bench/scheduler.py            # full run (a simulated day)
    python bench/scheduler.py --quick    # fewer repeats, a simulated 4 hours

1. Planning time: p50/p99 of `plan` for 10,000 queued jobs across 1,000
   tenants with 64 free CPUs and 200 running jobs.
2. Fairness: a simulated day, one tick every 5 s, on a 64-CPU cluster. Equal
   weights; every tenant submits more than its fair share and a few "heavy"
   tenants submit 10x more than the others. Jain's index of the service
   (cpu-seconds) each backlogged tenant attained, for `plan` and for a FIFO
   baseline fed the same arrivals. 1.0 is perfectly even.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from moeplane.jobs.scheduler import (
    QueuedJob,
    Resources,
    RunningJob,
    SchedulerConfig,
    TenantPolicy,
    plan,
)

NOW = 1_800_000_000.0
JOB_CPUS = (1, 1, 2, 2, 4, 8)

Scheduler = Callable[
    [Sequence[QueuedJob], Sequence[RunningJob], Resources, Mapping[str, TenantPolicy], float],
    Sequence[str],
]


# --- 1. planning time -----------------------------------------------------------------


def planning_input(rng: random.Random, n_jobs: int, n_tenants: int):
    tenants = [f"tenant-{i:04d}" for i in range(n_tenants)]
    policies = {
        t: TenantPolicy(t, rng.randint(1, 8), rng.choice([1.0, 1.0, 2.0]), rng.uniform(0, 1e6))
        for t in tenants
    }
    queued = [
        QueuedJob(
            f"ftjob-{i:05d}",
            rng.choice(tenants),
            Resources(rng.choice(JOB_CPUS), rng.choice([0, 0, 0, 1])),
            queued_at=NOW - rng.uniform(0, 7_200),  # some older than aging_seconds
            priority=rng.randint(0, 2),
        )
        for i in range(n_jobs)
    ]
    running = [
        RunningJob(f"run-{i}", rng.choice(tenants), Resources(rng.choice(JOB_CPUS)))
        for i in range(200)
    ]
    return queued, running, policies


def bench_planning(repeats: int, seed: int) -> dict[str, float]:
    queued, running, policies = planning_input(random.Random(seed), 10_000, 1_000)
    free = Resources(64, 8)
    times, admitted = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = plan(queued, running, free, policies, NOW)
        times.append((time.perf_counter() - start) * 1e3)
        admitted = len(result.admit)
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "admitted": admitted}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


# --- 2. fairness over a simulated day -------------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    seconds: float = 86_400.0
    tick_s: float = 5.0
    cluster_cpus: float = 64.0
    tenants: int = 40
    heavy_tenants: int = 2
    heavy_factor: float = 10.0  # heavy tenants submit this many times more
    light_load: float = 1.5  # a light tenant's offered load, in fair shares
    mean_duration_s: float = 300.0
    half_life_s: float = 4 * 3_600.0  # decay of attained_service given to `plan`
    backlogged_fraction: float = 0.5  # "backlogged": jobs queued in at least this share of ticks


@dataclass
class SimResult:
    service: dict[str, float]  # cpu-seconds attained over the whole run
    backlogged: list[str]
    utilization: float
    plan_calls: int
    max_queue: int = 0
    plan_ms: list[float] = field(default_factory=list)


def arrivals(cfg: SimConfig, rng: random.Random) -> list[QueuedJob]:
    """Poisson arrivals per tenant; sizes from JOB_CPUS, exponential durations."""
    fair_cpus = cfg.cluster_cpus / cfg.tenants
    job_work = statistics.fmean(JOB_CPUS) * cfg.mean_duration_s  # cpu-seconds per job
    jobs = []
    for i in range(cfg.tenants):
        tenant = f"tenant-{i:02d}"
        load = cfg.light_load * (cfg.heavy_factor if i < cfg.heavy_tenants else 1.0)
        rate = load * fair_cpus / job_work
        t = rng.expovariate(rate)
        while t < cfg.seconds:
            jobs.append(
                QueuedJob(f"{tenant}-{len(jobs)}", tenant, Resources(rng.choice(JOB_CPUS)), NOW + t)
            )
            t += rng.expovariate(rate)
    return sorted(jobs, key=lambda j: j.queued_at)


def durations(jobs: Sequence[QueuedJob], cfg: SimConfig, rng: random.Random) -> dict[str, float]:
    return {j.id: min(3_600.0, max(30.0, rng.expovariate(1 / cfg.mean_duration_s))) for j in jobs}


def fifo(queued, running, capacity, policies, now) -> list[str]:
    """Baseline: first come first served, first fit (a job that fits may pass one that doesn't)."""
    admit, free = [], capacity
    for job in sorted(queued, key=lambda j: (j.queued_at, j.id)):
        if job.demand.fits(free):
            admit.append(job.id)
            free = free.sub(job.demand)
    return admit


def fair_share(queued, running, capacity, policies, now) -> tuple[str, ...]:
    return plan(queued, running, capacity, policies, now, SchedulerConfig()).admit


def simulate(cfg: SimConfig, jobs: Sequence[QueuedJob], runtime, schedule: Scheduler) -> SimResult:
    tenants = sorted({j.tenant_id for j in jobs})
    decay = 0.5 ** (cfg.tick_s / cfg.half_life_s)
    recent, total = dict.fromkeys(tenants, 0.0), dict.fromkeys(tenants, 0.0)
    running_cpus = dict.fromkeys(tenants, 0.0)
    queued_ticks = dict.fromkeys(tenants, 0)
    queued: list[QueuedJob] = []
    running: dict[str, QueuedJob] = {}
    ends: list[tuple[float, str]] = []
    result = SimResult(total, [], 0.0, 0)
    next_job, ticks, busy = 0, int(cfg.seconds / cfg.tick_s), 0.0
    for k in range(ticks):
        now = NOW + k * cfg.tick_s
        while next_job < len(jobs) and jobs[next_job].queued_at <= now:
            queued.append(jobs[next_job])
            next_job += 1
        while ends and ends[0][0] <= now:
            job = running.pop(heapq.heappop(ends)[1])
            running_cpus[job.tenant_id] -= job.demand.cpus
        free = cfg.cluster_cpus - sum(running_cpus.values())
        if free >= min(JOB_CPUS) and queued:
            admitted = _plan_tick(schedule, queued, running, free, recent, now, result)
            for job in admitted:
                running[job.id] = job
                running_cpus[job.tenant_id] += job.demand.cpus
                heapq.heappush(ends, (now + runtime[job.id], job.id))
            queued = [j for j in queued if j.id not in running]
        for tenant in {j.tenant_id for j in queued}:
            queued_ticks[tenant] += 1
        for tenant, cpus in running_cpus.items():
            recent[tenant] = recent[tenant] * decay + cpus * cfg.tick_s
            total[tenant] += cpus * cfg.tick_s
            busy += cpus * cfg.tick_s
        result.max_queue = max(result.max_queue, len(queued))
    result.utilization = busy / (cfg.cluster_cpus * cfg.seconds)
    result.backlogged = [t for t in tenants if queued_ticks[t] >= cfg.backlogged_fraction * ticks]
    return result


def _plan_tick(schedule, queued, running, free, recent, now, result) -> list[QueuedJob]:
    policies = {t: TenantPolicy(t, 1_000, 1.0, s) for t, s in recent.items()}
    current = [RunningJob(j.id, j.tenant_id, j.demand) for j in running.values()]
    start = time.perf_counter()
    ids = set(schedule(queued, current, Resources(free), policies, now))
    result.plan_ms.append((time.perf_counter() - start) * 1e3)
    result.plan_calls += 1
    return [j for j in queued if j.id in ids]


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: (sum x)^2 / (n * sum x^2); 1.0 is perfectly even."""
    squares = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * squares) if squares else 1.0


def bench_fairness(cfg: SimConfig, seed: int) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    jobs = arrivals(cfg, rng)
    runtime = durations(jobs, cfg, rng)
    rows = {}
    for name, schedule in (("fair share (plan)", fair_share), ("FIFO baseline", fifo)):
        sim = simulate(cfg, jobs, runtime, schedule)
        service = [sim.service[t] for t in sim.backlogged]
        heavy = [sim.service[f"tenant-{i:02d}"] for i in range(cfg.heavy_tenants)]
        light = [s for t, s in sim.service.items() if int(t[-2:]) >= cfg.heavy_tenants]
        rows[name] = {
            "jain": jain(service),
            "backlogged": len(sim.backlogged),
            "heavy_light": statistics.fmean(heavy) / statistics.fmean(light),
            "utilization": sim.utilization,
            "plan_p50_ms": percentile(sim.plan_ms, 50),
            "max_queue": sim.max_queue,
        }
    return rows


# --- output ---------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, headers))] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 4 simulated hours")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    repeats = 20 if args.quick else 100
    cfg = SimConfig(seconds=4 * 3_600.0) if args.quick else SimConfig()

    timing = bench_planning(repeats, args.seed)
    print(f"## plan(): 10,000 queued jobs, 1,000 tenants, 64 free CPUs ({repeats} runs)\n")
    print(table(["p50 ms", "p99 ms", "admitted"], [list(timing.values())]))

    hours = cfg.seconds / 3_600
    print(
        f"\n## Simulated {hours:g} h, tick {cfg.tick_s:g} s, {cfg.cluster_cpus:g} CPUs, "
        f"{cfg.tenants} equal-weight tenants ({cfg.heavy_tenants} submit "
        f"{cfg.heavy_factor:g}x more)\n"
    )
    fairness = bench_fairness(cfg, args.seed)
    headers = ["scheduler", "Jain (backlogged)", "backlogged tenants", "heavy/light service"]
    headers += ["utilization", "plan p50 ms", "max queue"]
    print(table(headers, [[name, *row.values()] for name, row in fairness.items()]))


if __name__ == "__main__":
    main()
