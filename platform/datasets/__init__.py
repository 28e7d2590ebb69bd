"""Validation of uploaded files by purpose, line by line while they stream (`lines` splits them;
`chat` checks fine-tuning JSONL; `purposes` picks each purpose's check)."""

from __future__ import annotations

from moeplane.datasets.chat import (
    ChatJsonlValidator,
    DatasetStats,
    validate_chat_jsonl,
)
from moeplane.datasets.lines import MAX_LINE_BYTES, LineSplitter, line_error, split_lines
from moeplane.datasets.purposes import (
    SUPPORTED_PURPOSES,
    FileStats,
    StreamingValidator,
    validator_for,
)

__all__ = [
    "MAX_LINE_BYTES",
    "SUPPORTED_PURPOSES",
    "ChatJsonlValidator",
    "DatasetStats",
    "FileStats",
    "LineSplitter",
    "StreamingValidator",
    "line_error",
    "split_lines",
    "validate_chat_jsonl",
    "validator_for",
]
