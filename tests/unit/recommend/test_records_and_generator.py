"""Upload parsing names the line and field; the demo generator is realistic and reproducible."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from moeplane.errors import InvalidRequest
from moeplane.recommend.generator import generate
from moeplane.recommend.records import parse_event, parse_events_jsonl, parse_products_jsonl


def _lines(*rows) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in rows]


def test_products_parse_and_errors_name_line_and_field():
    good = {"id": "a", "title": "Mug", "category": "Kitchen", "price": 9.5}
    products = parse_products_jsonl(_lines(good, "", {"id": 7, "title": "Cup"}))
    assert [p.id for p in products] == ["a", "7"] and products[0].in_stock
    assert products[0].text() == "Mug" and products[1].price == 0.0
    cases = [
        (_lines(good, {"id": "b", "title": "X", "price": "cheap"}), "line 2: price", "price"),
        (_lines({"id": "b", "price": 1}), "line 1: title", "title"),
        (_lines(good, good), "line 2: id 'a' repeats line 1", "id"),
        (_lines(good, "{not json"), "line 2: not valid JSON", "line"),
        (_lines({"id": "b", "title": "X", "in_stock": "yes"}), "line 1: in_stock", "in_stock"),
        (_lines({"id": "b", "title": "X", "price": -1}), "line 1: price", "price"),
        ([], "no products", "products_file"),
    ]
    for lines, message, param in cases:
        with pytest.raises(InvalidRequest) as err:
            parse_products_jsonl(lines)
        assert message in err.value.message and err.value.param == param, err.value.message


def test_events_parse_timestamps_types_and_unknown_products():
    rows = [
        {"user_id": "u", "product_id": "a", "type": "view", "timestamp": "2026-11-01T10:00:00Z"},
        {"user_id": "u", "product_id": "a", "type": "purchase", "timestamp": 1790000000},
    ]
    events = parse_events_jsonl(_lines(*rows), {"a"})
    assert [e.type for e in events] == ["view", "purchase"]
    assert events[0].timestamp == pytest.approx(1793527200.0)
    with pytest.raises(InvalidRequest) as err:
        parse_events_jsonl(_lines(rows[0] | {"product_id": "zz"}), {"a"})
    assert "line 1: product_id 'zz' is not in the catalog" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        parse_event(rows[0] | {"type": "like"}, 4)
    assert err.value.param == "type" and "line 4" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        parse_event(rows[0] | {"timestamp": "yesterday"})
    assert err.value.param == "timestamp"


def test_generator_is_reproducible_and_shaped_like_a_shop():
    a, b = generate(300, 200, seed=3), generate(300, 200, seed=3)
    assert a == b and generate(300, 200, seed=4) != a
    ids = {p.id for p in a.products}
    assert len(ids) == 300 and all(e.product_id in ids for e in a.events)
    assert len({p.category for p in a.products}) >= 10
    assert all(p.price > 0 and p.title and p.description for p in a.products)
    kinds = Counter(e.type for e in a.events)
    assert kinds["view"] > kinds["cart"] > kinds["purchase"] > 0  # a funnel
    assert [e.timestamp for e in a.events] == sorted(e.timestamp for e in a.events)
    # popularity is skewed: the top 10% of products get a large share of the views
    views = Counter(e.product_id for e in a.events if e.type == "view")
    top = sum(c for _, c in views.most_common(30))
    assert top > 0.3 * sum(views.values())
    # users stick to few categories
    by_user: dict[str, set[str]] = {}
    category = {p.id: p.category for p in a.products}
    for e in a.events:
        by_user.setdefault(e.user_id, set()).add(category[e.product_id])
    assert sum(len(c) for c in by_user.values()) / len(by_user) < 5
