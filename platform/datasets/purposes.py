"""Which streaming validator, if any, checks an upload of each file purpose.

A validator factory returns a fresh object with ``feed(chunk: bytes)`` and ``finish()``; the
upload route feeds it while streaming to storage. A purpose that maps to ``None`` is **accepted
as-is** (stored without content checks) until its application adds a validator here: knowledge
bases, product catalogs and interaction events arrive with the support-bot and recommendation
work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from moeplane.datasets.chat import ChatJsonlValidator
from moeplane.errors import InvalidRequest

__all__ = ["SUPPORTED_PURPOSES", "StreamingValidator", "validator_for"]

SUPPORTED_PURPOSES = ("fine-tune", "knowledge", "catalog", "events")


class StreamingValidator(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> Any: ...


_VALIDATORS: dict[str, Callable[[], StreamingValidator] | None] = {
    "fine-tune": ChatJsonlValidator,
    "knowledge": None,
    "catalog": None,
    "events": None,
}
assert set(_VALIDATORS) == set(SUPPORTED_PURPOSES)


def validator_for(purpose: str) -> Callable[[], StreamingValidator] | None:
    """The validator factory for ``purpose``, or None when that purpose is accepted as-is.

    An unknown purpose is a client error (``InvalidRequest``, param ``purpose``), not None, so a
    typo never silently skips validation.
    """
    if purpose not in _VALIDATORS:
        raise InvalidRequest(
            f"purpose must be one of {', '.join(SUPPORTED_PURPOSES)} (got {purpose!r})",
            param="purpose",
        )
    return _VALIDATORS[purpose]
