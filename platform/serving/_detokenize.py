"""Streaming text out of a growing token list: incremental detokenisation and stop strings.

Byte-level BPE splits a multi-byte character over several tokens, so the text of a token prefix
can end in half a character (decoded as U+FFFD). `IncrementalDetokenizer` holds such tokens back
until the character completes. `StopMatcher` holds back a tail that could still turn into a stop
string, so text a client has seen is never "taken back" when the stop string completes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["IncrementalDetokenizer", "StopMatcher"]

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """New text per token, decoding only a short window rather than the whole output."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, *, skip_special_tokens: bool = True
    ) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # window start: tokens before it are emitted and no longer needed
        self._read = 0  # tokens before this are emitted

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def add(self, token_id: int) -> str:
        """Text completed by ``token_id`` ("" while a character is still incomplete)."""
        self._ids.append(token_id)
        seen = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(seen) or text.endswith(_REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(seen) :]

    def flush(self) -> str:
        """Whatever is held back, incomplete characters included (the output has ended)."""
        seen = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(seen) :]


class StopMatcher:
    """Finds the first stop string in streamed text and says how much text is safe to send."""

    def __init__(self, stop: list[str]) -> None:
        self._stop = [s for s in stop if s]
        self.text = ""
        self._sent = 0

    def feed(self, new_text: str) -> tuple[str, bool]:
        """Add ``new_text``; return (text safe to send now, whether a stop string was found)."""
        self.text += new_text
        hits = [i for i in (self.text.find(s, self._sent) for s in self._stop) if i >= 0]
        if hits:  # a stop string cannot start before _sent: that tail was held back
            return self._send(min(hits)), True
        return self._send(len(self.text) - self._held_back()), False

    def flush(self) -> str:
        return self._send(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest unsent tail that is a proper prefix of some stop string."""
        tail = self.text[self._sent :]
        longest = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(tail)), longest, -1):
                if tail.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def _send(self, end: int) -> str:
        out = self.text[self._sent : end]
        self._sent = max(self._sent, end)
        return out
