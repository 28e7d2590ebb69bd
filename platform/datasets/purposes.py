"""Which streaming validator checks an upload of each file purpose.

``validator_for(purpose)`` returns a factory; ``factory(filename)`` returns a fresh object with
``feed(chunk: bytes)`` and ``finish() -> stats`` (stats have ``to_dict()``, stored with the
file). The upload route feeds it while streaming to storage, so every purpose is checked line by
line with one line in memory, and a bad file is refused before it is recorded.

The rules are the ones the files' users apply, not a copy: ``catalog`` and ``events`` run
:class:`~moeplane.recommend.records.ProductLines` / ``EventLines`` (what ``POST /v1/catalogs``
parses with), ``knowledge`` runs :class:`~moeplane.support.knowledge.KnowledgeCheck` (built on
the support bot's FAQ reader and Markdown heading rule). Only what needs other files is left to
use time: that events name products of the catalog they are used with. Errors say
``line N: ...`` with ``param="file"`` and code ``invalid_file``, whatever the purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from moeplane.datasets.chat import ChatJsonlValidator
from moeplane.datasets.lines import LineSplitter
from moeplane.errors import InvalidRequest

__all__ = ["SUPPORTED_PURPOSES", "FileStats", "StreamingValidator", "validator_for"]

SUPPORTED_PURPOSES = ("fine-tune", "knowledge", "catalog", "events")


class StreamingValidator(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> Any: ...


@dataclass(frozen=True)
class FileStats:
    """What the upload check learned about a catalog, events or knowledge file."""

    lines: int
    bytes: int
    sha256: str
    details: dict[str, Any] = field(default_factory=dict)  # e.g. {"products": 120}

    def to_dict(self) -> dict[str, Any]:
        return {**self.details, "lines": self.lines, "bytes": self.bytes, "sha256": self.sha256}


@contextmanager
def _said_of_the_upload() -> Iterator[None]:
    """Use-time parsers name the field (``param="price"``); an upload names the file."""
    try:
        yield
    except InvalidRequest as exc:
        if exc.param == "file" and exc.code == "invalid_file":
            raise
        raise InvalidRequest(exc.message, param="file", code="invalid_file") from exc


class _LineCheck:
    """An upload check that feeds a use-time line reader (``reader(number, text)``) from a
    :class:`LineSplitter`; ``summary()`` runs the reader's end-of-file rules and describes it."""

    def __init__(
        self, reader: Callable[[int, str], None], summary: Callable[[], dict[str, Any]]
    ) -> None:
        self._lines = LineSplitter(reader)
        self._summary = summary

    def feed(self, chunk: bytes) -> None:
        with _said_of_the_upload():
            self._lines.feed(chunk)

    def finish(self) -> FileStats:
        with _said_of_the_upload():
            self._lines.finish()
            details = self._summary()
        return FileStats(self._lines.lines, self._lines.bytes, self._lines.sha256(), details)


# The readers are imported when an upload needs them: they split lines with
# moeplane.datasets.lines, so importing them here at module level would be an import cycle.


def _catalog(filename: str) -> StreamingValidator:
    from moeplane.recommend.records import ProductLines

    reader = ProductLines(keep=False)  # keeps only the ids (a repeated id names both lines)

    def summary() -> dict[str, Any]:
        reader.finish()
        return {"products": reader.count}

    return _LineCheck(reader, summary)


def _events(filename: str) -> StreamingValidator:
    from moeplane.recommend.records import EventLines

    reader = EventLines(keep=False)  # product ids are checked against a catalog at use time

    def summary() -> dict[str, Any]:
        reader.finish()
        return {"events": reader.count}

    return _LineCheck(reader, summary)


def _knowledge(filename: str) -> StreamingValidator:
    from moeplane.support.knowledge import KnowledgeCheck

    with _said_of_the_upload():  # an unsupported file name is refused before any byte is stored
        reader = KnowledgeCheck(filename)

    def summary() -> dict[str, Any]:
        entries = reader.finish()
        return {"format": reader.format} | ({"entries": entries} if reader.format == "faq" else {})

    return _LineCheck(reader, summary)


_VALIDATORS: dict[str, Callable[[str], StreamingValidator]] = {
    "fine-tune": lambda filename: ChatJsonlValidator(),
    "knowledge": _knowledge,
    "catalog": _catalog,
    "events": _events,
}
assert set(_VALIDATORS) == set(SUPPORTED_PURPOSES)


def validator_for(purpose: str) -> Callable[[str], StreamingValidator]:
    """The validator factory for ``purpose``; call it with the upload's file name.

    An unknown purpose is a client error (``InvalidRequest``, param ``purpose``), so a typo never
    silently skips validation.
    """
    if purpose not in _VALIDATORS:
        raise InvalidRequest(
            f"purpose must be one of {', '.join(SUPPORTED_PURPOSES)} (got {purpose!r})",
            param="purpose",
        )
    return _VALIDATORS[purpose]
