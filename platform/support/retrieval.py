"""Hybrid retrieval and the escalation decision. Pure: numpy in, ranked passages out.

score = w_dense * cosine(query, passage) + w_keyword * keyword score, where the keyword score
is BM25 normalised by the query's own information: the sum of the matched terms' BM25 weights
over the most the query could score (every term matched, saturated), so it lies in [0, 1] and
an off-topic query scores near 0 however common its words are elsewhere. The answer's
confidence is the top passage's score; below the bot's threshold, or when the customer asks
for a person, the conversation is escalated.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Hit",
    "KeywordIndex",
    "RetrievalConfig",
    "escalation_reason",
    "query_terms",
    "rank",
    "tokenize",
    "wants_human",
]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP_WORDS = (  # a word list reads better as text
    "a an and are as at be but by can do does for from had has have how i if in into is it "
    "its me my no not of on or our so than that the their them then there these they this "
    "to was we what when where which who why will with you your yours i'm it's can't don't"
)
_STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True)
class RetrievalConfig:
    dense_weight: float = 0.7
    keyword_weight: float = 0.3
    k1: float = 1.2  # BM25 term-frequency saturation
    b: float = 0.75  # BM25 length normalisation
    history_weight: float = 0.5  # how much the previous user turn steers a follow-up's query


@dataclass(frozen=True)
class Hit:
    index: int  # into the passages given to `rank`
    score: float
    dense: float
    keyword: float


def _stem(word: str) -> str:
    """A light suffix stripper, so "shipping", "ships" and "shipped" meet "ship"."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            if suffix in ("ing", "ed") and len(word) > 3 and word[-1] == word[-2]:
                word = word[:-1]  # shipp -> ship
            break
    return word


def tokenize(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


class KeywordIndex:
    """BM25 statistics of a bot's passages (built per request: knowledge bases are small)."""

    def __init__(self, documents: list[str], config: RetrievalConfig = RetrievalConfig()):
        self.config = config
        self.docs = [Counter(tokenize(d)) for d in documents]
        self.lengths = np.array([sum(d.values()) for d in self.docs], dtype=np.float64)
        self.avg_length = float(self.lengths.mean()) if len(self.docs) else 0.0
        self.df: Counter[str] = Counter()
        for doc in self.docs:
            self.df.update(doc.keys())

    def idf(self, term: str) -> float:
        n, df = len(self.docs), self.df.get(term, 0)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query: dict[str, float]) -> np.ndarray:
        """Normalised keyword scores in [0, 1] for ``query`` (term -> weight), per passage."""
        k1, b = self.config.k1, self.config.b
        out = np.zeros(len(self.docs), dtype=np.float64)
        ceiling = sum(w * self.idf(t) * (k1 + 1) for t, w in query.items())
        if not self.docs or ceiling <= 0:
            return out
        norm = k1 * (1 - b + b * self.lengths / max(self.avg_length, 1e-9))  # (passages,)
        for term, weight in query.items():
            if term not in self.df:
                continue
            tf = np.array([doc.get(term, 0) for doc in self.docs], dtype=np.float64)
            out += weight * self.idf(term) * tf * (k1 + 1) / (tf + norm)
        return out / ceiling


def query_terms(message: str, previous: str | None, history_weight: float) -> dict[str, float]:
    terms: dict[str, float] = {}
    for term in tokenize(previous or ""):
        terms[term] = history_weight
    for term in tokenize(message):
        terms[term] = 1.0
    return terms


def rank(
    query_vector: np.ndarray,
    query: dict[str, float],
    passage_vectors: np.ndarray,
    index: KeywordIndex,
    *,
    top_k: int = 3,
) -> list[Hit]:
    """The best ``top_k`` passages, best first. ``passage_vectors`` is (passages, dim), unit rows;
    ``query_vector`` (dim,), unit length."""
    if len(passage_vectors) == 0:
        return []
    config = index.config
    dense = passage_vectors @ query_vector  # (passages,)
    keyword = index.scores(query)  # (passages,)
    score = config.dense_weight * dense + config.keyword_weight * keyword
    order = np.argsort(-score, kind="stable")[:top_k]
    return [
        Hit(index=int(i), score=float(score[i]), dense=float(dense[i]), keyword=float(keyword[i]))
        for i in order
    ]


_HUMAN = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(humans?|representatives?|operators?|live (agent|chat|person)|real (person|people))\b",
        r"\b(talk|speak|chat|connect|transfer|escalate|put)\w*\b[^.?!]{0,40}"
        r"\b(someone|somebody|person|agent|people|staff|manager|rep|support team)\b",
        r"^\W*(agent|human|person|representative|support)\W*(please)?\W*$",
        r"(\bnot|n't|\bno more|\bstop)\b[^.?!]{0,25}\b(bot|robot|machine|ai|chatbot)\b",
    )
]


def wants_human(message: str) -> bool:
    """Whether the customer asks for a person ("I want a human", "talk to an agent", ...)."""
    return any(p.search(message) for p in _HUMAN)


def escalation_reason(message: str, confidence: float | None, threshold: float) -> str | None:
    """``human_requested``, ``low_confidence`` (no passage is close enough), or None."""
    if wants_human(message):
        return "human_requested"
    if confidence is None or confidence < threshold:
        return "low_confidence"
    return None
