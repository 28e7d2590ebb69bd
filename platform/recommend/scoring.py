"""Hybrid recommendation scoring over a `RecIndex`: pure functions, matrix math only.

score = semantic · sim + cooccurrence · co + popularity · pop, where
- sim: cosine of each product with the query text, the anchor product, or the user's taste
  (the recency- and type-weighted mean of the embeddings of what they touched);
- co: what co-occurs with the anchors (each anchor's top-M neighbours, weighted like the
  anchors, scattered into one (N,) vector and scaled to 0..1);
- pop: the index's trending popularity (0..1).
Cold start: a user without history gets trending products (or, with a query, search results);
a product without interactions has no neighbours, so similarity and popularity carry it.
Filters and ``exclude_seen`` mask products out before the top-k. Each result carries the
component that contributed most as a short reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moeplane.recommend.index import EVENT_WEIGHTS, RecIndex

__all__ = [
    "STRATEGIES",
    "Filters",
    "History",
    "Query",
    "Recommendation",
    "Weights",
    "history_of",
    "recommend",
]

STRATEGIES = ("hybrid", "popularity", "embedding")  # the last two are the evaluation baselines
MAX_HISTORY = 50  # a user's most recent interactions that count


@dataclass(frozen=True)
class Weights:
    """Tunables, chosen by `moeplane eval recommendations` on the demo data."""

    semantic: float = 1.0
    cooccurrence: float = 0.8
    popularity: float = 0.6
    # a user's interaction counts half after this long before their latest one
    history_half_life_days: float = 10.0

    def __post_init__(self) -> None:
        assert min(self.semantic, self.cooccurrence, self.popularity) >= 0
        assert self.history_half_life_days > 0


@dataclass(frozen=True)
class Filters:
    categories: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool | None = None


@dataclass(frozen=True)
class History:
    """A user's interactions as index positions, newest last."""

    items: np.ndarray  # (H,) int64
    kinds: tuple[str, ...]  # (H,) view | cart | purchase
    timestamps: np.ndarray  # (H,) float64 unix seconds

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Query:
    k: int = 10
    history: History | None = None
    product: int | None = None  # an anchor product's position
    query_vector: np.ndarray | None = None  # (D,) unit vector of the query text
    query_text: str = ""
    filters: Filters = Filters()
    exclude_seen: bool = True
    strategy: str = "hybrid"


@dataclass(frozen=True)
class Recommendation:
    position: int
    score: float
    reason: str


def history_of(index: RecIndex, interactions: Sequence[tuple[str, str, float]]) -> History:
    """(product_id, type, timestamp) in any order -> `History` of the newest `MAX_HISTORY`
    known ones (products the index does not know are dropped)."""
    known = sorted(
        (ts, index.position[pid], kind)
        for pid, kind, ts in interactions
        if pid in index.position and kind in EVENT_WEIGHTS
    )[-MAX_HISTORY:]
    return History(
        items=np.array([p for _, p, _ in known], dtype=np.int64),
        kinds=tuple(k for _, _, k in known),
        timestamps=np.array([t for t, _, _ in known], dtype=np.float64),
    )


def _anchors(query: Query, weights: Weights) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Positions, weights and kinds of what the recommendation starts from."""
    items: list[np.ndarray] = []
    strength: list[np.ndarray] = []
    kinds: tuple[str, ...] = ()
    h = query.history
    if h is not None and len(h):
        age = h.timestamps.max() - h.timestamps  # (H,)
        decay = np.exp2(-age / (weights.history_half_life_days * 86_400.0))
        type_w = np.array([EVENT_WEIGHTS[k] for k in h.kinds])
        items.append(h.items)
        strength.append(type_w * decay)
        kinds = h.kinds
    if query.product is not None:
        items.append(np.array([query.product], dtype=np.int64))
        top = max((float(s.max()) for s in strength), default=1.0)
        strength.append(np.array([2.0 * top]))  # the product asked about leads
        kinds = (*kinds, "anchor")
    if not items:
        return np.zeros(0, np.int64), np.zeros(0), ()
    return np.concatenate(items), np.concatenate(strength), kinds


def _mask(index: RecIndex, query: Query) -> np.ndarray:
    n = len(index)
    keep = np.ones(n, dtype=bool)
    f = query.filters
    if f.categories:
        codes = [index.category_code[c] for c in f.categories if c in index.category_code]
        keep &= np.isin(index.categories, np.array(codes, dtype=np.int32))
    if f.price_min is not None:
        keep &= index.prices >= f.price_min
    if f.price_max is not None:
        keep &= index.prices <= f.price_max
    if f.in_stock is not None:
        keep &= index.in_stock == f.in_stock
    if query.product is not None:
        keep[query.product] = False
    if query.exclude_seen and query.history is not None and len(query.history):
        keep[query.history.items] = False
    return keep


def _cooccurrence(index: RecIndex, anchors: np.ndarray, strength: np.ndarray) -> np.ndarray:
    co = np.zeros(len(index), dtype=np.float32)
    if len(anchors) == 0:
        return co
    ids = index.neighbours[anchors]  # (A, M)
    contrib = index.neighbour_weights[anchors] * strength[:, None].astype(np.float32)  # (A, M)
    valid = ids >= 0
    np.add.at(co, ids[valid], contrib[valid])
    top = co.max()
    return co / top if top > 0 else co


def _similarity(embeddings: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``embeddings @ vectors`` in the embeddings' dtype (float16 in an index), through torch,
    whose thread count is the replica's (numpy's BLAS starts its own threads: p50 20x worse
    on a shared host). For a few rows (the reasons); the whole catalog goes through
    :func:`_similarity_all`."""
    import torch

    left = torch.from_numpy(embeddings)
    right = torch.from_numpy(np.ascontiguousarray(vectors, dtype=embeddings.dtype))
    return (left @ right).float().numpy()


def _top_k(score: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best kept scores, best first (fewer when fewer are kept)."""
    import torch

    n = min(k, int(keep.sum()))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    masked = torch.from_numpy(np.where(keep, score, -np.inf).astype(np.float32))
    return torch.topk(masked, n, sorted=True).indices.numpy()


RERANK = 64  # candidates beyond k re-scored exactly after an inexact scan


def _parts(
    index: RecIndex,
    query: Query,
    weights: Weights,
    sim: np.ndarray | None,
    anchors: np.ndarray,
    strength: np.ndarray,
) -> tuple[dict[str, np.ndarray], str]:
    """The score's components (summed for the score) and the strategy's name. ``sim`` is None
    when there is nothing to be similar to (a cold-start user without a query)."""
    if query.strategy == "popularity" or sim is None:
        return {"popularity": index.popularity}, (
            "popularity" if query.strategy == "popularity" else "popular"
        )
    if query.strategy == "embedding":
        return {"semantic": sim}, "embedding"
    parts = {
        "semantic": weights.semantic * sim,
        "cooccurrence": weights.cooccurrence * _cooccurrence(index, anchors, strength),
        "popularity": weights.popularity * index.popularity,
    }
    if query.query_vector is not None:
        return parts, "search"
    if query.history is not None and len(query.history):
        return parts, "hybrid"
    return parts, "similar_items"


def recommend(
    index: RecIndex, query: Query, weights: Weights = Weights()
) -> tuple[list[Recommendation], str]:
    """The top ``query.k`` products and the strategy used (hybrid | similar_items | search |
    popular, or a baseline's name).

    The catalog scan (`RecIndex.search_matrix`) may be inexact (float16, bfloat16, int8:
    cosines off by < 0.005); then its scores only pick the best ``k + RERANK`` candidates,
    whose similarity is computed again in float32 from the stored rows, so the ranking and
    every returned score are float32's."""
    assert query.k >= 1 and query.strategy in STRATEGIES
    anchors, strength, kinds = _anchors(query, weights)
    e = index.embeddings
    taste = None
    if query.query_vector is not None:
        taste = np.asarray(query.query_vector, dtype=np.float32)
    elif len(anchors):
        taste = (strength[:, None] * e[anchors].astype(np.float32)).sum(axis=0)  # (D,)
        taste = taste.astype(np.float32)
        taste /= max(float(np.linalg.norm(taste)), 1e-9)
    sim = index.search_matrix.scores(taste) if taste is not None else None  # (N,)
    parts, strategy = _parts(index, query, weights, sim, anchors, strength)
    keep = _mask(index, query)
    score = sum(parts.values())
    if "semantic" in parts and not index.search_matrix.exact:
        # the scan's cosines only pick candidates; float32 ones from the stored rows rank them
        assert taste is not None
        pool = _top_k(score, keep, query.k + RERANK)
        exact = _similarity(e[pool].astype(np.float32), taste[:, None])[:, 0]
        scale = 1.0 if strategy == "embedding" else weights.semantic  # as in _parts
        parts["semantic"][pool] = scale * exact  # a fresh array: safe to write
        score[pool] = sum(part[pool] for part in parts.values())
        keep = np.zeros_like(keep)
        keep[pool] = True
    top = _top_k(score, keep, query.k)
    reasons = _reasons(index, query, top, parts, anchors, strength, kinds)
    return [
        Recommendation(int(i), float(score[i]), reason)
        for i, reason in zip(top, reasons, strict=True)
    ], strategy


def _reasons(
    index: RecIndex,
    query: Query,
    top: np.ndarray,
    parts: dict[str, np.ndarray],
    anchors: np.ndarray,
    strength: np.ndarray,
    kinds: tuple[str, ...],
) -> list[str]:
    """One short reason per result: the component that contributed most, with its anchor."""
    if len(top) == 0:
        return []
    names = list(parts)
    contrib = np.stack([parts[n][top] for n in names])  # (C, k)
    main = [names[j] for j in contrib.argmax(axis=0)]
    sims = (
        _similarity(index.embeddings[top], index.embeddings[anchors].T) if len(anchors) else None
    )  # (k, A)
    links = None
    if len(anchors):
        ids = index.neighbours[anchors]  # (A, M)
        w = np.where(ids[None, :, :] == top[:, None, None], index.neighbour_weights[anchors], 0)
        links = w.max(axis=2) * strength[None, :]  # (k, A)
    out = []
    for row, (i, what) in enumerate(zip(top, main, strict=True)):
        if what == "cooccurrence" and links is not None and links[row].max() > 0:
            a = int(links[row].argmax())
            verb = "viewed" if kinds[a] == "view" else "bought"
            out.append(f"often {verb} together with {index.titles[anchors[a]]}")
        elif what == "semantic" and query.query_vector is not None:
            out.append(
                f"matches '{query.query_text}'" if query.query_text else "matches your search"
            )
        elif what == "semantic" and sims is not None:
            out.append(f"similar to {index.titles[anchors[int(sims[row].argmax())]]}")
        else:
            out.append(f"popular in {index.category_names[index.categories[i]]}")
    return out
