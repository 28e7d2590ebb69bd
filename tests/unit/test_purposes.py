"""Upload checks of catalog, events and knowledge files: the use-time rules, run line by line
while the file streams, said of the upload (``line N: ...``, param ``file``); chunking never
changes the outcome; and the upload and use-time verdicts agree."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moeplane.datasets import FileStats, LineSplitter, split_lines, validator_for
from moeplane.errors import InvalidRequest
from moeplane.recommend.records import parse_events_jsonl, parse_products_jsonl
from moeplane.support.knowledge import parse_knowledge
from tests.unit.support.kb import HELP_CENTER_MD, faq_jsonl

PRODUCT = {"id": "p1", "title": "Mug", "category": "Kitchen", "price": 9.5, "attributes": {}}
EVENT = {"user_id": "u1", "product_id": "p1", "type": "view", "timestamp": "2026-11-01T10:00:00Z"}


def jsonl(*rows: Any) -> bytes:
    """Rows as JSONL; a str row is written verbatim (for broken lines)."""
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)


def check(purpose: str, data: bytes, filename: str = "upload.jsonl", size: int = 0) -> FileStats:
    validator = validator_for(purpose)(filename)
    pieces = [data[i : i + size] for i in range(0, len(data), size)] if size else [data]
    for piece in pieces:
        validator.feed(piece)
    return validator.finish()


def error(purpose: str, data: bytes, filename: str = "upload.jsonl") -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check(purpose, data, filename)
    assert caught.value.param == "file" and caught.value.code == "invalid_file"
    return caught.value


def test_good_files_pass_with_stats() -> None:
    products = jsonl(PRODUCT, PRODUCT | {"id": "p2", "price": 3}) + b"\n"
    stats = check("catalog", products).to_dict()
    assert stats["products"] == 2 and stats["lines"] == 3 and stats["bytes"] == len(products)
    assert check("events", jsonl(EVENT, EVENT | {"timestamp": 1.7e9})).to_dict()["events"] == 2
    assert check("events", b"").to_dict()["events"] == 0  # no interactions yet is fine
    assert check("knowledge", faq_jsonl(), "faq.jsonl").to_dict()["format"] == "faq"
    md = check("knowledge", HELP_CENTER_MD.encode(), "help.md").to_dict()
    assert md["format"] == "markdown" and md["lines"] == HELP_CENTER_MD.count("\n")


@pytest.mark.parametrize(
    ("purpose", "data", "filename", "message"),
    [
        ("catalog", jsonl(PRODUCT, PRODUCT | {"id": "b", "price": "x"}), "", "line 2: price"),
        ("catalog", jsonl(PRODUCT, "", PRODUCT), "", "line 3: id 'p1' repeats line 1"),
        ("catalog", jsonl(PRODUCT, "{oops"), "", "line 2: not valid JSON"),
        ("catalog", jsonl({"title": "t"}), "", "line 1: id is required"),
        ("catalog", b"\n \n", "", "the catalog file has no products"),
        ("catalog", jsonl(PRODUCT) + b'{"id": "\xff"}\n', "", "line 2: not valid UTF-8"),
        ("events", jsonl(EVENT, EVENT | {"type": "like"}), "", "line 2: type must be one of"),
        ("events", jsonl(EVENT | {"timestamp": "yesterday"}), "", "line 1: timestamp"),
        ("events", jsonl(EVENT | {"timestamp": 10**400}), "", "line 1: timestamp must be ISO"),
        ("events", jsonl(EVENT | {"timestamp": 1e20}), "", "line 1: timestamp must be between"),
        ("catalog", jsonl(PRODUCT | {"price": 10**400}), "", "line 1: price must be a number"),
        ("catalog", b"[" * 100_000 + b"\n", "", "line 1: JSON nested too deeply"),
        ("knowledge", b"[" * 100_000 + b"\n", "f.jsonl", "line 1: JSON nested too deeply"),
        ("events", jsonl(EVENT, EVENT, {"type": "cart", "user_id": "u"}), "", "line 3: product_id"),
        ("knowledge", b'{"question": "q", "answer": "a"}\n{oops\n', "f.jsonl", "line 2: not"),
        ("knowledge", jsonl({"question": "q"}), "f.jsonl", "line 1: 'answer'"),
        ("knowledge", jsonl(*[{"question": "q", "answer": "a"}] * 2), "f.jsonl", "line 2: the id"),
        ("knowledge", b"%PDF", "kb.pdf", "kb.pdf: knowledge files are Markdown"),
        ("knowledge", b"# Title\n\n## Empty\n", "kb.md", "kb.md holds no passages"),
        ("knowledge", b"# T\n\xff\n", "kb.md", "line 2: not valid UTF-8"),
    ],
)
def test_bad_files_name_the_line(purpose: str, data: bytes, filename: str, message: str) -> None:
    assert error(purpose, data, filename or "upload.jsonl").message.startswith(message)


def test_an_unsupported_knowledge_file_is_refused_before_any_byte() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validator_for("knowledge")("manual.pdf")
    assert caught.value.param == "file"


def test_line_limit_refuses_while_streaming() -> None:
    validator = validator_for("catalog")("p.jsonl")
    validator.feed(jsonl(PRODUCT))
    with pytest.raises(InvalidRequest, match=r"^line 2: longer than the limit"):
        validator.feed(b'{"id": "' + b"x" * (1024 * 1024 + 10))  # no newline: never buffered


CATALOG = (
    b"\xef\xbb\xbf"
    + jsonl(PRODUCT)
    + b"\r\n"
    + jsonl(PRODUCT | {"id": "p2", "title": "Tasse à café 日本"})
    + json.dumps(PRODUCT | {"id": "p3"}).encode()
)


def test_chunking_never_changes_the_outcome() -> None:
    whole = check("catalog", CATALOG)
    assert whole.to_dict()["products"] == 3
    for size in (1, 2, 3, 7, 64):
        assert check("catalog", CATALOG, size=size) == whole
    broken = CATALOG.replace(b'"p2"', b'"p1"')
    for cut in range(len(broken) + 1):
        validator = validator_for("catalog")("p.jsonl")
        with pytest.raises(InvalidRequest) as caught:
            validator.feed(broken[:cut])
            validator.feed(broken[cut:])
            validator.finish()
        assert caught.value.message == "line 3: id 'p1' repeats line 1", cut


MARKDOWN_CASES = [
    HELP_CENTER_MD,
    "# Only a title\n",
    "# Title\n## A\n### B\n",
    "Intro without headings.\n",
    "# T\n```\n# code, not a heading\n```\n",
    "```\n",  # a fence line is text
    "# One\n# Two\n",
    "# One\n# Two\nbody\n",
    "\ufeff# T\n",
    "   \n\t\n",
    "# T\r\n\r\nx\r\n",
    "# T\x0c## U\n",
]


@pytest.mark.parametrize("text", MARKDOWN_CASES)
def test_markdown_upload_and_use_agree(text: str) -> None:
    data = text.encode()
    try:
        parse_knowledge("kb.md", data)
        used = True
    except InvalidRequest:
        used = False
    try:
        check("knowledge", data, "kb.md")
        uploaded = True
    except InvalidRequest:
        uploaded = False
    assert uploaded == used


def test_use_time_parsers_split_lines_like_the_upload() -> None:
    # U+2028 inside a JSON string is one line for every JSONL reader here
    row = json.dumps({"question": "q\u2028?", "answer": "a"}, ensure_ascii=False).encode()
    assert len(parse_knowledge("f.jsonl", row + b"\n")) == 1
    assert check("knowledge", row, "f.jsonl").to_dict()["entries"] == 1
    lines = split_lines([CATALOG[:5], CATALOG[5:]])
    assert [p.id for p in parse_products_jsonl(lines)] == ["p1", "p2", "p3"]
    assert parse_events_jsonl(split_lines([b""])) == []


def test_line_splitter_numbers_every_line() -> None:
    seen: list[tuple[int, str]] = []
    splitter = LineSplitter(lambda n, t: seen.append((n, t)), max_line_bytes=8)
    splitter.feed(b"\xef\xbb\xbfa\r\n\nb")
    splitter.finish()
    assert seen == [(1, "a"), (2, ""), (3, "b")] and splitter.lines == 3
    with pytest.raises(RuntimeError):
        splitter.feed(b"x")


def test_cli_upload_help_names_every_purpose() -> None:
    from typer.testing import CliRunner

    from moeplane.cli import app as cli
    from moeplane.datasets import SUPPORTED_PURPOSES

    result = CliRunner().invoke(cli, ["files", "upload", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for purpose in SUPPORTED_PURPOSES:
        assert purpose in result.output
