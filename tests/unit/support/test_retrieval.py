"""Hybrid retrieval cites the right passage, escalates off-topic questions and requests for a
person, and uses the conversation's history for follow-ups (no database, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from moeplane.modeling.embeddings import EmbeddingModel
from moeplane.serving.support import DEFAULT_THRESHOLD, BotContext, retrieve
from moeplane.support import (
    KeywordIndex,
    LabelledQuestion,
    Turn,
    build_messages,
    escalation_reason,
    parse_knowledge,
    query_terms,
    rank,
    score,
    wants_human,
)
from tests.unit.support.kb import HELP_CENTER_MD, HUMAN_REQUESTS, QUESTIONS, faq_jsonl


@pytest.fixture(scope="module")
def embedder() -> EmbeddingModel:
    return EmbeddingModel()


@pytest.fixture(scope="module")
def kb(embedder):
    passages = parse_knowledge("help.md", HELP_CENTER_MD.encode())
    passages += parse_knowledge("faq.jsonl", faq_jsonl())
    return passages, embedder.encode([p.document() for p in passages])


def _ctx(kb, history=()) -> BotContext:
    passages, vectors = kb
    return BotContext(
        bot_id="bot-1",
        model="chat",
        system_prompt="",
        threshold=DEFAULT_THRESHOLD,
        conversation_id=None,
        history=list(history),
        passage_ids=[f"psg-{i}" for i in range(len(passages))],
        refs=[p.ref for p in passages],
        titles=[p.title for p in passages],
        texts=[p.text for p in passages],
        vectors=vectors,
    )


def test_labelled_questions_hit_and_escalate(kb, embedder):
    ctx = _ctx(kb)
    labelled = [LabelledQuestion(q, ref, ref is None) for q, ref in QUESTIONS]
    labelled += [LabelledQuestion(h, None, True) for h in HUMAN_REQUESTS]
    results = []
    for item in labelled:
        found = retrieve(ctx, item.question, embedder)
        results.append(
            {"passages": found.citations, "escalate": found.escalation_reason is not None}
        )
    metrics = score(labelled, results)
    assert metrics.hit_at_1 >= 0.9 and metrics.hit_at_3 == 1.0, metrics
    assert metrics.escalation_precision == 1.0 and metrics.escalation_recall == 1.0, metrics


def test_citations_and_reasons(kb, embedder):
    ctx = _ctx(kb)
    found = retrieve(ctx, "Do you take PayPal?", embedder)
    assert found.citations[0]["ref"] == "payment-methods"
    assert found.citations[0]["title"] == "Which payment methods do you accept?"
    assert found.citations[0]["passage_id"] == "psg-8" and len(found.citations) == 3
    assert found.escalation_reason is None and found.confidence > DEFAULT_THRESHOLD
    assert retrieve(ctx, "What is the capital of Australia?", embedder).escalation_reason == (
        "low_confidence"
    )
    human = retrieve(ctx, "Do you take PayPal? I want a human", embedder)
    assert human.escalation_reason == "human_requested"


def test_follow_up_uses_the_conversation(kb, embedder):
    history = [Turn("user", "Do you ship to Canada?"), Turn("assistant", "Yes, we do.")]
    alone = retrieve(_ctx(kb), "How long does it take?", embedder)
    follow = retrieve(_ctx(kb, history), "How long does it take?", embedder)
    assert alone.citations[0]["ref"] == "shipping-delivery-times"  # domestic, by default
    assert follow.citations[0]["ref"] == "shipping-international-shipping"
    # a bare "And how much?" means nothing alone (escalates), but follows the conversation
    assert retrieve(_ctx(kb), "And how much?", embedder).escalation_reason == "low_confidence"
    follow = retrieve(_ctx(kb, history), "And how much?", embedder)
    assert follow.escalation_reason is None
    assert follow.citations[0]["ref"] == "shipping-international-shipping"


@pytest.mark.parametrize("text", [*HUMAN_REQUESTS, "HUMAN!", "I don't want to talk to a bot"])
def test_wants_human(text):
    assert wants_human(text)


@pytest.mark.parametrize(
    "text",
    ["Can someone else pick up my order?", "Is in-person pickup possible?", "Where is my order?"],
)
def test_ordinary_questions_do_not_ask_for_a_human(text):
    assert not wants_human(text)


def test_escalation_reason_rules():
    assert escalation_reason("hi", None, 0.2) == "low_confidence"  # an empty knowledge base
    assert escalation_reason("hi", 0.19, 0.2) == "low_confidence"
    assert escalation_reason("hi", 0.2, 0.2) is None
    assert escalation_reason("get me a human", 0.9, 0.2) == "human_requested"


def test_keyword_score_is_normalised_and_ranks():
    docs = ["returns within 30 days", "shipping to canada costs 25", "gift cards never expire"]
    index = KeywordIndex(docs)
    scores = index.scores(query_terms("shipping canada", None, 0.5))
    assert scores.argmax() == 1 and 0 < scores[1] <= 1 and scores[0] == 0
    assert index.scores(query_terms("zebra", None, 0.5)).max() == 0
    vectors = np.eye(3, dtype=np.float32)
    hits = rank(vectors[2], query_terms("gift", None, 0.5), vectors, index, top_k=2)
    assert [h.index for h in hits] == [2, 0] or hits[0].index == 2


def test_prompt_has_system_passages_history_and_question():
    history = [
        Turn("user", f"q{i}") if i % 2 == 0 else Turn("assistant", f"a{i}") for i in range(10)
    ]
    messages = build_messages("Be nice.", [("T1", "text one"), ("T2", "text two")], history, "now?")
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("Be nice.")
    assert "[1] T1\ntext one" in messages[0]["content"] and "[2] T2" in messages[0]["content"]
    assert [m["content"] for m in messages[1:-1]] == [t.content for t in history[-6:]]
    assert messages[-1] == {"role": "user", "content": "now?"}
