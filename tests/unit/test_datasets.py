"""Chat JSONL validation: every rule names its line, and chunking never changes the result."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from moeplane.datasets import (
    SUPPORTED_PURPOSES,
    ChatJsonlValidator,
    DatasetStats,
    validate_chat_jsonl,
    validator_for,
)
from moeplane.errors import InvalidRequest


def example(*messages: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in messages], **extra}


GOOD = example(("user", "hi"), ("assistant", "hello"))


def jsonl(*rows: Any) -> bytes:
    """Rows as JSONL; a str row is written verbatim (for broken lines)."""
    return b"".join(
        (row if isinstance(row, str) else json.dumps(row)).encode() + b"\n" for row in rows
    )


def error_for(data: bytes) -> str:
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_jsonl([data])
    assert caught.value.param == "file"
    return caught.value.message


def test_stats_of_a_valid_file() -> None:
    data = jsonl(
        example(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!")),
        example(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")),
        {
            "messages": [{"role": "assistant", "content": "yz", "weight": 1, "name": "bot"}],
            "metadata": {"source": "crm"},
        },
    )
    stats = validate_chat_jsonl([data])
    assert stats == DatasetStats(
        examples=3,
        messages=3 + 4 + 1,
        assistant_messages=1 + 2 + 1,
        characters=len("Be brief.HiHello!") + 4 + 2,
        max_messages_per_example=4,
        blank_lines=0,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        estimated_tokens=6,  # ceil(23 / 4)
    )
    assert stats.to_dict()["estimated_tokens"] == 6


def test_characters_count_code_points_not_bytes() -> None:
    stats = validate_chat_jsonl([jsonl(example(("user", "héllo"), ("assistant", "日本")))])
    assert stats.characters == 7
    assert stats.estimated_tokens == 2


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ((GOOD, GOOD, '{"messages": [}'), "line 3: not valid JSON (Expecting value at column 15)"),
        (('{"messages": [] "x": 1}',), "line 1: not valid JSON (Expecting ',' delimiter"),
        ((GOOD, '{"messages": NaN}'), "line 2: not valid JSON (NaN is not valid JSON)"),
        (("[1, 2]",), "line 1: must be a JSON object (got array)"),
        ((GOOD, {"messages": []}), "line 2: 'messages' must be a non-empty list"),
        (({"messages": "hi"},), "line 1: 'messages' must be a non-empty list"),
        (({"metadata": {}},), "line 1: 'messages' must be a non-empty list"),
        (
            (GOOD, example(("user", "a"), ("assistant", "b"), ("bot", "c"))),
            "line 2: messages[2].role must be one of system, user, assistant (got 'bot')",
        ),
        (
            ({"messages": [{"content": "x"}]},),
            "line 1: messages[0].role is missing",
        ),
        (
            (
                {
                    "messages": [
                        {"role": "user", "content": "a"},
                        {"role": "assistant", "content": 5},
                    ]
                },
            ),
            "line 1: messages[1].content must be a string (got number)",
        ),
        (
            ({"messages": [{"role": "assistant", "content": None}]},),
            "line 1: messages[0].content must be a string (got null)",
        ),
        (
            ({"messages": [{"role": "assistant"}]},),
            "line 1: messages[0].content is missing",
        ),
        (
            (GOOD, GOOD, GOOD, example(("system", "s"), ("user", "u"))),
            "line 4: no assistant message to learn from",
        ),
        (
            (
                {
                    "messages": [
                        {"role": "user", "content": "u"},
                        {"role": "assistant", "content": "a", "weight": 0},
                    ]
                },
            ),
            "line 1: no assistant message to learn from (every assistant message has weight 0)",
        ),
        (
            (GOOD, GOOD | {"foo": 1}),
            "line 2: unexpected key 'foo' (allowed: messages, metadata)",
        ),
        (({"messages": ["hi"]},), "line 1: messages[0] must be an object (got string)"),
        (
            ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]},),
            "line 1: messages[0] has unexpected key 'tool_calls' (allowed: role, content, name,",
        ),
        (
            ({"messages": [{"role": "user", "content": "x", "weight": 1}]},),
            "line 1: messages[0].weight is only allowed on assistant messages",
        ),
        (
            ({"messages": [{"role": "assistant", "content": "x", "weight": 2}]},),
            "line 1: messages[0].weight must be 0 or 1 (got 2)",
        ),
        (
            ({"messages": [{"role": "assistant", "content": "x", "weight": True}]},),
            "line 1: messages[0].weight must be 0 or 1 (got True)",
        ),
        (
            ({"messages": [{"role": "assistant", "content": "x", "name": 3}]},),
            "line 1: messages[0].name must be a string",
        ),
        ((GOOD | {"metadata": []},), "line 1: 'metadata' must be an object"),
    ],
)
def test_error_messages_name_the_line_and_the_reason(rows: tuple[Any, ...], expected: str) -> None:
    assert error_for(jsonl(*rows)).startswith(expected)


def test_a_long_role_is_shortened_in_the_message() -> None:
    message = error_for(jsonl({"messages": [{"role": "x" * 500, "content": ""}]}))
    assert message.startswith("line 1: messages[0].role must be one of")
    assert len(message) < 150


def test_empty_file_and_only_blank_lines_have_no_examples() -> None:
    assert error_for(b"") == "the file has no examples"
    assert error_for(b"\n  \n\r\n") == "the file has no examples"


def test_blank_lines_are_skipped_counted_and_still_numbered() -> None:
    data = b"\n" + jsonl(GOOD) + b"   \n\n" + jsonl(GOOD)
    stats = validate_chat_jsonl([data])
    assert (stats.examples, stats.blank_lines) == (2, 3)
    assert error_for(data + b"\n{oops\n").startswith("line 7: not valid JSON")


def test_crlf_line_endings() -> None:
    data = jsonl(GOOD, GOOD).replace(b"\n", b"\r\n")
    stats = validate_chat_jsonl([data])
    assert (stats.examples, stats.bytes) == (2, len(data))
    assert error_for(data + b"{bad}\r\n").startswith("line 3: not valid JSON")


def test_missing_final_newline() -> None:
    data = jsonl(GOOD, GOOD).rstrip(b"\n")
    assert validate_chat_jsonl([data]).examples == 2
    assert error_for(data + b'\n{"messages": []}') == (
        "line 3: 'messages' must be a non-empty list"
    )


def test_not_utf8_names_the_line_and_column() -> None:
    data = jsonl(GOOD) + b'{"messages": "\xff"}\n'
    assert error_for(data) == "line 2: not valid UTF-8 (bad byte at column 15)"
    latin1 = json.dumps(example(("user", "café"), ("assistant", "ok")), ensure_ascii=False)
    assert error_for(latin1.encode("latin-1")).startswith("line 1: not valid UTF-8")


def test_a_utf8_bom_on_the_first_line_is_tolerated() -> None:
    assert validate_chat_jsonl([b"\xef\xbb\xbf" + jsonl(GOOD)]).examples == 1


def test_line_length_limit_names_the_line() -> None:
    small = ChatJsonlValidator(max_line_bytes=100)
    small.feed(jsonl(GOOD))  # 82 bytes: fine
    with pytest.raises(InvalidRequest) as caught:
        small.feed(b'{"messages": "' + b"x" * 200)  # no newline yet: refused while streaming
    assert caught.value.message.startswith("line 2: longer than the limit of 100 bytes")

    long_line = jsonl(GOOD | {"metadata": {"pad": "y" * 200}})
    with pytest.raises(InvalidRequest, match=r"^line 3: longer than the limit of 100 bytes"):
        validate_chat_jsonl([jsonl(GOOD, GOOD) + long_line], max_line_bytes=100)


def test_the_default_line_limit_is_one_mib() -> None:
    big = json.dumps(example(("user", "x" * (1024 * 1024)), ("assistant", "y"))).encode()
    assert error_for(jsonl(GOOD) + big) == (
        "line 2: longer than the limit of 1048576 bytes (1 MiB)"
    )


def test_a_line_exactly_at_the_limit_passes_with_crlf() -> None:
    line = json.dumps(GOOD).encode()
    stats = validate_chat_jsonl([line + b"\r\n"], max_line_bytes=len(line))
    assert stats.examples == 1


SMALL_FILE = (
    b"\xef\xbb\xbf"
    + jsonl(
        example(("system", "Réponds en français."), ("user", "Salut"), ("assistant", "Bonjour"))
    )
    + b"\r\n"
    + jsonl(example(("user", "日本語"), ("assistant", "はい")), GOOD | {"metadata": {"k": 1}})
    + b"  \n"
    + json.dumps(example(("user", "end"), ("assistant", "ok"))).encode()
)


def feed_in(pieces: list[bytes]) -> DatasetStats:
    validator = ChatJsonlValidator()
    for piece in pieces:
        validator.feed(piece)
    return validator.finish()


def test_every_split_point_gives_the_same_stats() -> None:
    whole = validate_chat_jsonl([SMALL_FILE])
    assert (whole.examples, whole.blank_lines) == (4, 2)
    for cut in range(len(SMALL_FILE) + 1):
        assert feed_in([SMALL_FILE[:cut], SMALL_FILE[cut:]]) == whole, cut


def test_byte_by_byte_and_fixed_size_chunks_give_the_same_stats() -> None:
    whole = validate_chat_jsonl([SMALL_FILE])
    assert feed_in([SMALL_FILE[i : i + 1] for i in range(len(SMALL_FILE))]) == whole
    for size in (2, 3, 7, 64):
        chunks = [SMALL_FILE[i : i + size] for i in range(0, len(SMALL_FILE), size)]
        assert feed_in(chunks) == whole, size


def test_every_split_point_reports_the_same_error() -> None:
    broken = SMALL_FILE.replace(b'"assistant", "content": "\\u306f\\u3044"', b'"bot"')
    assert broken != SMALL_FILE
    expected = error_for(broken)
    assert expected.startswith("line 3: messages[1]")
    for cut in range(len(broken) + 1):
        with pytest.raises(InvalidRequest) as caught:
            feed_in([broken[:cut], broken[cut:]])
        assert caught.value.message == expected, cut


def test_a_validator_is_single_use() -> None:
    validator = ChatJsonlValidator()
    validator.feed(jsonl(GOOD))
    validator.finish()
    with pytest.raises(RuntimeError):
        validator.feed(b"")
    with pytest.raises(RuntimeError):
        validator.finish()


def test_validator_for_each_purpose() -> None:
    assert SUPPORTED_PURPOSES == ("fine-tune", "knowledge", "catalog", "events")
    assert isinstance(validator_for("fine-tune")("train.jsonl"), ChatJsonlValidator)
    for purpose in ("knowledge", "catalog", "events"):  # tests/unit/test_purposes.py
        assert callable(validator_for(purpose))
    with pytest.raises(InvalidRequest) as caught:
        validator_for("fine_tune")
    assert caught.value.param == "purpose"
