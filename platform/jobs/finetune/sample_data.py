"""A generated customer-support chat dataset, so demos and tests need no download."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

__all__ = ["support_chat_dataset", "write_jsonl"]

SYSTEM = "You are the support assistant of Northwind Shop. Answer briefly and politely."

_TOPICS = [
    (
        "Where is my order {order}?",
        "Your order {order} has shipped and will arrive within {days} business days.",
    ),
    (
        "I want a refund for order {order}.",
        "I have started a refund for order {order}; the money is back within {days} days.",
    ),
    (
        "How long does shipping to {city} take?",
        "Shipping to {city} takes {days} business days with standard delivery.",
    ),
    (
        "I forgot my password.",
        "Use 'Forgot password' on the sign-in page and follow the link we email you.",
    ),
    (
        "Can I change the address of order {order}?",
        "Yes, I have updated the delivery address of order {order} for you.",
    ),
    ("Do you ship to {city}?", "Yes, we ship to {city}; delivery takes {days} business days."),
    (
        "My item from order {order} arrived damaged.",
        "I am sorry! I have sent a free replacement for order {order} today.",
    ),
    ("How do I cancel order {order}?", "Order {order} is cancelled; you will not be charged."),
]
_CITIES = ["Berlin", "Lisbon", "Oslo", "Madrid", "Vienna", "Dublin", "Prague", "Athens"]


def support_chat_dataset(n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        question, answer = rng.choice(_TOPICS)
        values = {
            "order": f"#{rng.randint(10000, 99999)}",
            "city": rng.choice(_CITIES),
            "days": rng.randint(2, 7),
        }
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": question.format(**values)},
                    {"role": "assistant", "content": answer.format(**values)},
                ]
            }
        )
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
