"""The chat prompt of a support answer: system prompt, retrieved passages, history, question."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_SYSTEM_PROMPT", "HANDOFF", "MAX_HISTORY_TURNS", "Turn", "build_messages"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly customer-support assistant. Answer briefly and only from the "
    "knowledge base; if it does not cover the question, say you will pass it to a colleague."
)
MAX_HISTORY_TURNS = 6  # earlier turns of the conversation kept in the prompt
MAX_PASSAGE_CHARS_IN_PROMPT = 1500  # per passage; the model's context is the limit that matters
# what the bot says instead of calling the model when it escalates
HANDOFF = {
    "human_requested": "Of course - I am passing this conversation to a member of our team, "
    "who will reply here shortly.",
    "low_confidence": "I could not find this in our help articles, so I am passing your "
    "question to a member of our team, who will reply here shortly.",
}


@dataclass(frozen=True)
class Turn:
    role: str  # user | assistant
    content: str


def _knowledge_block(passages: list[tuple[str, str]]) -> str:
    lines = ["Knowledge base passages (cite them as [1], [2], ...):"]
    for number, (title, text) in enumerate(passages, start=1):
        lines.append(f"[{number}] {title}\n{text[:MAX_PASSAGE_CHARS_IN_PROMPT]}")
    return "\n\n".join(lines)


def build_messages(
    system_prompt: str,
    passages: list[tuple[str, str]],
    history: list[Turn],
    message: str,
) -> list[dict[str, str]]:
    """Chat messages for the model: the bot's system prompt with the passages (title, text),
    the last turns of the conversation, then the customer's message."""
    system = f"{system_prompt or DEFAULT_SYSTEM_PROMPT}\n\n{_knowledge_block(passages)}"
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": t.content} for t in history[-MAX_HISTORY_TURNS:]]
    messages.append({"role": "user", "content": message})
    return messages
