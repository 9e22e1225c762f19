"""The file store on its own, on each store (:data:`tests.stores.STORES`): restarts, expiry, quota eviction,
dedup, crash leftovers, and what a starting replica leaves alone."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openai_frontend.files.store import (
    STALE_S,
    LocalFileStore,
    QuotaExceeded,
    SqlFileStore,
    Stager,
    open_file_store,
)
from openai_frontend.settings import Settings
from tests.stores import STORES, store_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


Opener = Callable[..., SqlFileStore]


@pytest.fixture(params=STORES)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the store of this test's kind (the same one each time: a reopened or second replica's store)."""
    settings = store_settings(request.param, Settings(files_dir=str(tmp_path)), request)
    opened: list[SqlFileStore] = []

    def opener(quota_bytes: int = 1 << 20, clock: Callable[[], float] | None = None) -> SqlFileStore:
        store = open_file_store(settings.with_(files_quota_bytes=quota_bytes), clock=clock or Clock())
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


def put(store: SqlFileStore, data: bytes, *, ttl_s: int | None = None, purpose: str = "vision",
        scope: str = ""):
    stager = Stager(store.staging_dir(), cap=1 << 30)
    stager.write(data)
    return store.add(stager.finish(), filename="a.mp4", purpose=purpose, mime="video/mp4", ttl_s=ttl_s,
                     scope=scope)


def blobs(store: SqlFileStore) -> list[str]:
    return sorted(sha for sha, _ in store.blobs.listing())


def test_store_sees_its_files_when_reopened_on_the_same_directory(open_store: Opener) -> None:
    first = open_store()
    record = put(first, b"abc")
    first.close()
    again = open_store()
    assert again.get(record.id) == record
    assert again.blob_path(record).read_bytes() == b"abc"


def test_store_keeps_identical_bytes_once_when_uploaded_twice(open_store: Opener) -> None:
    store = open_store()
    a, b = put(store, b"same"), put(store, b"same")
    assert a.id != b.id and a.sha256 == b.sha256
    assert blobs(store) == [a.sha256] and store.stored_bytes() == 4
    assert store.delete(a.id) and blobs(store) == [a.sha256]
    assert store.delete(b.id) and blobs(store) == []


def test_store_hides_then_sweeps_a_file_when_it_expires(open_store: Opener) -> None:
    clock = Clock()
    store = open_store(clock=clock)
    record = put(store, b"soon", ttl_s=10)
    kept = put(store, b"kept")
    assert store.get(record.id) is not None
    clock.now += 10
    assert store.get(record.id) is None
    assert [r.id for r in store.list()[0]] == [kept.id]
    assert store.sweep() == 1
    assert blobs(store) == [kept.sha256] and store.get(kept.id) is not None


def test_store_evicts_least_recently_used_when_the_quota_is_passed(open_store: Opener) -> None:
    clock = Clock()
    store = open_store(quota_bytes=25, clock=clock)
    old = put(store, b"a" * 10)
    clock.now += 1
    middle = put(store, b"b" * 10)
    clock.now += 1
    store.get(old.id, touch=True)  # used: now the most recent
    clock.now += 1
    new = put(store, b"c" * 10)
    assert store.get(middle.id) is None
    assert store.get(old.id) is not None and store.get(new.id) is not None
    assert store.stored_bytes() == 20 and len(blobs(store)) == 2


def test_store_refuses_a_file_larger_than_the_whole_quota(open_store: Opener) -> None:
    store = open_store(quota_bytes=5)
    with pytest.raises(QuotaExceeded):
        put(store, b"x" * 6)
    assert blobs(store) == [] and list(store.staging_dir().iterdir()) == []


def test_store_scopes_ids_when_a_scope_is_given(open_store: Opener) -> None:
    store = open_store()
    record = put(store, b"mine", scope="a")
    assert store.get(record.id, "a") is not None
    assert store.get(record.id, "b") is None and store.get(record.id) is None
    assert not store.delete(record.id, "b") and store.list(scope="b")[0] == []


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


@pytest.mark.parametrize("kind", ["postgres", "postgres+s3"])
def test_starting_replica_keeps_uploads_in_flight_and_removes_stale_ones_when_the_database_is_shared(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    settings = store_settings(kind, Settings(files_dir=str(tmp_path)), request)
    clock = Clock()
    clock.now = os.stat(tmp_path).st_mtime
    first = open_file_store(settings, clock=clock)
    live = first.staging_dir() / "upload-live.part"  # another replica is streaming into it
    live.write_bytes(b"half")
    stale = first.staging_dir() / "upload-dead.part"
    stale.write_bytes(b"half")
    os.utime(stale, (clock.now - 2 * STALE_S, clock.now - 2 * STALE_S))
    second = open_file_store(settings, clock=clock)
    assert live.exists() and not stale.exists()
    record = put(first, b"kept")
    assert second.get(record.id) == record and second.blob_path(record).read_bytes() == b"kept"
    first.close()
    second.close()


def test_stager_refuses_bytes_past_its_cap(tmp_path) -> None:
    stager = Stager(tmp_path, cap=4)
    assert stager.write(b"abcd") and not stager.write(b"e")
    stager.abort()
    assert list(tmp_path.iterdir()) == []
