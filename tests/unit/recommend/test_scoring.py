"""Hybrid scoring on a small hand-made index and on demo data: filters, exclusions, cold
start, reasons, baselines; the leave-last-out evaluation with the real embedding model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from moeplane.recommend.evaluate import evaluate, leave_last_out
from moeplane.recommend.generator import generate
from moeplane.recommend.index import build_index, load_index, save_index
from moeplane.recommend.records import EventRecord, ProductRecord
from moeplane.recommend.scoring import Filters, Query, history_of, recommend


def bow_embed(texts: list[str], dim: int = 64) -> np.ndarray:
    """Hashed bag of words, unit rows: enough semantics for scoring tests, no model."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().replace(".", " ").split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


P = [
    ProductRecord("phone", "Orbit Smartphone", "5G phone", "Phones", 500.0),
    ProductRecord("case", "Shieldy Phone Case", "phone case", "Accessories", 20.0),
    ProductRecord("cable", "Cableco Charging Cable", "usb cable", "Accessories", 10.0),
    ProductRecord("phone2", "Pixelon Smartphone", "5G phone", "Phones", 700.0, in_stock=False),
    ProductRecord("beans", "Highland Coffee Beans", "dark roast coffee", "Coffee", 14.0),
    ProductRecord("grinder", "Barista Coffee Grinder", "burr grinder for coffee", "Coffee", 60.0),
    ProductRecord("new", "Novatel Smartphone", "5G phone", "Phones", 400.0),  # no events
]
T0 = 1_790_000_000.0


def _events() -> list[EventRecord]:
    out = []
    for u in range(12):  # phone buyers also buy a case
        out += [
            EventRecord(f"u{u}", "phone", "purchase", T0 + u * 100),
            EventRecord(f"u{u}", "case", "purchase", T0 + u * 100 + 10),
        ]
    for u in range(12, 20):  # coffee people
        out += [
            EventRecord(f"u{u}", "beans", "purchase", T0 + u * 100),
            EventRecord(f"u{u}", "grinder", "view", T0 + u * 100 + 5),
        ]
    out.append(EventRecord("u0", "cable", "view", T0 + 5000))
    return out


@pytest.fixture(scope="module")
def index():
    return build_index(P, _events(), bow_embed)


def _ids(index, recs):
    return [index.product_ids[r.position] for r in recs]


def test_index_parts_and_round_trip(index, tmp_path):
    pos = index.position
    assert index.neighbours[pos["phone"], 0] == pos["case"]  # strongest co-occurrence
    assert index.neighbours[pos["new"]].max() == -1  # a cold item has no neighbours
    assert index.popularity.max() == pytest.approx(1.0) and index.popularity[pos["new"]] == 0
    assert np.allclose(np.linalg.norm(index.embeddings.astype(np.float32), axis=1), 1.0, atol=2e-3)
    save_index(index, lambda name, data: (tmp_path / name).write_bytes(data))
    again = load_index(lambda name: (tmp_path / name).read_bytes())
    assert again.product_ids == index.product_ids and again.category_names == index.category_names
    for name in ("embeddings", "neighbours", "neighbour_weights", "popularity", "prices"):
        assert np.array_equal(getattr(again, name), getattr(index, name)), name


def test_user_gets_bought_together_and_seen_items_excluded(index):
    history = history_of(index, [("phone", "purchase", T0)])
    recs, strategy = recommend(index, Query(k=3, history=history))
    assert strategy == "hybrid" and _ids(index, recs)[0] == "case"
    assert "phone" not in _ids(index, recs)
    assert recs[0].reason == "often bought together with Orbit Smartphone"
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    kept, _ = recommend(index, Query(k=7, history=history, exclude_seen=False))
    assert "phone" in _ids(index, kept)


def test_filters_category_price_and_stock(index):
    history = history_of(index, [("phone", "purchase", T0), ("beans", "view", T0 - 10)])
    only = Filters(categories=("Phones",), in_stock=True)
    recs, _ = recommend(index, Query(k=5, history=history, filters=only))
    assert _ids(index, recs) == ["new"]  # phone2 is out of stock, phone was seen
    cheap, _ = recommend(index, Query(k=10, history=history, filters=Filters(price_max=15.0)))
    assert set(_ids(index, cheap)) == {"cable"}  # beans (14) was seen
    band, _ = recommend(index, Query(k=10, filters=Filters(price_min=50, price_max=600)))
    assert set(_ids(index, band)) == {"grinder", "new", "phone"}
    none, _ = recommend(index, Query(k=3, filters=Filters(categories=("Nope",))))
    assert none == []


def test_cold_start_user_item_and_search(index):
    recs, strategy = recommend(index, Query(k=2))  # no history: trending
    assert strategy == "popular" and set(_ids(index, recs)) <= {"phone", "case", "beans"}
    assert all(r.reason.startswith("popular in ") for r in recs)
    similar, strategy = recommend(index, Query(k=3, product=index.position["new"]))
    assert strategy == "similar_items" and "new" not in _ids(index, similar)
    assert _ids(index, similar)[0] == "phone" and "phone2" in _ids(index, similar)
    assert similar[0].reason == "similar to Novatel Smartphone"
    q = bow_embed(["coffee grinder"])[0]
    found, strategy = recommend(index, Query(k=1, query_vector=q, query_text="coffee grinder"))
    assert strategy == "search" and _ids(index, found) == ["grinder"]
    assert found[0].reason == "matches 'coffee grinder'"
    # unknown products in a history are ignored: the user is cold
    assert len(history_of(index, [("gone", "view", T0)])) == 0


def test_leave_last_out_holds_out_the_last_new_product():
    e = [
        EventRecord("a", "x", "view", 1),
        EventRecord("a", "y", "view", 2),
        EventRecord("a", "x", "purchase", 3),  # x again: y is still the last new product
        EventRecord("b", "x", "view", 1),  # one product only: not evaluated
    ]
    train, held = leave_last_out(e)
    assert held == {"a": "y"} and [ev.product_id for ev in train] == ["x", "x", "x"]


def test_hybrid_beats_popularity_and_embeddings_on_demo_data():
    from moeplane.modeling.embeddings import EmbeddingModel

    data = generate(400, 400, seed=1)
    embeddings = EmbeddingModel().encode([p.text() for p in data.products], batch_size=128)
    metrics = {m.strategy: m for m in evaluate(data.products, data.events, embeddings)}
    hybrid, pop, emb = metrics["hybrid"], metrics["popularity"], metrics["embedding"]
    assert hybrid.users >= 300
    assert hybrid.recall > 1.5 * pop.recall and hybrid.ndcg > 1.5 * pop.ndcg, metrics
    assert hybrid.recall > emb.recall and hybrid.ndcg > emb.ndcg, metrics


def test_large_catalogs_search_in_the_fastest_kind_and_agree_with_float32():
    from moeplane.recommend.index import CALIBRATE_FROM, SEARCH_KINDS, fastest_search_matrix

    rng = np.random.default_rng(0)
    e = rng.standard_normal((CALIBRATE_FROM, 64)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    stored = e.astype(np.float16)
    small = fastest_search_matrix(stored[:100])
    assert small.kind == "float16"  # small: as stored, no calibration
    matrix = fastest_search_matrix(stored)
    assert matrix.kind in SEARCH_KINDS
    got = matrix.scores(e[7])
    np.testing.assert_allclose(got, e @ e[7], atol=1e-2)
    assert int(np.argmax(got)) == 7


@pytest.mark.parametrize("kind", ["float16", "bfloat16", "int8"])
def test_inexact_scans_return_the_exact_ranking_and_scores(kind):
    """float16, bfloat16 and int8 scans (cosines < 0.005 off) only pick candidates: what comes
    back is what the exact float32 scan returns, scores included, for every kind of request."""
    from moeplane.recommend.index import SearchMatrix, _int8_available

    if kind == "int8" and not _int8_available():
        pytest.skip("no fbgemm int8 engine on this CPU")
    data = generate(3000, 600, seed=3)
    rng = np.random.default_rng(3)
    # clustered vectors, like real embeddings: many near-ties around the k-th score
    centres = rng.standard_normal((20, 96)).astype(np.float32)
    e = centres[rng.integers(0, 20, 3000)] + 0.6 * rng.standard_normal((3000, 96), np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    exact = build_index(data.products, data.events, embeddings=e)
    exact.search_matrix = SearchMatrix(exact.embeddings, "float32")  # type: ignore[misc]
    inexact = build_index(data.products, data.events, embeddings=e)
    inexact.search_matrix = SearchMatrix(inexact.embeddings, kind)  # type: ignore[misc]
    assert exact.search_matrix.exact and not inexact.search_matrix.exact
    users = sorted({ev.user_id for ev in data.events})[:40]
    queries = (
        [
            Query(
                k=10,
                history=history_of(
                    exact,
                    [
                        (ev.product_id, ev.type, ev.timestamp)
                        for ev in data.events
                        if ev.user_id == u
                    ],
                ),
            )
            for u in users
        ]
        + [Query(k=20, product=p) for p in range(0, 3000, 150)]
        + [Query(k=10, query_vector=e[p], query_text="q") for p in range(7, 3000, 300)]
        + [Query(k=10, product=5, strategy="embedding")]
    )
    for query in queries:
        want, want_strategy = recommend(exact, query)
        got, got_strategy = recommend(inexact, query)
        assert got_strategy == want_strategy
        np.testing.assert_allclose(
            [r.score for r in got], [r.score for r in want], rtol=0, atol=1e-5
        )
        # the same products in the same order, but for exact ties (float32's last bits)
        for g, w in zip(got, want, strict=True):
            assert g.position == w.position or abs(g.score - w.score) < 1e-5, query
