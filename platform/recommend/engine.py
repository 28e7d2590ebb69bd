"""One catalog's recommender in a process: its index, the query encoder, and the request format
the Serve replica answers (`moeplane.serving.recommend`), the benchmark and the tests use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

import fsspec
import numpy as np

from moeplane.recommend.index import RecIndex, load_index
from moeplane.recommend.scoring import Filters, Query, Weights, history_of, recommend

__all__ = ["Recommender", "load_index_uri"]

_QUERY_CACHE = 1024  # recent query texts whose embeddings are kept


def load_index_uri(uri: str) -> RecIndex:
    """Load the index stored under ``uri`` (a folder: file://, or any fsspec URI)."""
    if urlparse(uri).scheme == "file":
        uri = unquote(urlparse(uri).path)
    fs, root = fsspec.core.url_to_fs(uri)

    def read(name: str) -> bytes:
        with fs.open(f"{root.rstrip('/')}/{name}", "rb") as handle:
            return handle.read()

    return load_index(read)


class Recommender:
    """``handle(payload) -> {data, strategy}``; thread-safe."""

    def __init__(
        self,
        index: RecIndex,
        encode: Callable[[list[str]], np.ndarray] | None = None,
        weights: Weights = Weights(),
    ):
        self.index = index
        self.encode = encode
        self.weights = weights
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _query_vector(self, text: str) -> np.ndarray:
        with self._lock:
            if text in self._queries:
                self._queries.move_to_end(text)
                return self._queries[text]
        assert self.encode is not None, "this recommender has no query encoder"
        vector = np.asarray(self.encode([text])[0], dtype=np.float32)
        with self._lock:
            self._queries[text] = vector
            while len(self._queries) > _QUERY_CACHE:
                self._queries.popitem(last=False)
        return vector

    def handle(self, payload: dict[str, Any]) -> dict[str, Any]:
        index = self.index
        f = payload.get("filters") or {}
        history = history_of(index, [tuple(h) for h in payload.get("history") or []])
        product = payload.get("product_id")
        text = payload.get("query") or ""
        query = Query(
            k=int(payload.get("k", 10)),
            history=history,
            product=index.position.get(product) if product else None,
            query_vector=self._query_vector(text) if text else None,
            query_text=text,
            filters=Filters(
                categories=tuple(f.get("categories") or ()),
                price_min=f.get("price_min"),
                price_max=f.get("price_max"),
                in_stock=f.get("in_stock"),
            ),
            exclude_seen=bool(payload.get("exclude_seen", True)),
        )
        recs, strategy = recommend(index, query, self.weights)
        return {
            "strategy": strategy,
            "data": [
                {
                    "product_id": index.product_ids[r.position],
                    "title": index.titles[r.position],
                    "score": round(r.score, 6),
                    "reason": r.reason,
                    "category": index.category_names[index.categories[r.position]],
                    "price": float(index.prices[r.position]),
                }
                for r in recs
            ],
        }
