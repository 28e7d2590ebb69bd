"""Artifact storage over one root URI, through fsspec.

``file://`` (the embedded default) takes a fast path on the local filesystem (plain ``open`` and an
atomic ``os.replace``); any other fsspec URI (``s3://bucket/prefix``, ``gs://…``, ``memory://`` in
tests) goes through the generic filesystem API, so no backend is special-cased beyond that.

The rule every write follows: readers see either the old object or the complete new one, never a
prefix of it, and a failed write (too large, the producer raising, the client disconnecting) leaves
nothing behind. Bytes go to a sibling ``<key>.part-<random>`` first and are moved into place only
when the stream ended cleanly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from moeplane.errors import PayloadTooLarge
from moeplane.storage._keys import check_key

__all__ = ["Storage", "WriteResult"]

_COPY_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class WriteResult:
    """What a completed write produced: where it is, how big, and its SHA-256 (for lineage)."""

    uri: str
    bytes: int
    sha256: str


def _too_large(max_bytes: int) -> PayloadTooLarge:
    megabytes = max_bytes / 1_000_000
    shown = f"{megabytes:.1f}" if megabytes >= 0.1 else f"{megabytes:.3g}"
    return PayloadTooLarge(
        f"The file is larger than the limit of {max_bytes} bytes ({shown} MB)", param="file"
    )


def _temp_name(path: str) -> str:
    # Random, so two concurrent writers of one key never share (or delete) each other's temp.
    return f"{path}.part-{secrets.token_hex(8)}"


class Storage:
    """Datasets and checkpoints under ``root_uri``; every method takes a key relative to it.

    Thread-safe as far as the underlying fsspec filesystem is (local and s3fs are): the API calls
    it from sync routes running in a thread pool.
    """

    def __init__(self, root_uri: str):
        if not root_uri:
            raise ValueError("storage root URI must not be empty")
        self.fs, root = url_to_fs(root_uri)
        self._root = root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)
        # A bare path is accepted like fsspec does, but URIs we hand out are always file://, so a
        # stored artifact_uri means the same thing to every process that reads it.
        if self._local and "://" not in root_uri:
            root_uri = f"file://{self._root}"
        self.root_uri = root_uri.rstrip("/")

    def __repr__(self) -> str:
        return f"Storage({self.root_uri!r})"

    # -- naming ---------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self._root}/{check_key(key)}"

    def uri(self, key: str) -> str:
        """The full URI of ``key`` (what model versions record as ``artifact_uri``)."""
        return f"{self.root_uri}/{check_key(key)}"

    def local_path(self, key: str) -> Path | None:
        """The local path of ``key`` for ``file://`` roots (callers can skip a copy); else None."""
        path = self._path(key)  # checks the key on every root, so misuse shows up in tests
        return Path(path) if self._local else None

    # -- objects --------------------------------------------------------------------------------

    def write_stream(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> WriteResult:
        """Stream ``chunks`` into ``key``, committing atomically only if the stream ends cleanly.

        Raises :class:`~moeplane.errors.PayloadTooLarge` as soon as the running size passes
        ``max_bytes`` (the oversize chunk is never written). Whatever ``chunks`` raises
        propagates unchanged — a validator fed from the same generator can therefore reject the
        upload mid-stream, or at its end (call ``finish()`` in the generator after the last
        ``yield``) — and in every failure case the temporary object is removed.
        """
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        final = self._path(key)
        temp = _temp_name(final)
        digest, size = hashlib.sha256(), 0
        try:
            with self._open_new(temp) as out:
                for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise _too_large(max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
                if self._local:
                    # The rename must not become visible before the bytes are on disk.
                    out.flush()
                    os.fsync(out.fileno())
            self._commit(temp, final)
        except BaseException:
            self._discard(temp)
            raise
        return WriteResult(uri=self.uri(key), bytes=size, sha256=digest.hexdigest())

    def _open_new(self, path: str) -> IO[bytes]:
        if self._local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return open(path, "xb")  # closed by the caller's ``with``
        return self.fs.open(path, "wb")

    def _commit(self, temp: str, final: str) -> None:
        if self._local:
            os.replace(temp, final)
        else:
            self.fs.mv(temp, final)

    def _discard(self, temp: str) -> None:
        """Best-effort removal of a temp object; never masks the error that got us here."""
        with contextlib.suppress(Exception):
            if self._local:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temp)
            elif self.fs.exists(temp):
                self.fs.rm(temp)

    def open_read(self, key: str) -> IO[bytes]:
        """A binary file object for ``key``; ``FileNotFoundError`` if it does not exist.

        A missing artifact whose row exists is a server fault, not a client's 404, so this raises
        the builtin error rather than :class:`~moeplane.errors.NotFound`.
        """
        path = self._path(key)
        if self._local:
            return open(path, "rb")  # the caller owns the handle
        return self.fs.open(path, "rb")

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as handle:
            return handle.read()

    def exists(self, key: str) -> bool:
        """True if ``key`` is an object or a folder with objects under it."""
        return bool(self.fs.exists(self._path(key)))

    def delete(self, key: str) -> None:
        """Remove the object at ``key``; a no-op if it is already gone (retries are safe).

        A folder is refused (``IsADirectoryError``) so a wrong key cannot drop a whole tree by
        accident; use :meth:`delete_prefix` for that.
        """
        path = self._path(key)
        if self._local:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            return
        if not self.fs.exists(path):
            return
        if self.fs.isdir(path):
            raise IsADirectoryError(f"{self.uri(key)} is a folder; use delete_prefix")
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path)

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder ``prefix`` (idempotent); return how many went.

        ``prefix`` is a folder, not a string prefix: ``tenants/ten-a`` never touches
        ``tenants/ten-ab``.
        """
        path = self._path(prefix.rstrip("/"))
        if not self.fs.exists(path) or not self.fs.isdir(path):
            return 0
        removed = len(self.fs.find(path))
        if self._local:
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path, recursive=True)
        return removed

    # -- folders (checkpoints) ------------------------------------------------------------------

    def put_dir(self, local_dir: Path | str, key_prefix: str) -> str:
        """Copy the tree at ``local_dir`` to ``key_prefix`` (replacing it); return its URI.

        The tree is staged under a sibling ``<prefix>.part-<random>`` and moved into place at the
        end, so a failed upload leaves nothing and readers never see half a checkpoint. (On
        object stores the final move is a copy plus delete; callers record the URI — the commit
        point — only after this returns.)
        """
        source = Path(local_dir)
        if not source.is_dir():
            raise NotADirectoryError(f"{source} is not a directory")
        target = self._path(key_prefix.rstrip("/"))
        staging = _temp_name(target)
        try:
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    self._upload_file(path, f"{staging}/{path.relative_to(source).as_posix()}")
            if not self.fs.exists(staging):  # an empty tree still becomes a folder
                self.fs.makedirs(staging, exist_ok=True)
            if self.fs.exists(target):
                self._remove_tree(target)
            if self._local:
                os.replace(staging, target)
            else:
                self.fs.mv(staging, target, recursive=True)
        except BaseException:
            with contextlib.suppress(Exception):
                self._remove_tree(staging)
            raise
        return self.uri(key_prefix.rstrip("/"))

    def _upload_file(self, local: Path, remote: str) -> None:
        if self._local:
            os.makedirs(os.path.dirname(remote), exist_ok=True)
            shutil.copyfile(local, remote)
        else:
            self.fs.put_file(str(local), remote)

    def _remove_tree(self, path: str) -> None:
        if self._local:
            shutil.rmtree(path, ignore_errors=True)
        elif self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def get_dir(self, key_prefix: str, local_dir: Path | str) -> Path:
        """Copy the tree under ``key_prefix`` into ``local_dir`` (created if needed); return it.

        ``FileNotFoundError`` if there is nothing under the prefix: an empty result would
        otherwise look like a checkpoint with no files.
        """
        prefix = key_prefix.rstrip("/")
        base = self._path(prefix)
        found = []
        if self.fs.exists(base):
            # find() of a plain object returns the object itself; only a folder's contents count.
            found = [path for path in self.fs.find(base) if path.startswith(base + "/")]
        if not found:
            raise FileNotFoundError(f"no objects under {self.uri(prefix)}")
        destination = Path(local_dir)
        destination.mkdir(parents=True, exist_ok=True)
        for remote in found:
            relative = remote[len(base) + 1 :]
            check_key(relative)  # a listing must not write outside local_dir
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote, str(target))
        return destination
