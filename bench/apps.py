"""Application endpoints benchmarks, measured side by side in one run.

Embeddings (all-MiniLM-L6-v2, the packaged model), sentences/s:
  (a) `EmbeddingModel.encode` called in-process with the same k sentences a call, and with 64
      (the model alone, batched: the ceiling);
  (b) the `embeddings` Serve deployment (one replica, `@serve.batch`), called through a Serve
      handle by C concurrent callers, each request carrying k sentences (k = 1: chat-like
      single queries; k = 16: small documents), metering included;
so the ratio (b)/(a) is what serving costs (Ray hops, gathering batches, metering writes).

Recommendations, p50/p99 latency of one request (k = 10) at 10k and 100k products: the
recommender a Serve replica runs, in-process (index scoring, query encoding), per kind of
request (user with history, with filters, similar items, cold-start user, search).

Run: .venv/bin/python bench/apps.py [--only embeddings|recommendations] [--sentences 512]
     [--callers 1,8,32] [--rec-sizes 10000:4000,100000:20000] [--rec-requests 300]
The embeddings part starts its own local Ray (2 CPUs) and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
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
            payload = {"request_id": f"req-bench-{time.time_ns()}-{i}", "tenant_id": "ten-bench",
                       "input": chunk}  # fmt: skip
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

QUERIES = ["running shoes", "espresso machine", "phone case", "dog bed", "chef's knife",
           "noise cancelling headphones", "organic cotton sheets", "memory card"]  # fmt: skip


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    import numpy as np

    ms = np.array(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def bench_recommendations(
    n_products: int, n_users: int, requests: int = 300, k: int = 10, seed: int = 0
) -> list[tuple[str, float, float]]:
    """Latency of one catalog's recommender in-process (what a replica runs per request, 1 torch
    thread as a replica has): (request kind, p50 ms, p99 ms). The catalog and its event log
    are generated; product embeddings are random unit vectors (latency does not depend on their
    values, and embedding 100k products takes minutes on 2 cores); query texts are embedded for
    real, each one new (no cache hit)."""
    import numpy as np
    import torch

    from moeplane.modeling.embeddings import EmbeddingModel
    from moeplane.recommend.engine import Recommender
    from moeplane.recommend.generator import generate
    from moeplane.recommend.index import build_index

    torch.set_num_threads(1)
    data = generate(n_products, n_users, seed=seed)
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((n_products, 384), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    index = build_index(data.products, data.events, embeddings=embeddings)
    engine = Recommender(index, EmbeddingModel().encode)
    histories: dict[str, list] = {}
    for e in data.events:
        histories.setdefault(e.user_id, []).append((e.product_id, e.type, e.timestamp))
    users = [h[-50:] for h in histories.values() if len(h) >= 3]
    biggest = max(set(index.category_names), key=list(index.categories).count)
    kinds = {
        "user (history)": lambda i: {"history": users[i % len(users)], "k": k},
        "user + filters": lambda i: {
            "history": users[i % len(users)],
            "k": k,
            "filters": {"categories": [biggest], "price_max": 200.0, "in_stock": True},
        },
        "similar items": lambda i: {
            "product_id": index.product_ids[(i * 7919) % n_products],
            "k": k,
        },
        "cold-start user": lambda i: {"history": [], "k": k},
        "search (new query)": lambda i: {"query": f"{QUERIES[i % len(QUERIES)]} {i}", "k": k},
    }
    rows = []
    for name, payload in kinds.items():
        for i in range(10):  # warm-up
            engine.handle(payload(10_000 + i))
        samples = []
        for i in range(requests):
            body = payload(i)
            start = time.perf_counter()
            engine.handle(body)
            samples.append(time.perf_counter() - start)
        rows.append((name, *_percentiles(samples)))
    return rows


def report_recommendations(sizes: list[tuple[int, int]], requests: int) -> None:
    print(f"recommendations: in-process replica scoring, k=10, {requests} requests per row")
    print("| products | users | request | p50 ms | p99 ms |")
    print("|---:|---:|---|---:|---:|")
    for n_products, n_users in sizes:
        for name, p50, p99 in bench_recommendations(n_products, n_users, requests):
            print(f"| {n_products} | {n_users} | {name} | {p50:.1f} | {p99:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--callers", default="1,8,32")
    parser.add_argument("--per-request", default="1,16")
    parser.add_argument("--only", choices=("all", "embeddings", "recommendations"), default="all")
    parser.add_argument("--rec-sizes", default="10000:4000,100000:20000", help="products:users")
    parser.add_argument("--rec-requests", type=int, default=300)
    args = parser.parse_args()
    if args.only in ("all", "embeddings"):
        report_embeddings(args)
    if args.only in ("all", "recommendations"):
        sizes = [tuple(int(x) for x in s.split(":")) for s in args.rec_sizes.split(",")]
        report_recommendations(sizes, args.rec_requests)  # type: ignore[arg-type]


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
