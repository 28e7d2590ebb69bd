"""Offline evaluation of a support bot on labelled questions (``moeplane eval support``).

A labelled question is ``{"question", "passage"?: ref | title | id | null, "escalate"?: bool}``:
``passage`` names the passage that answers it (null or absent: nothing should), ``escalate``
whether a person should take over (default: true exactly when no passage answers it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from moeplane.errors import InvalidRequest

__all__ = ["LabelledQuestion", "SupportEval", "parse_questions", "score"]


@dataclass(frozen=True)
class LabelledQuestion:
    question: str
    passage: str | None
    escalate: bool


@dataclass(frozen=True)
class SupportEval:
    questions: int
    answerable: int
    hit_at_1: float
    hit_at_3: float
    escalation_precision: float
    escalation_recall: float
    escalated: int
    should_escalate: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_questions(text: str) -> list[LabelledQuestion]:
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(entry, dict) or not isinstance(entry.get("question"), str):
            raise InvalidRequest(f'line {number}: expected {{"question": ...}}')
        passage = entry.get("passage")
        escalate = entry.get("escalate", passage is None)
        out.append(LabelledQuestion(entry["question"], passage, bool(escalate)))
    if not out:
        raise InvalidRequest("the question file is empty")
    return out


def _matches(label: str, hit: dict[str, Any]) -> bool:
    return label in (hit.get("ref"), hit.get("title"), hit.get("passage_id"))


def score(questions: list[LabelledQuestion], results: list[dict[str, Any]]) -> SupportEval:
    """``results[i]`` is the bot's search result for ``questions[i]``: {passages: [{passage_id,
    ref, title, ...}] best first, escalate: bool}."""
    assert len(questions) == len(results)
    answerable = [(q, r) for q, r in zip(questions, results, strict=True) if q.passage]
    hit1 = sum(any(_matches(q.passage, h) for h in r["passages"][:1]) for q, r in answerable)
    hit3 = sum(any(_matches(q.passage, h) for h in r["passages"][:3]) for q, r in answerable)
    flagged = [bool(r["escalate"]) for r in results]
    truth = [q.escalate for q in questions]
    true_pos = sum(f and t for f, t in zip(flagged, truth, strict=True))
    n = max(1, len(answerable))
    return SupportEval(
        questions=len(questions),
        answerable=len(answerable),
        hit_at_1=hit1 / n,
        hit_at_3=hit3 / n,
        escalation_precision=true_pos / sum(flagged) if any(flagged) else 1.0,
        escalation_recall=true_pos / sum(truth) if any(truth) else 1.0,
        escalated=sum(flagged),
        should_escalate=sum(truth),
    )
