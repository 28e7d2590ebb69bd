"""Uploaded text files as numbered lines, split while they stream.

Every line-oriented upload check (fine-tune chat, catalog products, events, knowledge) and the
parsers that read those files again when they are used split lines here, so the line number an
upload error names is the one use reports and an editor shows. Memory is one line: bytes are
buffered only up to the next ``\\n``, and a line longer than ``max_line_bytes`` is refused before
the rest of it arrives.

Rules: lines end at ``\\n`` (a ``\\r`` before it is dropped; the final newline is optional); each
line is UTF-8; a BOM at the start of line 1 is dropped. Blank lines are handed on like any other
(each consumer says whether it skips them), so numbering never skips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from moeplane.errors import InvalidRequest

__all__ = ["MAX_LINE_BYTES", "LineSplitter", "line_error", "split_lines"]

# 1 MiB is far beyond any example, product, event or paragraph we expect, and bounds the memory a
# single unterminated line can pin in the upload route.
MAX_LINE_BYTES = 1024 * 1024
_BOM = "\ufeff"


def line_error(line: int, reason: str) -> InvalidRequest:
    """An upload error about one line, in the shape every purpose shares."""
    return InvalidRequest(f"line {line}: {reason}", param="file", code="invalid_file")


class LineSplitter:
    """Split bytes fed in chunks of any size into lines; call ``on_line(number, text)`` for each.

    ``finish()`` hands on a final unterminated line. ``bytes`` and ``sha256()`` describe everything
    fed. A splitter is single-use.
    """

    def __init__(
        self, on_line: Callable[[int, str], None], *, max_line_bytes: int = MAX_LINE_BYTES
    ) -> None:
        if max_line_bytes <= 0:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self._on_line = on_line
        self._digest = hashlib.sha256()
        self.bytes = 0
        self.lines = 0  # lines handed on so far
        self._pending = bytearray()  # the current, not yet terminated line
        self._finished = False

    def feed(self, chunk: bytes) -> None:
        """Hand on every line that ``chunk`` completes; raises on the first bad one."""
        if self._finished:
            raise RuntimeError("feed() after finish(): a line splitter is single-use")
        self._digest.update(chunk)
        self.bytes += len(chunk)
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if self._pending:
                self._pending += chunk[start:end]
                raw, self._pending = bytes(self._pending), bytearray()
            else:
                raw = chunk[start:end]
            self._take(raw)
            start = end + 1
        self._pending += chunk[start:]
        # Fail before the rest of an oversized line arrives, not after buffering all of it.
        if len(self._pending) > self.max_line_bytes + 1:  # +1: a '\r' still to be stripped
            raise self._too_long(self.lines + 1)

    def finish(self) -> None:
        """Hand on a final line without a newline."""
        if self._finished:
            raise RuntimeError("finish() called twice: a line splitter is single-use")
        self._finished = True
        if self._pending:
            raw, self._pending = bytes(self._pending), bytearray()
            self._take(raw)

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _too_long(self, line: int) -> InvalidRequest:
        limit = self.max_line_bytes
        return line_error(line, f"longer than the limit of {limit} bytes ({limit / 1048576:g} MiB)")

    def _take(self, raw: bytes) -> None:
        self.lines += 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self.max_line_bytes:
            raise self._too_long(self.lines)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not valid UTF-8 (bad byte at column {exc.start + 1})"
            raise line_error(self.lines, reason) from None
        if self.lines == 1 and text.startswith(_BOM):
            text = text[1:]
        self._on_line(self.lines, text)


def split_lines(chunks: Iterable[bytes], *, max_line_bytes: int = MAX_LINE_BYTES) -> list[str]:
    """All lines of a whole file (a stored file read at use time), by the rules above."""
    lines: list[str] = []
    splitter = LineSplitter(lambda _, text: lines.append(text), max_line_bytes=max_line_bytes)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.finish()
    return lines
