"""A realistic demo catalog and event log, generated offline (no download) and reproducibly.

Products belong to categories with their own vocabulary, brands and price levels, and to a
style (budget, premium, eco, sport) that shows in their text; popularity within a category
follows a power law, and newer products are busier lately. Users prefer one to three categories
and one style, and shop in sessions: they view a few products of a category, sometimes put one
in the cart and buy it, and after a purchase often buy a complement too (a phone, then a case).
So the log has what a recommender should find: category and style affinity (semantic), bought-
together pairs (co-occurrence) and bestsellers (popularity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from moeplane.recommend.records import EventRecord, ProductRecord

__all__ = ["DemoData", "generate"]

# category -> (nouns, features, brands, median price)
_CATEGORIES: dict[str, tuple[list[str], list[str], list[str], float]] = {
    "Electronics > Phones": (
        ["Smartphone", "Phone", "5G Phone"],
        ["OLED display", "triple camera", "all-day battery", "fast charging", "128 GB storage"],
        ["Novatel", "Pixelon", "Orbit"],
        499.0,
    ),
    "Electronics > Phone Accessories": (
        ["Phone Case", "Screen Protector", "Charging Cable", "Wireless Charger"],
        ["shock-absorbing edges", "tempered glass", "braided nylon", "MagSafe compatible"],
        ["Shieldy", "Novatel", "Cableco"],
        19.0,
    ),
    "Electronics > Headphones": (
        ["Headphones", "Earbuds", "Over-Ear Headphones"],
        ["active noise cancelling", "30-hour battery", "Bluetooth 5.3", "deep bass"],
        ["Sonora", "Auralis", "Beatline"],
        129.0,
    ),
    "Electronics > Cameras": (
        ["Mirrorless Camera", "Action Camera", "Compact Camera"],
        ["24 MP sensor", "4K video", "image stabilisation", "weather sealing"],
        ["Lumix", "Fotora", "Clickr"],
        699.0,
    ),
    "Electronics > Camera Accessories": (
        ["Memory Card", "Camera Bag", "Tripod", "Spare Battery"],
        ["128 GB UHS-II", "padded dividers", "aluminium legs", "2000 mAh"],
        ["Fotora", "Packwell", "Standfast"],
        39.0,
    ),
    "Home > Coffee Makers": (
        ["Espresso Machine", "Drip Coffee Maker", "French Press", "Pour-Over Kettle"],
        ["15-bar pump", "programmable timer", "borosilicate glass", "gooseneck spout"],
        ["Barista", "Morningbrew", "Kettleworks"],
        89.0,
    ),
    "Grocery > Coffee": (
        ["Whole Bean Coffee", "Ground Coffee", "Espresso Beans"],
        ["single origin", "dark roast", "medium roast", "fair trade"],
        ["Highland", "Roastery", "Morningbrew"],
        14.0,
    ),
    "Sports > Running Shoes": (
        ["Running Shoes", "Trail Running Shoes", "Racing Flats"],
        ["cushioned midsole", "breathable mesh", "grippy outsole", "carbon plate"],
        ["Stride", "Fleetfoot", "Apex"],
        119.0,
    ),
    "Sports > Running Apparel": (
        ["Running Socks", "Running Shorts", "Running Jacket", "Sports Watch"],
        ["moisture-wicking", "reflective details", "lightweight", "GPS tracking"],
        ["Stride", "Fleetfoot", "Pacer"],
        35.0,
    ),
    "Home > Bedding": (
        ["Duvet Cover", "Pillow", "Sheet Set", "Weighted Blanket"],
        ["organic cotton", "hypoallergenic fill", "400 thread count", "cooling fabric"],
        ["Dreamwell", "Linenly", "Cozyhaus"],
        59.0,
    ),
    "Kitchen > Cookware": (
        ["Frying Pan", "Saucepan", "Dutch Oven", "Wok"],
        ["non-stick coating", "cast iron", "stainless steel", "induction ready"],
        ["Chefline", "Ironhearth", "Panmaster"],
        69.0,
    ),
    "Kitchen > Knives": (
        ["Chef's Knife", "Knife Set", "Bread Knife", "Cutting Board"],
        ["German steel", "full tang", "ergonomic handle", "end-grain wood"],
        ["Chefline", "Bladecraft", "Edgewood"],
        49.0,
    ),
    "Toys > Building Sets": (
        ["Building Set", "Brick Kit", "Construction Set"],
        ["500 pieces", "ages 8+", "motorised parts", "compatible bricks"],
        ["Brickly", "Buildit", "Blockhaus"],
        45.0,
    ),
    "Books > Cookbooks": (
        ["Cookbook", "Baking Book", "Recipe Collection"],
        ["100 recipes", "step-by-step photos", "weeknight dinners", "vegetarian"],
        ["Pantry Press", "Hearth Books", "Greenleaf"],
        25.0,
    ),
    "Beauty > Skincare": (
        ["Moisturiser", "Face Serum", "Sunscreen", "Cleanser"],
        ["hyaluronic acid", "SPF 50", "fragrance free", "vitamin C"],
        ["Glowa", "Purelle", "Dermica"],
        29.0,
    ),
    "Pets > Dog Supplies": (
        ["Dog Bed", "Dog Leash", "Chew Toy", "Dog Food"],
        ["orthopedic foam", "reflective stitching", "durable rubber", "grain free"],
        ["Pawsome", "Barkley", "Tailwag"],
        34.0,
    ),
}
# bought together: after a purchase in the key, a complement from the value is likely
_COMPLEMENTS = {
    "Electronics > Phones": "Electronics > Phone Accessories",
    "Electronics > Cameras": "Electronics > Camera Accessories",
    "Home > Coffee Makers": "Grocery > Coffee",
    "Sports > Running Shoes": "Sports > Running Apparel",
    "Kitchen > Cookware": "Kitchen > Knives",
    "Books > Cookbooks": "Kitchen > Cookware",
}
# style -> (adjectives for titles and descriptions, price factor)
_STYLES = {
    "budget": (["Essential", "Everyday", "Value", "Basic"], 0.6),
    "premium": (["Pro", "Signature", "Luxe", "Elite"], 1.8),
    "eco": (["Eco", "Recycled", "Natural", "Sustainable"], 1.1),
    "sport": (["Active", "Performance", "Rugged", "Turbo"], 1.0),
}
_COLORS = ["black", "white", "navy", "red", "green", "grey", "sand", "blue"]
_DAY = 86_400.0
_EPOCH = 1_790_000_000.0  # 2026-09-21: the log covers the 90 days after


@dataclass(frozen=True)
class DemoData:
    products: list[ProductRecord]
    events: list[EventRecord]


def _products(rng: np.random.Generator, n: int) -> tuple[list[ProductRecord], dict[str, Any]]:
    names = list(_CATEGORIES)
    styles = list(_STYLES)
    # category sizes: a few big departments and a long tail
    share = rng.dirichlet(np.full(len(names), 3.0))
    cat_of = rng.choice(len(names), size=n, p=share)
    style_of = rng.integers(0, len(styles), size=n)
    products = []
    for i in range(n):
        category = names[cat_of[i]]
        nouns, features, brands, median = _CATEGORIES[category]
        style = styles[style_of[i]]
        adjectives, factor = _STYLES[style]
        brand, noun = brands[rng.integers(len(brands))], nouns[rng.integers(len(nouns))]
        adjective = adjectives[rng.integers(len(adjectives))]
        f1, f2 = rng.choice(len(features), size=2, replace=False)
        color = _COLORS[rng.integers(len(_COLORS))]
        price = round(float(median * factor * rng.lognormal(0.0, 0.35)), 2)
        products.append(
            ProductRecord(
                id=f"p{i:06d}",
                title=f"{brand} {adjective} {noun} {rng.integers(1, 10)}{'XSLR'[i % 4]}",
                description=(
                    f"{adjective} {noun.lower()} in {color} with {features[f1]} and "
                    f"{features[f2]}. A {style} pick from {brand}."
                ),
                category=category,
                price=price,
                in_stock=bool(rng.random() < 0.92),
                attributes={"brand": brand, "color": color, "style": style},
            )
        )
    return products, {"cat_of": cat_of, "style_of": style_of, "names": names}


def generate(
    n_products: int = 1000,
    n_users: int = 800,
    *,
    sessions_per_user: float = 4.0,
    days: int = 90,
    seed: int = 0,
) -> DemoData:
    """A catalog of ``n_products`` and the event log of ``n_users`` users over ``days`` days."""
    assert n_products >= len(_CATEGORIES) and n_users >= 1
    rng = np.random.default_rng(seed)
    products, meta = _products(rng, n_products)
    cat_of, style_of, names = meta["cat_of"], meta["style_of"], meta["names"]
    launch = rng.uniform(-60, days * 0.8, size=n_products) * _DAY  # some launched mid-log
    # within each category a power law over a random order of its products
    members = [np.flatnonzero(cat_of == c) for c in range(len(names))]
    base = np.zeros(n_products)
    for idx in members:
        ranks = rng.permutation(len(idx)) + 1
        base[idx] = ranks**-1.1
    cat_index = {name: c for c, name in enumerate(names)}
    events: list[EventRecord] = []
    for u in range(n_users):
        user = f"u{u:06d}"
        liked = rng.choice(len(names), size=int(rng.integers(1, 4)), replace=False)
        style = int(rng.integers(len(_STYLES)))
        pref = np.full(len(names), 0.15 / len(names))
        pref[liked] += 0.85 / len(liked)
        n_sessions = 1 + rng.poisson(sessions_per_user - 1)
        for start in np.sort(rng.uniform(0, days * _DAY, size=n_sessions)):
            t = float(_EPOCH + start)
            category = int(rng.choice(len(names), p=pref / pref.sum()))
            bought = _session(
                rng,
                events,
                user,
                t,
                members[category],
                base,
                style_of,
                style,
                launch,
                start,
                products,
            )
            complement = _COMPLEMENTS.get(names[category])
            if bought is not None and complement and rng.random() < 0.55:
                _session(
                    rng,
                    events,
                    user,
                    bought + 120,
                    members[cat_index[complement]],
                    base,
                    style_of,
                    style,
                    launch,
                    start,
                    products,
                    views=2,
                    buy=0.8,
                )
    events.sort(key=lambda e: e.timestamp)
    return DemoData(products=products, events=events)


def _session(
    rng: np.random.Generator,
    events: list[EventRecord],
    user: str,
    t: float,
    idx: np.ndarray,
    base: np.ndarray,
    style_of: np.ndarray,
    style: int,
    launch: np.ndarray,
    now: float,
    products: list[ProductRecord],
    *,
    views: int | None = None,
    buy: float = 0.45,
) -> float | None:
    """One browsing session in one category; the time of the purchase, if any."""
    if len(idx) == 0:
        return None
    weight = base[idx] * np.where(style_of[idx] == style, 4.0, 1.0)
    weight = weight * np.where(launch[idx] <= now, 1.0, 0.0)  # not launched yet
    weight = weight * (1.0 + 2.0 * ((now - launch[idx]) < 21 * _DAY))  # new and busy
    if weight.sum() <= 0:
        return None
    n = min(int(np.count_nonzero(weight)), views or int(rng.integers(2, 7)))
    seen = rng.choice(idx, size=n, replace=False, p=weight / weight.sum())
    for product in seen:
        t += float(rng.uniform(20, 240))
        events.append(EventRecord(user, products[product].id, "view", t))
    if rng.random() >= buy:
        return None
    chosen = products[seen[0]].id  # the most attractive of what was viewed
    t += float(rng.uniform(30, 300))
    events.append(EventRecord(user, chosen, "cart", t))
    if rng.random() < 0.7:
        t += float(rng.uniform(60, 900))
        events.append(EventRecord(user, chosen, "purchase", t))
        return t
    return None
