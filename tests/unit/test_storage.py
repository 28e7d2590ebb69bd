"""Storage over file:// and fsspec memory:// roots: atomic writes that leave nothing on failure."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsspec.core import url_to_fs

from moeplane.errors import PayloadTooLarge
from moeplane.storage import Storage, WriteResult


@pytest.fixture(params=["file", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "file":
        yield Storage((tmp_path / "root").as_uri())
    else:
        # The memory filesystem is process-global: a fresh prefix per test keeps tests apart.
        root = f"memory://moeplane-test-{uuid.uuid4().hex}"
        yield Storage(root)
        fs, path = url_to_fs(root)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def all_objects(storage: Storage) -> list[str]:
    """Every object under the root, relative to it (temp files included)."""
    fs, root = url_to_fs(storage.root_uri)
    if not fs.exists(root):
        return []
    return sorted(path[len(root.rstrip("/")) + 1 :] for path in fs.find(root))


def test_write_stream_commits_with_size_and_sha256(storage: Storage) -> None:
    chunks = [b"hello ", b"", b"world\n"] * 3
    result = storage.write_stream("tenants/ten-a/files/file-1.jsonl", iter(chunks))
    data = b"".join(chunks)
    assert result == WriteResult(
        uri=storage.root_uri + "/tenants/ten-a/files/file-1.jsonl",
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    assert storage.read_bytes("tenants/ten-a/files/file-1.jsonl") == data
    with storage.open_read("tenants/ten-a/files/file-1.jsonl") as handle:
        assert handle.read(5) == b"hello"
    assert storage.exists("tenants/ten-a/files/file-1.jsonl")
    assert storage.exists("tenants/ten-a")  # a folder with objects under it
    assert all_objects(storage) == ["tenants/ten-a/files/file-1.jsonl"]


def test_write_stream_replaces_an_existing_object(storage: Storage) -> None:
    storage.write_stream("a/b", [b"old"])
    storage.write_stream("a/b", [b"new"])
    assert storage.read_bytes("a/b") == b"new"
    assert all_objects(storage) == ["a/b"]


def test_exactly_max_bytes_is_accepted(storage: Storage) -> None:
    assert storage.write_stream("a/b", [b"12", b"345"], max_bytes=5).bytes == 5


def test_payload_too_large_stops_early_and_leaves_nothing(storage: Storage) -> None:
    consumed: list[int] = []

    def chunks() -> Iterator[bytes]:
        for index in range(100):
            consumed.append(index)
            yield b"x" * 1000

    with pytest.raises(PayloadTooLarge) as caught:
        storage.write_stream("tenants/ten-a/files/big", chunks(), max_bytes=2500)
    assert caught.value.param == "file"
    assert "2500 bytes" in caught.value.message
    assert "MB" in caught.value.message
    assert len(consumed) == 3  # stopped at the first chunk over the limit
    assert not storage.exists("tenants/ten-a/files/big")
    assert [p for p in all_objects(storage) if "part" in p or "big" in p] == []
    assert all_objects(storage) == []


def test_payload_too_large_keeps_the_previous_version(storage: Storage) -> None:
    storage.write_stream("a/b", [b"v1"])
    with pytest.raises(PayloadTooLarge):
        storage.write_stream("a/b", [b"way too long"], max_bytes=4)
    assert storage.read_bytes("a/b") == b"v1"
    assert all_objects(storage) == ["a/b"]


def test_a_producer_raising_mid_stream_leaves_nothing(storage: Storage) -> None:
    class Disconnected(Exception):
        pass

    def chunks() -> Iterator[bytes]:
        yield b"first part\n"
        yield b"second part\n"
        raise Disconnected("client went away")

    with pytest.raises(Disconnected):
        storage.write_stream("tenants/ten-a/files/f", chunks())
    assert not storage.exists("tenants/ten-a/files/f")
    assert all_objects(storage) == []


def test_a_validator_failing_at_the_end_of_the_stream_leaves_nothing(storage: Storage) -> None:
    """The pattern the upload route uses: finish() after the last yield, inside the stream."""

    def chunks() -> Iterator[bytes]:
        yield b"all bytes sent"
        raise ValueError("the last line is invalid")

    with pytest.raises(ValueError, match="last line"):
        storage.write_stream("k", chunks())
    assert all_objects(storage) == []


def test_write_stream_rejects_a_negative_limit(storage: Storage) -> None:
    with pytest.raises(ValueError):
        storage.write_stream("k", [b"x"], max_bytes=-1)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a/./b",
        "a//b",
        "a/b/",
        "a\\b",
        "C:/windows",
        "a/\x00b",
    ],
)
def test_unsafe_keys_are_rejected_everywhere(storage: Storage, key: str) -> None:
    for call in (
        lambda: storage.uri(key),
        lambda: storage.write_stream(key, [b"x"]),
        lambda: storage.read_bytes(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
        lambda: storage.local_path(key),
    ):
        with pytest.raises(ValueError):
            call()
    assert all_objects(storage) == []


def test_read_of_a_missing_key_is_file_not_found(storage: Storage) -> None:
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("nope")
    assert not storage.exists("nope")


def test_delete_is_idempotent(storage: Storage) -> None:
    storage.write_stream("a/b", [b"x"])
    storage.delete("a/b")
    storage.delete("a/b")
    storage.delete("never/existed")
    assert not storage.exists("a/b")


def test_delete_refuses_a_folder(storage: Storage) -> None:
    storage.write_stream("a/b/c", [b"x"])
    with pytest.raises(IsADirectoryError):
        storage.delete("a/b")
    assert storage.exists("a/b/c")


def test_delete_prefix_removes_a_folder_and_only_that_folder(storage: Storage) -> None:
    for key in ("tenants/ten-a/files/1", "tenants/ten-a/models/m/w", "tenants/ten-ab/files/2"):
        storage.write_stream(key, [b"x"])
    assert storage.delete_prefix("tenants/ten-a") == 2
    assert storage.delete_prefix("tenants/ten-a") == 0
    assert storage.delete_prefix("tenants/ten-a/") == 0
    assert all_objects(storage) == ["tenants/ten-ab/files/2"]
    with pytest.raises(ValueError):
        storage.delete_prefix("../x")


def test_put_dir_get_dir_round_trip(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "checkpoint"
    (source / "sub" / "deeper").mkdir(parents=True)
    (source / "config.json").write_text('{"a": 1}')
    (source / "sub" / "model.safetensors").write_bytes(os.urandom(3000))
    (source / "sub" / "deeper" / "empty").write_bytes(b"")

    uri = storage.put_dir(source, "tenants/ten-a/models/ftjob-1")
    assert uri == storage.uri("tenants/ten-a/models/ftjob-1")
    assert all_objects(storage) == [
        "tenants/ten-a/models/ftjob-1/config.json",
        "tenants/ten-a/models/ftjob-1/sub/deeper/empty",
        "tenants/ten-a/models/ftjob-1/sub/model.safetensors",
    ]

    target = storage.get_dir("tenants/ten-a/models/ftjob-1", tmp_path / "download")
    got = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert got == ["config.json", "sub/deeper/empty", "sub/model.safetensors"]
    for name in got:
        assert (target / name).read_bytes() == (source / name).read_bytes()


def test_put_dir_replaces_the_previous_tree(storage: Storage, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "stale.bin").write_bytes(b"old")
    (second / "fresh.bin").write_bytes(b"new")
    storage.put_dir(first, "ckpt")
    storage.put_dir(second, "ckpt")
    assert all_objects(storage) == ["ckpt/fresh.bin"]


def test_get_dir_of_nothing_is_file_not_found(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        storage.get_dir("missing", tmp_path / "out")
    storage.write_stream("plain", [b"x"])
    with pytest.raises(FileNotFoundError):
        storage.get_dir("plain", tmp_path / "out")  # an object is not a folder


def test_local_path_only_for_file_roots(tmp_path: Path) -> None:
    local = Storage((tmp_path / "root").as_uri())
    local.write_stream("a/b", [b"x"])
    assert local.local_path("a/b") == tmp_path / "root" / "a" / "b"
    assert local.local_path("a/b").read_bytes() == b"x"
    assert Storage(f"memory://{uuid.uuid4().hex}").local_path("a/b") is None


def test_a_bare_local_path_root_hands_out_file_uris(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "root"))
    assert storage.uri("a/b") == f"file://{tmp_path}/root/a/b"
    assert storage.write_stream("a/b", [b"x"]).uri == storage.uri("a/b")
