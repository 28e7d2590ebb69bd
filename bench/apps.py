"""Application endpoints benchmarks, measured side by side in one run.

Embeddings (all-MiniLM-L6-v2, the packaged model), sentences/s:
  (a) `EmbeddingModel.encode` called in-process with the same k sentences a call, and with 64
      (the model alone, batched: the ceiling);
  (b) the `embeddings` Serve deployment (one replica, `@serve.batch`), called through a Serve
      handle by C concurrent callers, each request carrying k sentences (k = 1: chat-like
      single queries; k = 16: small documents), metering included;
so the ratio (b)/(a) is what serving costs (Ray hops, gathering batches, metering writes).

Recommendations, p50/p99 latency of one request (k = 10) at 10k and 100k products, per kind of
request (user with history, with filters, similar items, cold-start user, search), three ways in
one run:
  (a) in-process: the recommender a Serve replica runs (index scoring, query encoding);
  (b) Serve handle: the catalog's recommender deployment (one replica, 1 CPU) called through
      the handle the API uses (`moeplane.serving.recommend.loop_handle`: router on the
      caller's event loop, gRPC);
  (c) HTTP API: ``POST /v1/recommendations`` on ``moeplane api`` in its own process (auth, rpm,
      the catalog, deployment and user-history lookups in SQLite, the Serve call, usage
      metering), one sequential client over keep-alive.
The catalog's rows (products, events), its deployment and its index file are made the way an
upload and index build make them; the deployment is put on Serve directly (no reconciler).

Run: .venv/bin/python bench/apps.py [--only embeddings|recommendations] [--sentences 512]
     [--callers 1,8,32] [--rec-sizes 10000:4000,100000:20000] [--rec-requests 300]
     [--rec-in-process-only]
Each part starts its own local Ray (2 CPUs) and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if not p.endswith("/bench")]  # bench/kernels.py shadows
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = [
    "order",
    "shipping",
    "refund",
    "return",
    "package",
    "delivery",
    "size",
    "colour",
    "jacket",
    "shoes",
    "payment",
    "card",
    "track",
    "account",
    "password",
    "discount",
    "warehouse",
    "customs",
    "express",
    "standard",
    "gift",
    "exchange",
]


def sentences(n: int, seed: int = 0) -> list[str]:
    """Support-chat-like sentences of 6-24 words (deterministic)."""
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(6, 24))) + "?" for _ in range(n)]


def bench_embeddings_in_process(texts: list[str], per_request: int, repeats: int = 2) -> float:
    """Sentences/s of `EmbeddingModel.encode` called directly, ``per_request`` texts a call."""
    from moeplane.modeling.embeddings import EmbeddingModel

    model = EmbeddingModel()
    model.encode(texts[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), per_request):
            model.encode(texts[i : i + per_request], batch_size=64)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


async def _serve_rate(handle, texts: list[str], callers: int, per_request: int) -> float:
    requests = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    queue: asyncio.Queue = asyncio.Queue()
    for i, chunk in enumerate(requests):
        queue.put_nowait((i, chunk))

    async def caller() -> None:
        while not queue.empty():
            i, chunk = queue.get_nowait()
            payload = {
                "request_id": f"req-bench-{time.time_ns()}-{i}",
                "tenant_id": "ten-bench",
                "input": chunk,
            }
            await handle.embed.remote(payload)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return len(texts) / (time.perf_counter() - start)


def bench_embeddings_serve(texts: list[str], callers: list[int], per_request: list[int]):
    import ray
    from ray import serve

    from moeplane.modeling.embeddings import EMBEDDING_MODEL_ID, default_model_path
    from moeplane.serving.embeddings import build
    from moeplane.serving.spec import Resources, ServingSpec
    from moeplane.store.db import Database
    from moeplane.store.migrate import upgrade
    from moeplane.store.models import Tenant

    tmp = tempfile.mkdtemp(prefix="bench-apps-")
    url = f"sqlite:///{tmp}/bench.db"
    upgrade(url)
    db = Database(url)
    with db.session() as session:
        session.add(Tenant(id="ten-bench", name="bench"))
    db.dispose()
    spec = ServingSpec(
        deployment_id="dep-bench",
        tenant_id="ten-bench",
        generation=1,
        model=EMBEDDING_MODEL_ID,
        model_version_id="mv-bench",
        artifact_uri=default_model_path().as_uri(),
        family="sentence_embedding",
        max_batch_size=32,
        resources=Resources(cpus_per_shard=2),
        database_url=url,
        kind="embeddings",
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        handle = serve.run(build(spec.to_args()), name="bench-embed", route_prefix=None)

        async def run_all() -> None:
            await _serve_rate(handle, texts[:64], 8, 4)  # warm-up
            for k in per_request:
                for c in callers:
                    rows.append((k, c, await _serve_rate(handle, texts, c, k)))

        asyncio.run(run_all())
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


# -- recommendations ----------------------------------------------------------------------------

QUERIES = [
    "running shoes",
    "espresso machine",
    "phone case",
    "dog bed",
    "chef's knife",
    "noise cancelling headphones",
    "organic cotton sheets",
    "memory card",
]


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    import numpy as np

    ms = np.array(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


KINDS = (
    "user (history)",
    "user + filters",
    "similar items",
    "cold-start user",
    "search (new query)",
)


def _latencies(call, payload, requests: int) -> tuple[float, float]:
    for i in range(10):  # warm-up
        call(payload(10_000 + i))
    samples = []
    for i in range(requests):
        body = payload(i)
        start = time.perf_counter()
        call(body)
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


class _Catalog:
    """A generated catalog, its index (random unit product embeddings: latency does not depend
    on their values, and embedding 100k products takes minutes on 2 cores) and the requests."""

    def __init__(self, n_products: int, n_users: int, k: int, seed: int = 0):
        import numpy as np

        from moeplane.recommend.generator import generate
        from moeplane.recommend.index import build_index

        self.data = data = generate(n_products, n_users, seed=seed)
        rng = np.random.default_rng(seed)
        embeddings = rng.standard_normal((n_products, 384), dtype=np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        self.index = index = build_index(data.products, data.events, embeddings=embeddings)
        histories: dict[str, list] = {}
        for e in data.events:
            histories.setdefault(e.user_id, []).append((e.product_id, e.type, e.timestamp))
        self.users = [u for u, h in histories.items() if len(h) >= 3]
        self.histories = {u: sorted(histories[u], key=lambda h: -h[2])[:50] for u in self.users}
        self.biggest = max(set(index.category_names), key=list(index.categories).count)
        self.k = k

    def api_body(self, kind: str, i: int) -> dict:
        """The request body of ``POST /v1/recommendations`` (without the catalog)."""
        user = self.users[i % len(self.users)]
        return {
            "user (history)": {"user_id": user},
            "user + filters": {
                "user_id": user,
                "filters": {"category": self.biggest, "price_max": 200.0, "in_stock": True},
            },
            "similar items": {"product_id": self.index.product_ids[(i * 7919) % len(self.index)]},
            "cold-start user": {"user_id": f"new-user-{i}"},
            "search (new query)": {"query": f"{QUERIES[i % len(QUERIES)]} {i}"},
        }[kind] | {"k": self.k}

    def payload(self, kind: str, i: int) -> dict:
        """What the API sends the replica for that body (the user's history looked up)."""
        body = self.api_body(kind, i)
        f = body.get("filters", {})
        return {
            "request_id": f"req-bench-{i}",
            "k": self.k,
            "history": self.histories.get(body.get("user_id", ""), []),
            "product_id": body.get("product_id"),
            "query": body.get("query"),
            "filters": {
                "categories": [f["category"]] if "category" in f else [],
                "price_min": None,
                "price_max": f.get("price_max"),
                "in_stock": f.get("in_stock"),
            },
            "exclude_seen": True,
        }


def bench_recommendations(catalog: _Catalog, requests: int) -> dict[str, tuple[float, float]]:
    """In-process: what a replica runs per request, with the 1 torch thread a replica has;
    query texts are embedded for real, each one new (no cache hit)."""
    import torch

    from moeplane.modeling.embeddings import EmbeddingModel
    from moeplane.recommend.engine import Recommender

    torch.set_num_threads(1)
    engine = Recommender(catalog.index, EmbeddingModel().encode)
    return {
        kind: _latencies(engine.handle, lambda i, kind=kind: catalog.payload(kind, i), requests)
        for kind in KINDS
    }


def _seed_catalog(db, tenant_id: str, catalog: _Catalog, index_dir: Path):
    """The rows an upload + index build leave behind, and the catalog's recommender deployment
    (made by the same code the index build uses)."""
    from sqlalchemy import insert

    from moeplane.recommend.catalogs import _insert_events, _product_row, _serve
    from moeplane.recommend.index import save_index
    from moeplane.store.ids import new_id
    from moeplane.store.models import Catalog, Deployment, Product

    save_index(catalog.index, lambda name, data: (index_dir / name).write_bytes(data))
    with db.session() as session:
        row = Catalog(
            id=new_id("cat"),
            tenant_id=tenant_id,
            name="bench",
            status="ready",
            progress=1.0,
            products_file="file-bench",
            product_count=len(catalog.index),
            event_count=len(catalog.data.events),
            built_generation=1,
            index_uri=index_dir.as_uri(),
        )
        session.add(row)
        session.flush()
        session.execute(insert(Product), [_product_row(row, p) for p in catalog.data.products])
        _insert_events(session, row, catalog.data.events)
        _serve(session, row)
        session.flush()
        deployment = session.get(Deployment, row.deployment_id)
        return row.id, deployment.id


@contextlib.contextmanager
def _api_process(tmp: Path, database_url: str, gcs_address: str):
    """``moeplane api`` in its own process, as `moeplane up` runs it, joined to this Ray; yields
    its base URL. (In this process the client would share the server's GIL.)"""
    import socket
    import subprocess

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {
        "MOEPLANE_HOME": str(tmp / "home"),
        "MOEPLANE_DATABASE_URL": database_url,
        "MOEPLANE_STORAGE_URI": (tmp / "storage").as_uri(),
        "MOEPLANE_RAY_ADDRESS": gcs_address,
        "MOEPLANE_REDIS_URL": "",
        "MOEPLANE_LOG_LEVEL": "warning",
    }
    cli = Path(sys.executable).parent / "moeplane"
    server = subprocess.Popen(
        [str(cli), "api", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moeplane api did not start (exit {server.poll()})")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def bench_recommendations_served(catalog: _Catalog, requests: int) -> dict[str, dict]:
    """Serve handle and HTTP API latencies, per kind: {"handle": (p50, p99), "api": ...}."""
    import httpx
    import ray
    from ray import serve

    from moeplane.serving.deployments import serving_spec
    from moeplane.serving.recommend import build, loop_handle
    from moeplane.store.db import Database
    from moeplane.store.migrate import upgrade
    from moeplane.store.models import Deployment
    from tests.factories import make_tenant

    tmp = Path(tempfile.mkdtemp(prefix="bench-rec-"))
    url = f"sqlite:///{tmp}/bench.db"
    upgrade(url)
    db = Database(url)
    tenant = make_tenant(db, rpm=1_000_000, max_deployments=5, max_replicas=5)
    (tmp / "index").mkdir()
    catalog_id, deployment_id = _seed_catalog(db, tenant.id, catalog, tmp / "index")
    with db.session() as session:
        deployment = session.get(Deployment, deployment_id)
        app_name, args = deployment.app_name, serving_spec(deployment, None, url).to_args()
    # replicas at nice 0, as `moeplane up` starts Ray (Ray's default 15 lets its own daemons
    # preempt them on 2 cores)
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    results: dict[str, dict] = {kind: {} for kind in KINDS}
    try:
        serve.run(build(args), name=app_name, route_prefix=None)
        with db.session() as session:  # what the reconciler records once Serve runs it
            deployment = session.get(Deployment, deployment_id)
            deployment.status, deployment.observed_generation = "running", deployment.generation
            deployment.current_replicas = 1

        async def through_handle() -> None:  # the API's handle: router on this loop, gRPC
            fast = loop_handle(app_name)
            for kind in KINDS:
                for i in range(10):  # warm-up
                    await fast.recommend.remote(catalog.payload(kind, 10_000 + i))
                samples = []
                for i in range(requests):
                    body = catalog.payload(kind, i)
                    start = time.perf_counter()
                    await fast.recommend.remote(body)
                    samples.append(time.perf_counter() - start)
                results[kind]["handle"] = _percentiles(samples)

        asyncio.run(through_handle())
        with (
            _api_process(tmp, url, ray.get_runtime_context().gcs_address) as base_url,
            httpx.Client(base_url=base_url, headers=tenant.headers) as client,
        ):

            def call(body: dict) -> None:
                response = client.post("/v1/recommendations", json=body)
                assert response.status_code == 200, response.text

            for kind in KINDS:  # other request numbers: new query texts (the replica caches)
                results[kind]["api"] = _latencies(
                    call,
                    lambda i, kind=kind: (
                        catalog.api_body(kind, 50_000 + i) | {"catalog": catalog_id}
                    ),
                    requests,
                )
    finally:
        serve.shutdown()
        ray.shutdown()
        db.dispose()
    return results


def report_recommendations(sizes: list[tuple[int, int]], requests: int, served: bool) -> None:
    print(f"recommendations: k=10, {requests} sequential requests per cell, p50 / p99 ms")
    print("| products | request | in-process | Serve handle | HTTP API |")
    print("|---:|---|---:|---:|---:|")
    for n_products, n_users in sizes:
        catalog = _Catalog(n_products, n_users, k=10)
        local = bench_recommendations(catalog, requests)
        print(f"({n_products} products: the scan picked {catalog.index.search_matrix.kind})")
        remote = bench_recommendations_served(catalog, requests) if served else {}
        for kind in KINDS:
            cells = [local[kind], *(remote[kind][w] for w in ("handle", "api") if remote)]
            text = [f"{p50:.1f} / {p99:.1f}" for p50, p99 in cells] + ["-"] * (3 - len(cells))
            print(f"| {n_products} | {kind} | " + " | ".join(text) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--callers", default="1,8,32")
    parser.add_argument("--per-request", default="1,16")
    parser.add_argument("--only", choices=("all", "embeddings", "recommendations"), default="all")
    parser.add_argument("--rec-sizes", default="10000:4000,100000:20000", help="products:users")
    parser.add_argument("--rec-requests", type=int, default=300)
    parser.add_argument("--rec-in-process-only", action="store_true", help="no Ray, no API")
    args = parser.parse_args()
    if args.only in ("all", "embeddings"):
        report_embeddings(args)
    if args.only in ("all", "recommendations"):
        sizes = [tuple(int(x) for x in s.split(":")) for s in args.rec_sizes.split(",")]
        report_recommendations(sizes, args.rec_requests, not args.rec_in_process_only)  # type: ignore[arg-type]


def report_embeddings(args: argparse.Namespace) -> None:
    import torch

    texts = sentences(args.sentences)
    torch.set_num_threads(2)
    sizes = [int(k) for k in args.per_request.split(",")] + [64]
    # in-process before and after the Serve runs, best of both: a shared host's load drifts
    direct = {k: bench_embeddings_in_process(texts, k) for k in sizes}
    rows = bench_embeddings_serve(texts, [int(c) for c in args.callers.split(",")], sizes[:-1])
    direct = {k: max(v, bench_embeddings_in_process(texts, k)) for k, v in direct.items()}
    print(f"embeddings: {len(texts)} sentences of 6-24 words, all-MiniLM-L6-v2, 2 CPU threads")
    print("| setup | sentences/request | callers | sentences/s | vs in-process, same request |")
    print("|---|---|---|---|---|")
    for k, rate in direct.items():
        print(f"| in-process `EmbeddingModel.encode` | {k} | 1 | {rate:.0f} | 1.00 |")
    for k, c, rate in rows:
        print(
            f"| Serve replica (`@serve.batch`) | {k} | {c} | {rate:.0f} | {rate / direct[k]:.2f} |"
        )


if __name__ == "__main__":
    main()
