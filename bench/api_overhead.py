"""Added latency of authentication + rate limiting per request, against a bare FastAPI route.

Both routes live in the same app and server and are called alternately in one run, so the
machine's noise hits both alike; the table reports p50/p99 of each and their ratio. Runs on
SQLite + in-process limiter always, and on PostgreSQL / Redis when MOEPLANE_TEST_DATABASE_URL /
MOEPLANE_TEST_REDIS_URL are set.

    python bench/api_overhead.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moeplane.api.app import create_app
from moeplane.api.deps import TenantCtx
from moeplane.config import Settings
from moeplane.limits import make_limiter
from moeplane.store.db import Database
from moeplane.store.migrate import upgrade
from tests.conftest import LiveServer
from tests.factories import make_tenant


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _app(db: Database, redis_url: str | None, home: Path):
    app = create_app(
        Settings(home=home, database_url=db.url), db=db, limiter=make_limiter(redis_url)
    )

    @app.get("/bench/bare", include_in_schema=False)
    def bare() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/bench/authed", include_in_schema=False)
    def authed(tenant: TenantCtx) -> dict[str, bool]:
        return {"ok": True}

    return app


def measure(db_url: str, redis_url: str | None, requests: int, home: Path) -> dict[str, float]:
    upgrade(db_url)
    db = Database(db_url)
    tenant = make_tenant(db, name=f"bench-{time.time_ns()}", rpm=10_000_000)
    bare, authed = [], []
    with LiveServer(_app(db, redis_url, home)) as server, httpx.Client(base_url=server.url) as c:
        for _ in range(50):  # warm-up: connections, caches, JIT-less Python paths
            c.get("/bench/bare")
            c.get("/bench/authed", headers=tenant.headers)
        for _ in range(requests):
            start = time.perf_counter()
            c.get("/bench/bare").raise_for_status()
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            c.get("/bench/authed", headers=tenant.headers).raise_for_status()
            authed.append(time.perf_counter() - start)
    db.dispose()
    result = {}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        b, a = _percentile(bare, q) * 1e3, _percentile(authed, q) * 1e3
        result |= {f"bare_{name}": b, f"authed_{name}": a, f"ratio_{name}": a / b}
    result["added_p50"] = result["authed_p50"] - result["bare_p50"]
    result["mean_ratio"] = statistics.mean(authed) / statistics.mean(bare)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="moeplane-bench-"))
    setups = [("SQLite", f"sqlite:///{home / 'bench.db'}", "in-process", None)]
    if os.environ.get("MOEPLANE_TEST_DATABASE_URL"):
        pg = os.environ["MOEPLANE_TEST_DATABASE_URL"]
        setups.append(("PostgreSQL", pg, "in-process", None))
        if os.environ.get("MOEPLANE_TEST_REDIS_URL"):
            setups.append(("PostgreSQL", pg, "Redis", os.environ["MOEPLANE_TEST_REDIS_URL"]))
    header = (
        f"{'database':<11} {'limiter':<11} {'bare p50':>9} {'authed p50':>11} "
        f"{'added p50':>10} {'ratio p50':>10} {'bare p99':>9} {'authed p99':>11} "
        f"{'ratio p99':>10}"
    )
    print(f"{args.requests} sequential requests per route over HTTP/1.1 keep-alive (ms)")
    print(header)
    print("-" * len(header))
    for db_name, db_url, limiter_name, redis_url in setups:
        r = measure(db_url, redis_url, args.requests, home)
        print(
            f"{db_name:<11} {limiter_name:<11} {r['bare_p50']:>9.2f} {r['authed_p50']:>11.2f} "
            f"{r['added_p50']:>10.2f} {r['ratio_p50']:>9.2f}x {r['bare_p99']:>9.2f} "
            f"{r['authed_p99']:>11.2f} {r['ratio_p99']:>9.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
