"""Offline evaluation: leave-last-out recall@k and NDCG@k, hybrid against two baselines.

For every user with at least two distinct products, the product they reached last is held out
(all their interactions with it are removed), the co-occurrence and popularity parts of the
index are rebuilt from what remains (the embeddings do not depend on events), and each strategy
recommends k products excluding what the user already saw. A hit at rank r scores recall 1 and
NDCG 1/log2(r + 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moeplane.recommend.index import IndexConfig, RecIndex, build_index
from moeplane.recommend.records import EventRecord, ProductRecord
from moeplane.recommend.scoring import STRATEGIES, Query, Weights, history_of, recommend

__all__ = ["Metrics", "evaluate", "leave_last_out"]


@dataclass(frozen=True)
class Metrics:
    strategy: str
    recall: float
    ndcg: float
    users: int


def leave_last_out(
    events: Sequence[EventRecord],
) -> tuple[list[EventRecord], dict[str, str]]:
    """(training events, user -> held-out product): the product each user first touched last."""
    first: dict[tuple[str, str], float] = {}
    for e in events:
        key = (e.user_id, e.product_id)
        first[key] = min(first.get(key, e.timestamp), e.timestamp)
    last: dict[str, tuple[float, str]] = {}
    distinct: dict[str, int] = {}
    for (user, product), t in first.items():
        distinct[user] = distinct.get(user, 0) + 1
        if user not in last or (t, product) > last[user]:
            last[user] = (t, product)
    held = {u: p for u, (_, p) in last.items() if distinct[u] >= 2}
    train = [e for e in events if held.get(e.user_id) != e.product_id]
    return train, held


def evaluate(
    products: Sequence[ProductRecord],
    events: Sequence[EventRecord],
    embeddings: np.ndarray,
    *,
    k: int = 10,
    weights: Weights = Weights(),
    max_users: int = 2000,
    seed: int = 0,
    config: IndexConfig = IndexConfig(),
) -> list[Metrics]:
    """Metrics of every strategy in `STRATEGIES` on the same held-out users."""
    train, held = leave_last_out(events)
    index: RecIndex = build_index(products, train, embeddings=embeddings, config=config)
    users = sorted(held)
    if len(users) > max_users:
        rng = np.random.default_rng(seed)
        users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
    by_user: dict[str, list[tuple[str, str, float]]] = {u: [] for u in users}
    for e in train:
        if e.user_id in by_user:
            by_user[e.user_id].append((e.product_id, e.type, e.timestamp))
    gains = {s: [] for s in STRATEGIES}
    for user in users:
        history = history_of(index, by_user[user])
        target = index.position[held[user]]
        for strategy in STRATEGIES:
            recs, _ = recommend(index, Query(k=k, history=history, strategy=strategy), weights)
            ranks = [r for r, rec in enumerate(recs) if rec.position == target]
            gains[strategy].append(1.0 / np.log2(ranks[0] + 2) if ranks else 0.0)
    out = []
    for strategy in STRATEGIES:
        g = np.array(gains[strategy])
        recall = float((g > 0).mean()) if len(g) else 0.0
        out.append(Metrics(strategy, recall, float(g.mean()) if len(g) else 0.0, len(g)))
    return out
