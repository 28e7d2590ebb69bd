"""Application endpoints benchmarks, measured side by side in one run.

Recommendations, p50/p99 latency of one request (k = 10) at 10k and 100k products: the
recommender a Serve replica runs, in-process (index scoring, query encoding), per kind of
request (user with history, with filters, similar items, cold-start user, search).

Run: .venv/bin/python bench/apps.py [--rec-sizes 10000:4000,100000:20000] [--rec-requests 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if not p.endswith("/bench")]  # bench/kernels.py shadows
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
    parser.add_argument("--rec-sizes", default="10000:4000,100000:20000", help="products:users")
    parser.add_argument("--rec-requests", type=int, default=300)
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.rec_sizes.split(",")]
    report_recommendations(sizes, args.rec_requests)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
