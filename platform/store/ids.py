"""Prefixed, time-ordered IDs (``ten-01jd…``): sortable, so pagination cursors are just IDs."""

from __future__ import annotations

import secrets
import time

__all__ = ["new_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """``prefix-`` + 10 chars of millisecond time + 16 random chars (ULID layout, 26 chars)."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}-{_encode(millis, 10)}{_encode(secrets.randbits(80), 16)}"
