"""Validation of uploaded files by purpose; fine-tuning chat JSONL is validated while it streams."""

from __future__ import annotations

from moeplane.datasets.chat import (
    MAX_LINE_BYTES,
    ChatJsonlValidator,
    DatasetStats,
    validate_chat_jsonl,
)
from moeplane.datasets.purposes import SUPPORTED_PURPOSES, StreamingValidator, validator_for

__all__ = [
    "MAX_LINE_BYTES",
    "SUPPORTED_PURPOSES",
    "ChatJsonlValidator",
    "DatasetStats",
    "StreamingValidator",
    "validate_chat_jsonl",
    "validator_for",
]
