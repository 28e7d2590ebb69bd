"""Storage keys: relative, slash-separated names that can never escape the storage root.

Keys come from ids we mint (``tenants/ten-x/files/file-y``), but a key that reached the
filesystem with ``..`` or a leading ``/`` would read or delete another tenant's artifacts, so every
public :class:`~moeplane.storage.Storage` method checks its key here first.
"""

from __future__ import annotations

import re

__all__ = ["check_key"]

# "C:/x" or "C:" is absolute on Windows; refuse it everywhere so a key means the same on every host.
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key; else raise ``ValueError`` saying why."""
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    if "\\" in key:
        raise ValueError(f"storage key {key!r} must use '/' (no backslashes)")
    if key.startswith("/") or _DRIVE.match(key):
        raise ValueError(f"storage key {key!r} must be relative to the storage root")
    if any(ord(char) < 0x20 or char == "\x7f" for char in key):
        raise ValueError(f"storage key {key!r} must not contain control characters")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"storage key {key!r} has an empty, '.' or '..' part")
    return key
