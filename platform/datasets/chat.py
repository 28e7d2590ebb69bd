"""OpenAI chat-format JSONL, validated line by line while it streams.

One example per line::

    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
     "metadata": {"source": "crm"}}

Rules (each failure is an :class:`~moeplane.errors.InvalidRequest` with ``param="file"`` and a
message starting ``line N: ``, so a tenant can fix a 100k-line file without bisecting it):

* the file is UTF-8 (a BOM on line 1 is tolerated) and each line at most ``max_line_bytes``;
* a line is a JSON object with ``messages`` (a non-empty list) and optionally ``metadata`` (an
  object) — nothing else, so typos such as ``mesages`` fail loudly instead of training on nothing;
* a message is ``{"role": system|user|assistant, "content": str}``, optionally ``name`` (str) and,
  on assistant messages, ``weight`` 0 or 1 (as OpenAI: 0 = shown to the model but not learned);
* every example has an assistant message with weight 1 (otherwise it teaches nothing).

Blank lines (empty or whitespace only) are **skipped and counted** in ``blank_lines``, unlike
OpenAI, which rejects them: editors and ``cat a b > c`` add them, and they carry no example, so
refusing a whole upload for one would only cost the tenant a round trip. Line numbers still count
them, so a reported line number is the one an editor shows. ``\\r\\n`` line endings are accepted and
the final newline is optional.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from moeplane.datasets.lines import MAX_LINE_BYTES, LineSplitter, line_error
from moeplane.errors import InvalidRequest

__all__ = [
    "MAX_LINE_BYTES",
    "ChatJsonlValidator",
    "DatasetStats",
    "validate_chat_jsonl",
]

ROLES = ("system", "user", "assistant")
TOP_LEVEL_KEYS = ("messages", "metadata")
MESSAGE_KEYS = ("role", "content", "name", "weight")
# The chars/4 rule of thumb for English text with BPE tokenizers: good enough to refuse a job that
# would blow a budget before paying for tokenising the file, never used for billing.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class DatasetStats:
    """Summary of a valid file, stored with it (lineage, cost estimates, the dashboard)."""

    examples: int
    messages: int
    assistant_messages: int
    # Characters (code points) of all message contents, roles and keys excluded.
    characters: int
    max_messages_per_example: int
    blank_lines: int
    bytes: int
    sha256: str
    # ceil(characters / 4): an estimate used for quota and cost checks before tokenising.
    estimated_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_invalid = line_error


def _shown(value: Any) -> str:
    """A short rendering of a bad value for an error message (never echo a whole example)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _reject_constant(name: str) -> Any:
    # json accepts NaN/Infinity, which are not JSON and which other readers of the file reject.
    raise ValueError(f"{name} is not valid JSON")


class _Tally:
    """Mutable counters while streaming; frozen into :class:`DatasetStats` by ``finish()``."""

    def __init__(self) -> None:
        self.examples = 0
        self.messages = 0
        self.assistant_messages = 0
        self.characters = 0
        self.max_messages_per_example = 0
        self.blank_lines = 0


def _check_message(line: int, index: int, message: Any) -> tuple[str, int, bool]:
    """Validate one message; return (role, content characters, learned-from)."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid(line, f"{where} must be an object (got {_type_name(message)})")
    for key in message:
        if key not in MESSAGE_KEYS:
            allowed = ", ".join(MESSAGE_KEYS)
            raise _invalid(line, f"{where} has unexpected key {_shown(key)} (allowed: {allowed})")
    if "role" not in message:
        raise _invalid(line, f"{where}.role is missing")
    role = message["role"]
    if role not in ROLES:
        raise _invalid(line, f"{where}.role must be one of {', '.join(ROLES)} (got {_shown(role)})")
    if "content" not in message:
        raise _invalid(line, f"{where}.content is missing")
    content = message["content"]
    if not isinstance(content, str):
        raise _invalid(line, f"{where}.content must be a string (got {_type_name(content)})")
    if "name" in message and not isinstance(message["name"], str):
        raise _invalid(line, f"{where}.name must be a string")
    learned = role == "assistant"
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant":
            raise _invalid(line, f"{where}.weight is only allowed on assistant messages")
        # bool is an int in Python; true/false is not what OpenAI's format means by 0/1.
        if isinstance(weight, bool) or weight not in (0, 1):
            raise _invalid(line, f"{where}.weight must be 0 or 1 (got {_shown(weight)})")
        learned = weight == 1
    return role, len(content), learned


def check_example(line: int, text: str) -> tuple[int, int, int]:
    """Validate one non-blank line; return (messages, assistant messages, content characters)."""
    try:
        example = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _invalid(line, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise _invalid(line, f"not valid JSON ({exc})") from None
    if not isinstance(example, dict):
        raise _invalid(line, f"must be a JSON object (got {_type_name(example)})")
    for key in example:
        if key not in TOP_LEVEL_KEYS:
            allowed = ", ".join(TOP_LEVEL_KEYS)
            raise _invalid(line, f"unexpected key {_shown(key)} (allowed: {allowed})")
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid(line, "'messages' must be a non-empty list")
    if "metadata" in example and not isinstance(example["metadata"], dict):
        raise _invalid(line, "'metadata' must be an object")
    assistant = characters = 0
    learned_any = False
    for index, message in enumerate(messages):
        role, chars, learned = _check_message(line, index, message)
        assistant += role == "assistant"
        characters += chars
        learned_any = learned_any or learned
    if not learned_any:
        reason = "no assistant message to learn from"
        if assistant:
            reason += " (every assistant message has weight 0)"
        raise _invalid(line, reason)
    return len(messages), assistant, characters


class ChatJsonlValidator:
    """Validate a chat JSONL file fed in chunks of any size, in one pass.

    The upload route feeds each chunk it streams to storage, so a bad line stops the upload at
    that line and nothing is buffered beyond one line (lines are split by
    :class:`~moeplane.datasets.lines.LineSplitter`). ``finish()`` checks the last line (which may
    lack a newline) and returns the stats. A validator is single-use.
    """

    def __init__(self, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._lines = LineSplitter(self._take, max_line_bytes=max_line_bytes)
        self.max_line_bytes = max_line_bytes
        self._tally = _Tally()
        self._finished = False

    def feed(self, chunk: bytes) -> None:
        """Validate every line that ``chunk`` completes; raises on the first bad one."""
        if self._finished:
            raise RuntimeError("feed() after finish(): a validator is single-use")
        self._lines.feed(chunk)

    def _take(self, line: int, text: str) -> None:
        if not text.strip():
            self._tally.blank_lines += 1
            return
        messages, assistant, characters = check_example(line, text)
        tally = self._tally
        tally.examples += 1
        tally.messages += messages
        tally.assistant_messages += assistant
        tally.characters += characters
        tally.max_messages_per_example = max(tally.max_messages_per_example, messages)

    def finish(self) -> DatasetStats:
        """Validate a final unterminated line, then return the stats of the whole file."""
        if self._finished:
            raise RuntimeError("finish() called twice: a validator is single-use")
        self._finished = True
        self._lines.finish()
        tally = self._tally
        if tally.examples == 0:
            raise InvalidRequest("the file has no examples", param="file", code="invalid_file")
        return DatasetStats(
            examples=tally.examples,
            messages=tally.messages,
            assistant_messages=tally.assistant_messages,
            characters=tally.characters,
            max_messages_per_example=tally.max_messages_per_example,
            blank_lines=tally.blank_lines,
            bytes=self._lines.bytes,
            sha256=self._lines.sha256(),
            estimated_tokens=math.ceil(tally.characters / CHARS_PER_TOKEN),
        )


def validate_chat_jsonl(
    chunks: Iterable[bytes], *, max_line_bytes: int = MAX_LINE_BYTES
) -> DatasetStats:
    """Validate a whole file given as byte chunks in order; see :class:`ChatJsonlValidator`.

    Lines must keep their ``\n`` (iterating a binary file does): chunks are concatenated.
    """
    validator = ChatJsonlValidator(max_line_bytes=max_line_bytes)
    for chunk in chunks:
        validator.feed(chunk)
    return validator.finish()
