"""Catalog products and interaction events as uploaded: parsed and validated line by line.

Products arrive as JSONL ``{id, title, description, category, price, attributes, in_stock}``;
events as JSONL (or a JSON list through the API) ``{user_id, product_id, type, timestamp}``
with ``type`` one of view | cart | purchase and ``timestamp`` ISO 8601 or unix seconds. Every
error names the line (or list item) and the field, and nothing is accepted past the first error.
`ProductLines` and `EventLines` read a file one line at a time: the upload check
(`moeplane.datasets.purposes`) and the use-time parsers here are the same code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moeplane.errors import InvalidRequest

__all__ = [
    "EVENT_TYPES",
    "EventLines",
    "EventRecord",
    "ProductLines",
    "ProductRecord",
    "parse_event",
    "parse_events_jsonl",
    "parse_product",
    "parse_products_jsonl",
]

EVENT_TYPES = ("view", "cart", "purchase")
MAX_PRODUCT_ID = 200
MAX_TITLE = 500
MAX_DESCRIPTION = 5000
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z
_BLANK = object()  # what a blank line parses to (JSON null is a value, and an error)


@dataclass(frozen=True)
class ProductRecord:
    id: str
    title: str
    description: str = ""
    category: str = ""
    price: float = 0.0
    in_stock: bool = True
    attributes: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """What the index embeds: title and description."""
        return f"{self.title}. {self.description}".strip() if self.description else self.title

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "price": self.price,
            "in_stock": self.in_stock,
            "attributes": self.attributes,
        }


@dataclass(frozen=True)
class EventRecord:
    user_id: str
    product_id: str
    type: str
    timestamp: float  # unix seconds, UTC

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "product_id": self.product_id,
            "type": self.type,
            "timestamp": datetime.fromtimestamp(self.timestamp, UTC).isoformat(),
        }


def _where(line: int | None, name: str) -> str:
    return f"line {line}: {name}" if line is not None else name


def _text(data: Mapping[str, Any], name: str, where: int | None, *, limit: int, required: bool):
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{_where(where, name)} is required", param=name)
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool) and name.endswith("id"):
        value = str(value)  # numeric ids are common in exports
    if not isinstance(value, str):
        raise InvalidRequest(f"{_where(where, name)} must be a string", param=name)
    value = value.strip()
    if required and not value:
        raise InvalidRequest(f"{_where(where, name)} must not be empty", param=name)
    if len(value) > limit:
        raise InvalidRequest(f"{_where(where, name)} is longer than {limit} characters", param=name)
    return value


def parse_product(data: Any, line: int | None = None) -> ProductRecord:
    if not isinstance(data, Mapping):
        raise InvalidRequest(f"{_where(line, 'product')} must be a JSON object", param="product")
    price = data.get("price", 0.0)
    if not _is_number(price):
        raise InvalidRequest(f"{_where(line, 'price')} must be a number", param="price")
    if price < 0:
        raise InvalidRequest(f"{_where(line, 'price')} must be >= 0", param="price")
    in_stock = data.get("in_stock", True)
    if not isinstance(in_stock, bool):
        raise InvalidRequest(f"{_where(line, 'in_stock')} must be true or false", param="in_stock")
    attributes = data.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise InvalidRequest(
            f"{_where(line, 'attributes')} must be a JSON object", param="attributes"
        )
    return ProductRecord(
        id=_text(data, "id", line, limit=MAX_PRODUCT_ID, required=True),
        title=_text(data, "title", line, limit=MAX_TITLE, required=True),
        description=_text(data, "description", line, limit=MAX_DESCRIPTION, required=False),
        category=_text(data, "category", line, limit=200, required=False),
        price=float(price),
        in_stock=in_stock,
        attributes=dict(attributes),
    )


def _is_number(value: Any) -> bool:
    """A finite JSON number (JSON allows integers too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _timestamp(value: Any, where: int | None) -> float:
    seconds = None
    if _is_number(value):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    if seconds is None:
        raise InvalidRequest(
            f"{_where(where, 'timestamp')} must be ISO 8601 or unix seconds", param="timestamp"
        )
    if not 0 <= seconds <= MAX_TIMESTAMP:  # what the database's timestamps can hold
        raise InvalidRequest(
            f"{_where(where, 'timestamp')} must be between 1970 and 9999", param="timestamp"
        )
    return seconds


def parse_event(data: Any, line: int | None = None) -> EventRecord:
    if not isinstance(data, Mapping):
        raise InvalidRequest(f"{_where(line, 'event')} must be a JSON object", param="event")
    kind = data.get("type")
    if kind not in EVENT_TYPES:
        raise InvalidRequest(
            f"{_where(line, 'type')} must be one of {', '.join(EVENT_TYPES)} (got {kind!r})",
            param="type",
        )
    return EventRecord(
        user_id=_text(data, "user_id", line, limit=200, required=True),
        product_id=_text(data, "product_id", line, limit=MAX_PRODUCT_ID, required=True),
        type=kind,
        timestamp=_timestamp(data.get("timestamp"), line),
    )


def _json_line(number: int, text: str) -> Any:
    """One non-blank line as JSON (``_BLANK`` for a blank line)."""
    if not text.strip():
        return _BLANK
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"line {number}: not valid JSON ({exc.msg})", param="line") from exc
    except RecursionError as exc:
        raise InvalidRequest(f"line {number}: JSON nested too deeply", param="line") from exc


def _numbered(lines: Iterable[bytes | str]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(lines, start=1):
        try:
            yield number, raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            reason = f"not valid UTF-8 (bad byte at column {exc.start + 1})"
            raise InvalidRequest(f"line {number}: {reason}", param="line") from exc


class ProductLines:
    """A catalog file read one line at a time (``reader(number, text)`` per line, then
    ``finish()``): the upload check and :func:`parse_products_jsonl` both use it.

    It holds the ids seen so far (a repeated id is an error naming both lines) and, only with
    ``keep``, the products themselves.
    """

    def __init__(self, *, keep: bool = True) -> None:
        self.products: list[ProductRecord] = []
        self.count = 0
        self._keep = keep
        self._seen: dict[str, int] = {}

    def __call__(self, number: int, text: str) -> None:
        data = _json_line(number, text)
        if data is _BLANK:
            return
        product = parse_product(data, number)
        if product.id in self._seen:
            raise InvalidRequest(
                f"line {number}: id '{product.id}' repeats line {self._seen[product.id]}",
                param="id",
            )
        self._seen[product.id] = number
        self.count += 1
        if self._keep:
            self.products.append(product)

    def finish(self) -> list[ProductRecord]:
        if not self.count:
            raise InvalidRequest("the catalog file has no products", param="products_file")
        return self.products


class EventLines:
    """An events file read one line at a time, like :class:`ProductLines`; with
    ``product_ids``, each event must name one of them."""

    def __init__(self, product_ids: set[str] | None = None, *, keep: bool = True) -> None:
        self.events: list[EventRecord] = []
        self.count = 0
        self._keep = keep
        self._product_ids = product_ids

    def __call__(self, number: int, text: str) -> None:
        data = _json_line(number, text)
        if data is _BLANK:
            return
        event = parse_event(data, number)
        if self._product_ids is not None and event.product_id not in self._product_ids:
            raise InvalidRequest(
                f"line {number}: product_id '{event.product_id}' is not in the catalog",
                param="product_id",
            )
        self.count += 1
        if self._keep:
            self.events.append(event)

    def finish(self) -> list[EventRecord]:
        return self.events  # an empty log is fine: popularity and history start empty


def parse_products_jsonl(lines: Iterable[bytes | str]) -> list[ProductRecord]:
    """Products of a catalog file; duplicate ids are an error naming both lines."""
    reader = ProductLines()
    for number, text in _numbered(lines):
        reader(number, text)
    return reader.finish()


def parse_events_jsonl(
    lines: Iterable[bytes | str], product_ids: set[str] | None = None
) -> list[EventRecord]:
    """Events of an events file; with ``product_ids``, each must name a catalog product."""
    reader = EventLines(product_ids)
    for number, text in _numbered(lines):
        reader(number, text)
    return reader.finish()
