"""Knowledge files become passages: Markdown by heading, JSONL FAQs by entry; errors name lines."""

from __future__ import annotations

import pytest

from moeplane.errors import InvalidRequest
from moeplane.support import parse_knowledge
from moeplane.support.knowledge import MAX_PASSAGE_CHARS, parse_markdown
from tests.unit.support.kb import FAQ, HELP_CENTER_MD, faq_jsonl


def test_markdown_splits_by_heading_with_heading_paths():
    passages = parse_knowledge("help.md", HELP_CENTER_MD.encode())
    assert [p.ref for p in passages] == [
        "shipping-delivery-times",
        "shipping-international-shipping",
        "returns-return-policy",
        "returns-refund-timing",
        "account-resetting-your-password",
        "account-deleting-your-account",
    ]
    assert passages[1].title == "Shipping > International shipping"
    assert "flat $25" in passages[1].text and "Customs" in passages[1].text
    assert passages[1].document().startswith("Shipping > International shipping\n")


def test_markdown_edge_cases():
    text = "Intro text.\n\n# A\nx\n# B\n```\n# not a heading\n```\n## B\ny\n"
    passages = parse_markdown(text, default_title="doc")
    assert [(p.ref, p.title) for p in passages] == [
        ("doc", "doc"),
        ("a", "A"),
        ("b", "B"),
        ("b-b", "B > B"),
    ]
    assert "# not a heading" in passages[2].text
    long = "# T\n" + "\n\n".join("word " * 200 for _ in range(10))
    parts = parse_markdown(long)
    assert len(parts) > 1 and all(len(p.text) <= MAX_PASSAGE_CHARS for p in parts)
    assert len({p.ref for p in parts}) == len(parts)


def test_faq_jsonl_one_passage_per_entry():
    passages = parse_knowledge("faq.jsonl", faq_jsonl())
    assert [p.ref for p in passages] == [e["id"] for e in FAQ]
    assert passages[0].title == "Do you sell gift cards?"
    assert passages[0].text.startswith("Q: Do you sell gift cards?\nA: Yes.")


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("faq.jsonl", b'{"question": "q", "answer": "a"}\n{oops\n', "line 2"),
        ("faq.jsonl", b'{"question": "q"}\n', "'answer'"),
        ("faq.jsonl", b'{"question": "q", "answer": "a", "id": 1}\n' * 2, "appears twice"),
        ("kb.pdf", b"%PDF", "Markdown"),
        ("kb.md", b"\xff\xfe", "UTF-8"),
        ("kb.md", b"   \n", "no passages"),
    ],
)
def test_bad_files_are_named(name, data, fragment):
    with pytest.raises(InvalidRequest) as error:
        parse_knowledge(name, data)
    assert fragment in error.value.message and error.value.param == "files"
