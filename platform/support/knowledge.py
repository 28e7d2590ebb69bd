"""Knowledge bases as passages: Markdown split by heading, JSONL FAQs one entry a passage.

Pure: bytes in, `Passage` drafts out. Errors name the file and line, so a tenant can fix the
upload. Lines are split by `moeplane.datasets.lines`, and `KnowledgeCheck` (what the upload
route runs, one line at a time) reuses `FaqLines` and the heading rule of `parse_markdown`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from moeplane.datasets.lines import split_lines
from moeplane.errors import InvalidRequest

__all__ = [
    "FaqLines",
    "KnowledgeCheck",
    "Passage",
    "knowledge_format",
    "parse_faq_jsonl",
    "parse_knowledge",
    "parse_markdown",
]

MAX_PASSAGE_CHARS = 4000  # longer sections are split at paragraph boundaries
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Passage:
    ref: str  # the FAQ entry's id, or the heading's slug (unique within a file)
    title: str
    text: str

    def document(self) -> str:
        """What retrieval reads: the title counts as part of the passage."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "section"


def _unique(ref: str, seen: set[str]) -> str:
    out, n = ref, 2
    while out in seen:
        out, n = f"{ref}-{n}", n + 1
    seen.add(out)
    return out


def _split_long(text: str) -> list[str]:
    if len(text) <= MAX_PASSAGE_CHARS:
        return [text]
    parts, current = [], ""
    for para in re.split(r"\n\s*\n", text):
        if current and len(current) + len(para) + 2 > MAX_PASSAGE_CHARS:
            parts.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current:
        parts.append(current)
    size = MAX_PASSAGE_CHARS  # a single paragraph longer than that is cut
    return [p[i : i + size] for p in parts for i in range(0, len(p), size)]


def _heading(line: str) -> tuple[int, str] | None:
    match = _HEADING.match(line)
    return (len(match.group(1)), match.group(2).strip()) if match else None


class _Headings:
    """Which lines are headings, fed in order: a ``# comment`` in a fenced code block is none."""

    def __init__(self) -> None:
        self._in_code = False

    def __call__(self, line: str) -> tuple[int, str] | None:
        if line.lstrip().startswith("```"):
            self._in_code = not self._in_code
            return None
        return None if self._in_code else _heading(line)


def parse_markdown(text: str, *, default_title: str = "") -> list[Passage]:
    """One passage per heading section; the title is the heading path ("Returns > Refunds").
    A document's single top-level heading is its title, not part of every path."""
    lines_in = text.splitlines()
    is_heading = _Headings()
    headings = [is_heading(line) for line in lines_in]
    doc_title = [h for h in headings if h and h[0] == 1]
    skip_h1 = len(doc_title) == 1
    sections: list[tuple[str, list[str]]] = [("", [])]
    path: list[tuple[int, str]] = []
    for line, match in zip(lines_in, headings, strict=True):
        if match and skip_h1 and match[0] == 1:
            default_title = match[1]
            continue
        if match:
            level, heading = match
            path = [(lv, h) for lv, h in path if lv < level] + [(level, heading)]
            sections.append((" > ".join(h for _, h in path), []))
        else:
            sections[-1][1].append(line)
    passages, seen = [], set()
    for title, lines in sections:
        body = "\n".join(lines).strip()
        if not body:
            continue
        title = title or default_title
        for i, chunk in enumerate(_split_long(body)):
            ref = _unique(slug(title) + (f"-{i + 1}" if i else ""), seen)
            passages.append(Passage(ref=ref, title=title, text=chunk))
    return passages


class FaqLines:
    """A JSONL FAQ read one line at a time (``reader(number, text)`` per line, then
    ``finish()``): :func:`parse_faq_jsonl` and the upload check share it. One passage per line
    ``{"question", "answer", "id"?, "title"?}``; it holds the ids seen so far and, only with
    ``keep``, the passages."""

    def __init__(self, *, filename: str = "", keep: bool = True) -> None:
        self.passages: list[Passage] = []
        self.count = 0
        self._filename = filename
        self._keep = keep
        self._seen: set[str] = set()

    def __call__(self, number: int, line: str) -> None:
        if not line.strip():
            return
        where = f"{self._filename} line {number}".strip()
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{where}: not valid JSON ({exc.msg})", param="files") from exc
        except RecursionError as exc:
            raise InvalidRequest(f"{where}: JSON nested too deeply", param="files") from exc
        if not isinstance(entry, dict):
            raise InvalidRequest(f"{where}: expected an object", param="files")
        question, answer = entry.get("question"), entry.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise InvalidRequest(f"{where}: 'question' must be a non-empty string", param="files")
        if not isinstance(answer, str) or not answer.strip():
            raise InvalidRequest(f"{where}: 'answer' must be a non-empty string", param="files")
        title = entry.get("title") or question
        ref = str(entry.get("id") or slug(question))
        if len(ref) > 200 or not isinstance(title, str):
            raise InvalidRequest(f"{where}: 'id' (200 chars) or 'title' is invalid", param="files")
        if ref in self._seen:
            raise InvalidRequest(f"{where}: the id '{ref}' appears twice", param="files")
        self._seen.add(ref)
        self.count += 1
        if self._keep:
            body = f"Q: {question.strip()}\nA: {answer.strip()}"
            self.passages.append(Passage(ref=ref, title=title.strip()[:500], text=body))

    def finish(self) -> list[Passage]:
        return self.passages


def parse_faq_jsonl(text: str, *, filename: str = "") -> list[Passage]:
    """One passage per line ``{"question", "answer", "id"?, "title"?}``.

    Lines end at ``\n`` only, as every JSONL reader here splits them: JSON strings may hold
    U+2028 and other characters ``str.splitlines`` would break a line at."""
    reader = FaqLines(filename=filename)
    for number, line in enumerate(text.split("\n"), start=1):
        reader(number, line)
    return reader.finish()


def knowledge_format(filename: str) -> str:
    """``faq`` (``.jsonl``, ``.json``, ``.ndjson``) or ``markdown`` (``.md``, ``.markdown``,
    ``.txt``, ``.mdx``), by the file's name; anything else is refused."""
    lower = filename.lower()
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return "faq"
    if lower.endswith((".md", ".markdown", ".txt", ".mdx")):
        return "markdown"
    raise InvalidRequest(
        f"{filename}: knowledge files are Markdown (.md) or a JSONL FAQ (.jsonl)", param="files"
    )


def _no_passages(filename: str) -> InvalidRequest:
    return InvalidRequest(f"{filename} holds no passages", param="files")


def parse_knowledge(filename: str, data: bytes) -> list[Passage]:
    """Markdown (``.md``, ``.markdown``, ``.txt``) or a JSONL FAQ (``.jsonl``, ``.json``)."""
    kind = knowledge_format(filename)
    try:  # split as the upload check split it: same line numbers, BOM and CRLF handling
        text = "\n".join(split_lines([data]))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{filename} {exc.message}", param="files") from exc
    if kind == "faq":
        passages = parse_faq_jsonl(text, filename=filename)
    else:
        passages = parse_markdown(text, default_title=filename.rsplit(".", 1)[0])
    if not passages:
        raise _no_passages(filename)
    return passages


class KnowledgeCheck:
    """A knowledge file checked one line at a time without keeping it (what the upload runs):
    every FAQ line as :class:`FaqLines` reads it; for Markdown, that some line outside a
    heading has text, exactly when :func:`parse_markdown` finds a passage. Errors name the
    line (``line 3: ...``) as the upload route's errors do."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.format = knowledge_format(filename)
        self._faq = FaqLines(keep=False) if self.format == "faq" else None
        self._is_heading = _Headings()
        self._has_text = False

    def __call__(self, number: int, text: str) -> None:
        if self._faq is not None:
            self._faq(number, text)
            return
        for line in text.splitlines():  # as parse_markdown splits the whole text
            if self._is_heading(line) is None and line.strip():
                self._has_text = True

    def finish(self) -> int:
        """FAQ entries (0 for Markdown, whose passages depend on the whole document)."""
        entries = self._faq.count if self._faq is not None else 0
        if not (entries or self._has_text):
            raise _no_passages(self.filename)
        return entries
