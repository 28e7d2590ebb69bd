"""Knowledge bases as passages: Markdown split by heading, JSONL FAQs one entry a passage.

Pure: bytes in, `Passage` drafts out. Errors name the file and line, so a tenant can fix the
upload.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from moeplane.errors import InvalidRequest

__all__ = ["Passage", "parse_faq_jsonl", "parse_knowledge", "parse_markdown"]

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


def _outside_code(lines: list[str]) -> list[str]:
    """The lines with fenced code blocks blanked (a ``# comment`` in code is no heading)."""
    out, in_code = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            in_code = not in_code
            out.append("")
        else:
            out.append("" if in_code else line)
    return out


def _heading(line: str) -> tuple[int, str] | None:
    match = _HEADING.match(line)
    return (len(match.group(1)), match.group(2).strip()) if match else None


def parse_markdown(text: str, *, default_title: str = "") -> list[Passage]:
    """One passage per heading section; the title is the heading path ("Returns > Refunds").
    A document's single top-level heading is its title, not part of every path."""
    lines_in = text.splitlines()
    headings = [_heading(line) for line in _outside_code(lines_in)]
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


def parse_faq_jsonl(text: str, *, filename: str = "") -> list[Passage]:
    """One passage per line ``{"question", "answer", "id"?, "title"?}``."""
    passages, seen = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{filename} line {number}".strip()
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{where}: not valid JSON ({exc.msg})", param="files") from exc
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
        if ref in seen:
            raise InvalidRequest(f"{where}: the id '{ref}' appears twice", param="files")
        seen.add(ref)
        body = f"Q: {question.strip()}\nA: {answer.strip()}"
        passages.append(Passage(ref=ref, title=title.strip()[:500], text=body))
    return passages


def parse_knowledge(filename: str, data: bytes) -> list[Passage]:
    """Markdown (``.md``, ``.markdown``, ``.txt``) or a JSONL FAQ (``.jsonl``, ``.json``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{filename} is not UTF-8 text", param="files") from exc
    lower = filename.lower()
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        passages = parse_faq_jsonl(text, filename=filename)
    elif lower.endswith((".md", ".markdown", ".txt", ".mdx")):
        stem = filename.rsplit(".", 1)[0]
        passages = parse_markdown(text, default_title=stem)
    else:
        raise InvalidRequest(
            f"{filename}: knowledge files are Markdown (.md) or a JSONL FAQ (.jsonl)",
            param="files",
        )
    if not passages:
        raise InvalidRequest(f"{filename} holds no passages", param="files")
    return passages
