"""LocalFileStore on its own: restarts, expiry, quota eviction, dedup, crash leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from openai_frontend.files.store import LocalFileStore, QuotaExceeded, Stager


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def put(store: LocalFileStore, data: bytes, *, expires_at: int | None = None, purpose: str = "vision",
        scope: str = ""):
    stager = Stager(store.staging_dir(), cap=1 << 30)
    stager.write(data)
    return store.add(stager.finish(), filename="a.mp4", purpose=purpose, mime="video/mp4", expires_at=expires_at,
                     scope=scope)


def blobs(root: Path) -> list[Path]:
    return [p for p in (root / "blobs").rglob("*") if p.is_file()]


def test_store_sees_its_files_when_reopened_on_the_same_directory(tmp_path) -> None:
    first = LocalFileStore(tmp_path, quota_bytes=1 << 20)
    record = put(first, b"abc")
    first.close()
    again = LocalFileStore(tmp_path, quota_bytes=1 << 20)
    assert again.get(record.id) == record
    assert again.blob_path(record).read_bytes() == b"abc"


def test_store_keeps_identical_bytes_once_when_uploaded_twice(tmp_path) -> None:
    store = LocalFileStore(tmp_path, quota_bytes=1 << 20)
    a, b = put(store, b"same"), put(store, b"same")
    assert a.id != b.id and a.sha256 == b.sha256
    assert len(blobs(tmp_path)) == 1 and store.stored_bytes() == 4
    assert store.delete(a.id) and len(blobs(tmp_path)) == 1
    assert store.delete(b.id) and blobs(tmp_path) == []


def test_store_hides_then_sweeps_a_file_when_it_expires(tmp_path) -> None:
    clock = Clock()
    store = LocalFileStore(tmp_path, quota_bytes=1 << 20, clock=clock)
    record = put(store, b"soon", expires_at=int(clock.now) + 10)
    kept = put(store, b"kept")
    assert store.get(record.id) is not None
    clock.now += 10
    assert store.get(record.id) is None
    assert [r.id for r in store.list()[0]] == [kept.id]
    assert store.sweep() == 1
    assert len(blobs(tmp_path)) == 1 and store.get(kept.id) is not None


def test_store_evicts_least_recently_used_when_the_quota_is_passed(tmp_path) -> None:
    clock = Clock()
    store = LocalFileStore(tmp_path, quota_bytes=25, clock=clock)
    old = put(store, b"a" * 10)
    clock.now += 1
    middle = put(store, b"b" * 10)
    clock.now += 1
    store.get(old.id, touch=True)  # used: now the most recent
    clock.now += 1
    new = put(store, b"c" * 10)
    assert store.get(middle.id) is None
    assert store.get(old.id) is not None and store.get(new.id) is not None
    assert store.stored_bytes() == 20 and len(blobs(tmp_path)) == 2


def test_store_refuses_a_file_larger_than_the_whole_quota(tmp_path) -> None:
    store = LocalFileStore(tmp_path, quota_bytes=5)
    with pytest.raises(QuotaExceeded):
        put(store, b"x" * 6)
    assert blobs(tmp_path) == [] and list(store.staging_dir().iterdir()) == []


def test_store_removes_crash_leftovers_when_opened(tmp_path) -> None:
    store = LocalFileStore(tmp_path, quota_bytes=1 << 20)
    record = put(store, b"keep")
    store.close()
    (tmp_path / "tmp" / "upload-dead.part").write_bytes(b"half")
    orphan = tmp_path / "blobs" / "ff" / ("f" * 62)
    orphan.parent.mkdir()
    orphan.write_bytes(b"no row")
    again = LocalFileStore(tmp_path, quota_bytes=1 << 20)
    assert list(again.staging_dir().iterdir()) == [] and not orphan.exists()
    assert again.get(record.id) is not None


def test_store_scopes_ids_when_a_scope_is_given(tmp_path) -> None:
    store = LocalFileStore(tmp_path, quota_bytes=1 << 20)
    record = put(store, b"mine", scope="a")
    assert store.get(record.id, "a") is not None
    assert store.get(record.id, "b") is None and store.get(record.id) is None
    assert not store.delete(record.id, "b") and store.list(scope="b")[0] == []


def test_stager_refuses_bytes_past_its_cap(tmp_path) -> None:
    stager = Stager(tmp_path, cap=4)
    assert stager.write(b"abcd") and not stager.write(b"e")
    stager.abort()
    assert list(tmp_path.iterdir()) == []
