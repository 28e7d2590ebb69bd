"""Artifact storage for datasets and checkpoints over one root URI.

``file://`` under MOEPLANE_HOME is the embedded default; production points ``storage_uri`` at any
fsspec URI (``s3://bucket/prefix``). Writes are atomic and a failed write leaves nothing behind.
"""

from __future__ import annotations

from moeplane.storage._keys import check_key
from moeplane.storage.artifacts import Storage, WriteResult

__all__ = ["Storage", "WriteResult", "check_key"]
