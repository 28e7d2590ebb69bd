"""The recommendation index of one catalog: built once per generation, stored as files.

What it holds, one row per product (position = row):
- ``embeddings`` (N, D): unit vectors of title + description (all-MiniLM-L6-v2);
- ``neighbours`` / ``neighbour_weights`` (N, M): each product's top-M co-occurring products
  (cosine over users' weighted interactions), -1 padded;
- ``popularity`` (N,): interactions weighted by type and decayed with age, log-scaled to 0..1;
- product metadata for filters and responses (category code, price, in stock, title).

Files: ``arrays.npz`` (the arrays) and ``meta.json`` (ids, titles, category names, build info).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from moeplane.recommend.records import EventRecord, ProductRecord

__all__ = [
    "CALIBRATE_FROM",
    "EVENT_WEIGHTS",
    "SEARCH_KINDS",
    "IndexConfig",
    "RecIndex",
    "SearchMatrix",
    "build_index",
    "cooccurrence_neighbours",
    "fastest_search_matrix",
    "load_index",
    "popularity_scores",
    "save_index",
]

# how much each interaction says about interest (a purchase outweighs a glance)
EVENT_WEIGHTS = {"view": 1.0, "cart": 3.0, "purchase": 5.0}
_ARRAYS = "arrays.npz"
_META = "meta.json"


@dataclass(frozen=True)
class IndexConfig:
    neighbours: int = 50  # co-occurring products kept per product
    popularity_half_life_days: float = 14.0  # trending: last weeks count most
    embed_batch: int = 128


@dataclass
class RecIndex:
    product_ids: list[str]
    titles: list[str]
    category_names: list[str]
    categories: np.ndarray  # (N,) int32 code into category_names
    prices: np.ndarray  # (N,) float32
    in_stock: np.ndarray  # (N,) bool
    embeddings: np.ndarray  # (N, D) float16, unit rows (half the bytes each request streams)
    neighbours: np.ndarray  # (N, M) int32, -1 = none
    neighbour_weights: np.ndarray  # (N, M) float32 in 0..1
    popularity: np.ndarray  # (N,) float32 in 0..1
    info: dict[str, Any] = field(default_factory=dict)  # built_at, events, config

    def __post_init__(self) -> None:
        n = len(self.product_ids)
        assert self.embeddings.shape[0] == n and self.neighbours.shape[0] == n
        assert self.categories.shape == self.prices.shape == self.popularity.shape == (n,)

    def __len__(self) -> int:
        return len(self.product_ids)

    @cached_property
    def position(self) -> dict[str, int]:
        return {pid: i for i, pid in enumerate(self.product_ids)}

    @cached_property
    def category_code(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.category_names)}

    @cached_property
    def search_matrix(self) -> SearchMatrix:
        """The embeddings in the representation this machine scans fastest (made on first use,
        once per loaded index): see :func:`fastest_search_matrix`."""
        return fastest_search_matrix(self.embeddings)


# Below this many products every request scans little: keep the stored float16, no calibration.
CALIBRATE_FROM = 20_000
SEARCH_KINDS = ("float16", "bfloat16", "float32", "int8")


def _int8_available() -> bool:
    """fbgemm's int8 GEMM (x86 with AVX2): torch's dynamically quantized linear."""
    import torch

    return torch.backends.quantized.engine in ("x86", "fbgemm") and hasattr(
        torch.ops.quantized, "linear_dynamic"
    )


class SearchMatrix:
    """Every product's cosine with one unit query vector: the (N, D) matrix-vector product each
    request makes, held as ``kind``:
    - float32 (exact), float16 (as stored; results rounded to 11 bits), bfloat16 (< 0.004
      off: an 8-bit mantissa);
    - int8: rows quantized with their own scale and multiplied by fbgemm's int8 GEMM (half the
      bytes of float16, and streaming the bytes is all the time): < 0.005 off. The query is
      quantized to 7 bits (``reduce_range``): with 8, AVX2's int16 pair sums saturate and
      cosines moved by up to 0.04.
    Scores of an inexact kind only choose candidates; `scoring` re-scores those exactly.
    """

    def __init__(self, embeddings: np.ndarray, kind: str = "float16"):
        import torch

        assert kind in SEARCH_KINDS, kind
        self.kind = kind
        self.exact = kind == "float32"
        stored = torch.from_numpy(np.ascontiguousarray(embeddings))
        if kind != "int8":
            self._matrix = stored.to(getattr(torch, kind))
            return
        assert _int8_available(), "int8 search needs torch's fbgemm/x86 quantized engine"
        import warnings

        rows = stored.float()
        scales = (rows.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
        with warnings.catch_warnings():  # torch marks quantized tensors as deprecated (2.13)
            warnings.simplefilter("ignore")
            weight = torch.quantize_per_channel(
                rows, scales, torch.zeros(len(rows), dtype=torch.long), 0, torch.qint8
            )
            self._packed = torch.ops.quantized.linear_prepack(weight, None)

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """(N,) float32 cosines of every row with ``vector`` (D,)."""
        import torch

        query = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32))
        if self.kind == "int8":
            return torch.ops.quantized.linear_dynamic(query[None], self._packed, True)[0].numpy()
        return torch.mv(self._matrix, query.to(self._matrix.dtype)).float().numpy()


def fastest_search_matrix(embeddings: np.ndarray, *, repeats: int = 5) -> SearchMatrix:
    """``embeddings`` (unit rows) as the `SearchMatrix` kind that scans fastest on this CPU,
    timed on the whole matrix with the caller's torch threads (a slice would sit in cache and
    time the cache). Every request scans the whole matrix, so this is most of a large
    catalog's latency, and the winner depends on the hardware: 100k x 384 on one core took
    float16 16 ms, float32 11 ms, bfloat16 4 ms on a Xeon with AMX; float16 9 ms, bfloat16
    10 ms, float32 25 ms, int8 6 ms on an AMD EPYC."""
    import time

    if len(embeddings) < CALIBRATE_FROM:
        return SearchMatrix(embeddings)
    kinds = [k for k in SEARCH_KINDS if k != "int8" or _int8_available()]
    probe = np.asarray(embeddings[len(embeddings) // 2], dtype=np.float32)
    best, best_s = None, float("inf")
    for kind in kinds:
        matrix = SearchMatrix(embeddings, kind)
        matrix.scores(probe)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            matrix.scores(probe)
            times.append(time.perf_counter() - start)
        if sorted(times)[repeats // 2] < best_s:
            best, best_s = matrix, sorted(times)[repeats // 2]
    assert best is not None
    return best


def popularity_scores(
    n: int, items: np.ndarray, weights: np.ndarray, ages_s: np.ndarray, half_life_days: float
) -> np.ndarray:
    """(n,) in 0..1: type-weighted interactions halved every ``half_life_days``, log-scaled."""
    decay = np.exp2(-ages_s / (half_life_days * 86_400.0))
    raw = np.bincount(items, weights=weights * decay, minlength=n)  # (n,)
    scaled = np.log1p(raw)
    top = scaled.max() if len(scaled) else 0.0
    return (scaled / top if top > 0 else scaled).astype(np.float32)


def cooccurrence_neighbours(
    n: int, users: np.ndarray, items: np.ndarray, weights: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's top-``m`` co-occurring items: cosine similarity of the items' columns in the
    user x item matrix (a user's strongest interaction per item, damped by how many items the
    user touched, so heavy users do not link everything). Returns (n, m) ids (-1 padded) and
    weights; vectorised over sparse matrices, no loop over items."""
    from scipy import sparse

    out_ids = np.full((n, m), -1, dtype=np.int32)
    out_w = np.zeros((n, m), dtype=np.float32)
    if len(items) == 0:
        return out_ids, out_w
    n_users = int(users.max()) + 1
    ui = sparse.coo_matrix((weights, (users, items)), shape=(n_users, n)).tocsr()
    ui.sum_duplicates()
    ui.data = np.minimum(ui.data, 5.0)  # repeated views do not outweigh a purchase
    per_user = np.diff(ui.indptr).astype(np.float64)
    ui = sparse.diags(1.0 / np.sqrt(np.maximum(per_user, 1.0))) @ ui
    co = (ui.T @ ui).tocsr()  # (n, n)
    norms = np.sqrt(np.maximum(co.diagonal(), 1e-12))
    co.setdiag(0.0)
    co.eliminate_zeros()
    co = sparse.diags(1.0 / norms) @ co @ sparse.diags(1.0 / norms)
    co = co.tocsr()
    rows = np.repeat(np.arange(n), np.diff(co.indptr))
    order = np.lexsort((-co.data, rows))  # by row, strongest first
    rows, cols, vals = rows[order], co.indices[order], co.data[order]
    rank = np.arange(len(rows)) - co.indptr[rows]
    keep = rank < m
    out_ids[rows[keep], rank[keep]] = cols[keep]
    out_w[rows[keep], rank[keep]] = vals[keep]
    return out_ids, out_w


def build_index(
    products: Sequence[ProductRecord],
    events: Sequence[EventRecord],
    embed: Callable[[list[str]], np.ndarray] | None = None,
    *,
    embeddings: np.ndarray | None = None,
    config: IndexConfig = IndexConfig(),
    progress: Callable[[float], None] = lambda _: None,
) -> RecIndex:
    """Embed the products (``embed``, batched, 0..0.9 of ``progress``) unless ``embeddings`` are
    given, then co-occurrence and popularity from ``events`` (unknown products are skipped)."""
    n = len(products)
    if embeddings is None:
        assert embed is not None, "give embed or embeddings"
        texts = [p.text() for p in products]
        parts = []
        for start in range(0, n, config.embed_batch):
            parts.append(np.asarray(embed(texts[start : start + config.embed_batch]), np.float32))
            progress(0.9 * min(n, start + config.embed_batch) / max(n, 1))
        embeddings = np.concatenate(parts) if parts else np.zeros((0, 384), np.float32)
    assert embeddings.shape[0] == n
    position = {p.id: i for i, p in enumerate(products)}
    known = [e for e in events if e.product_id in position]
    user_code: dict[str, int] = {}
    users = np.fromiter((user_code.setdefault(e.user_id, len(user_code)) for e in known), np.int64)
    items = np.fromiter((position[e.product_id] for e in known), np.int64, count=len(known))
    weights = np.fromiter((EVENT_WEIGHTS[e.type] for e in known), np.float64, count=len(known))
    times = np.fromiter((e.timestamp for e in known), np.float64, count=len(known))
    built_at = float(times.max()) if len(times) else 0.0
    neighbours, neighbour_weights = cooccurrence_neighbours(
        n, users, items, weights, config.neighbours
    )
    progress(0.95)
    popularity = popularity_scores(
        n, items, weights, built_at - times, config.popularity_half_life_days
    )
    names = sorted({p.category for p in products})
    code = {name: i for i, name in enumerate(names)}
    progress(1.0)
    return RecIndex(
        product_ids=[p.id for p in products],
        titles=[p.title for p in products],
        category_names=names,
        categories=np.array([code[p.category] for p in products], dtype=np.int32),
        prices=np.array([p.price for p in products], dtype=np.float32),
        in_stock=np.array([p.in_stock for p in products], dtype=bool),
        embeddings=np.ascontiguousarray(embeddings, dtype=np.float16),
        neighbours=neighbours,
        neighbour_weights=neighbour_weights,
        popularity=popularity,
        info={
            "built_at": built_at,
            "events": len(known),
            "users": len(user_code),
            "config": config.__dict__,
        },
    )


def save_index(index: RecIndex, write: Callable[[str, bytes], None]) -> None:
    """Write the index as two files through ``write(name, data)`` (e.g. into storage)."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        categories=index.categories,
        prices=index.prices,
        in_stock=index.in_stock,
        embeddings=index.embeddings,
        neighbours=index.neighbours,
        neighbour_weights=index.neighbour_weights,
        popularity=index.popularity,
    )
    write(_ARRAYS, buffer.getvalue())
    meta = {
        "product_ids": index.product_ids,
        "titles": index.titles,
        "category_names": index.category_names,
        "info": index.info,
    }
    write(_META, json.dumps(meta).encode())  # written last: its presence means complete


def load_index(read: Callable[[str], bytes]) -> RecIndex:
    """The index saved by `save_index`, read through ``read(name)``."""
    meta = json.loads(read(_META))
    with np.load(io.BytesIO(read(_ARRAYS))) as arrays:
        data = {name: arrays[name] for name in arrays.files}
    return RecIndex(
        product_ids=meta["product_ids"],
        titles=meta["titles"],
        category_names=meta["category_names"],
        info=meta.get("info", {}),
        **data,
    )
