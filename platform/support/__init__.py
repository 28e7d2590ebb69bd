"""The support bot's pure parts: knowledge parsing, hybrid retrieval and escalation, prompts,
offline evaluation. The database and serving side is `moeplane.serving.support`."""

from moeplane.support.evaluate import LabelledQuestion, SupportEval, parse_questions, score
from moeplane.support.knowledge import Passage, parse_knowledge
from moeplane.support.prompt import DEFAULT_SYSTEM_PROMPT, HANDOFF, Turn, build_messages
from moeplane.support.retrieval import (
    Hit,
    KeywordIndex,
    RetrievalConfig,
    escalation_reason,
    query_terms,
    rank,
    wants_human,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "HANDOFF",
    "Hit",
    "KeywordIndex",
    "LabelledQuestion",
    "Passage",
    "RetrievalConfig",
    "SupportEval",
    "Turn",
    "build_messages",
    "escalation_reason",
    "parse_knowledge",
    "parse_questions",
    "query_terms",
    "rank",
    "score",
    "wants_human",
]
