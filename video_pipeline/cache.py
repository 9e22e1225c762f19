"""A media cache shared by every process of one tritonserver: decode a video once, ask many times.

Entries are folders of ``.npy`` arrays plus a JSON document, under one root
directory (by default in ``/dev/shm``, so they live in memory and are
memory-mapped when read back, not copied). Every instance of the decoder (each
its own process) sees the same entries:

- **Keys** are hex digests; the caller derives them from everything that
  decides the output (see :func:`cache_key`: the content hash of the bytes and
  the complete, defaulted options), so different options never share an entry.
- **One decode per key.** A miss takes an exclusive ``flock`` on one of 256
  lock files (chosen by the key) before computing; a concurrent request for the
  same key waits on that lock, then finds the entry. Locks die with their
  process, so a crashed decoder never blocks the others.
- **Bounded by bytes, least recently used first.** A hit touches the entry's
  folder (its mtime is the LRU clock, shared by all processes); an insert that
  takes the total over ``max_bytes`` deletes the oldest entries under a global
  lock. Entries are written to a temporary folder and renamed into place, and
  removed by renaming them away first, so a reader sees a whole entry or none;
  a reader that has mapped an entry keeps its pages even if it is evicted.
- **Never a reason to fail a request.** Any filesystem error (a full
  ``/dev/shm``, an entry deleted under our feet, a damaged file) is logged and
  the request is served by computing, as without a cache.

Nothing here knows Triton: counters are reported to an optional observer
(:class:`CacheObserver`), which the Triton adapter maps onto custom metrics.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

# Bump when the entry layout changes; part of every key, so old entries are simply never hit.
FORMAT_VERSION = "1"
_META = "meta.json"
_STRIPES = 256
# Prefix of the per-server folders under /dev/shm (see default_root).
SERVER_DIR_PREFIX = "vlt-media-cache-"


class CacheObserver(Protocol):
    """Where the cache reports its counters (Triton custom metrics, a test's list...)."""

    def hit(self) -> None: ...
    def miss(self) -> None: ...
    def evicted(self, entries: int) -> None: ...
    def size(self, nbytes: int, entries: int) -> None: ...


@dataclass
class CacheStats:
    """This process's counters, and the shared folder's size at the last look."""

    hits: int = 0
    misses: int = 0
    waits: int = 0  # hits that waited for another request's decode of the same key
    evictions: int = 0
    store_errors: int = 0
    bytes: int = 0
    entries: int = 0


@dataclass
class Entry:
    """What one cache entry holds: named arrays (memory-mapped on a hit) and a JSON document."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())


def content_hash(data: bytes | bytearray | memoryview) -> str:
    """sha256 of the bytes: always computed here, never taken from a client (a client's claim
    for other bytes would otherwise poison the entry everyone else reads)."""
    return hashlib.sha256(data).hexdigest()


def cache_key(*parts: Any) -> str:
    """A key from JSON-able parts: canonical JSON (sorted keys, no spaces), then sha256."""
    doc = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def default_root() -> Path:
    """A folder private to this tritonserver: ``/dev/shm/vlt-media-cache-<server pid>``.

    The stubs of every Python-backend instance are children of the server process, so their
    parent's pid names the server; two servers on one machine never share (or evict) entries.
    Without /dev/shm the system's temporary folder is used.
    """
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())
    return base / f"{SERVER_DIR_PREFIX}{os.getppid()}"


class MediaCache:
    """A byte-bounded, least-recently-used cache of :class:`Entry` shared between processes.

    ``max_bytes`` bounds the sum of the entries' file sizes. ``owned``: the folder belongs to
    this server alone (the default per-server folder): the last process to close it removes
    it, and folders of servers that are gone are removed when the first process opens it.
    The folder is created on first use, so building a cache costs nothing.
    """

    def __init__(self, root: Path | str, max_bytes: int, *, owned: bool = False,
                 observer: CacheObserver | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.owned = owned
        self.observer = observer
        self.stats = CacheStats()
        self._opened = False
        self._alive_fd: int | None = None
        self._open_lock = threading.Lock()
        self._stats_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    # --- the one public operation ---------------------------------------------------------

    def get_or_compute(self, key: str, compute: Callable[[], Entry]) -> tuple[Entry, str]:
        """The entry for ``key`` and ``"hit"``, or ``compute()``'s result (stored) and ``"miss"``.

        Concurrent calls for one key, in any process, compute once: the others wait for the
        first and read its entry. ``compute``'s exceptions propagate (nothing is stored).
        """
        if not self.enabled:
            return compute(), "off"
        try:
            self._open()
            entry = self._read(key)
            if entry is not None:
                self._count(hit=True)
                return entry, "hit"
            lock = self._lock(key).__enter__()
        except OSError as exc:
            logger.warning("media cache unavailable (%s); computing without it", exc)
            self._reset()  # the next request sets the folder up again (it may have been removed)
            return compute(), "off"
        try:
            try:
                entry = self._read(key)
            except OSError:
                entry = None
            if entry is not None:
                self._count(hit=True, waited=lock.waited)
                return entry, "hit"
            self._count(hit=False)
            entry = compute()
            self._store(key, entry)
            return entry, "miss"
        finally:
            lock.__exit__()

    # --- uuid aliases -----------------------------------------------------------------------

    def alias(self, name: str, target: str) -> None:
        """Records ``name`` (a client's media uuid, tenant-namespaced by the caller) as naming
        ``target`` (a content hash): a later request naming it alone finds the entries of that
        content. Best effort, like every write here; a newer alias of the same name wins."""
        if not self.enabled:
            return
        try:
            self._open()
            path = self._alias_path(name)
            tmp = self.root / "tmp" / f"alias.{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            tmp.write_text(target)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("media cache: could not record a uuid alias (%s)", exc)

    def resolve(self, name: str) -> str | None:
        """The target ``name`` was recorded for, or None (never recorded, pruned, cache off)."""
        if not self.enabled:
            return None
        try:
            self._open()
            path = self._alias_path(name)
            target = path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return target or None

    def _alias_path(self, name: str) -> Path:
        return self.root / "aliases" / hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()

    def _prune_aliases(self, older_than_ns: int) -> None:
        """Aliases not used since ``older_than_ns`` (the oldest entry kept) go with the entries:
        whatever they named is as likely gone, and the folder stays bounded."""
        try:
            with os.scandir(self.root / "aliases") as it:
                for e in it:
                    with contextlib.suppress(OSError):
                        if e.stat(follow_symlinks=False).st_mtime_ns < older_than_ns:
                            os.unlink(e.path)
        except FileNotFoundError:
            return

    def close(self) -> None:
        """Releases this process's hold; the last holder of an owned folder removes it."""
        with self._open_lock:
            fd, self._alive_fd = self._alive_fd, None
            self._opened = False
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
            if self.owned and _try_exclusive(fd):
                shutil.rmtree(self.root, ignore_errors=True)
                logger.info("media cache: removed %s (last user)", self.root)
        finally:
            os.close(fd)

    def _reset(self) -> None:
        with self._open_lock:
            fd, self._alive_fd = self._alive_fd, None
            self._opened = False
        if fd is not None:
            os.close(fd)

    # --- layout -----------------------------------------------------------------------------

    def _open(self) -> None:
        if self._opened:
            return
        with self._open_lock:
            if self._opened:
                return
            if self.owned:
                _remove_orphans(self.root.parent, exclude=self.root)
            for sub in ("entries", "tmp", "locks", "aliases"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / "alive", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # "in use": see close() and _remove_orphans()
            self._alive_fd = fd
            self._opened = True
        self._report_size()

    def _path(self, key: str) -> Path:
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are lowercase hex digests, got {key!r}")
        return self.root / "entries" / key

    def _lock(self, key: str) -> _FileLock:
        return _FileLock(self.root / "locks" / f"{int(key[:4], 16) % _STRIPES:02x}")

    def _entries(self) -> list[Path]:
        try:
            return [Path(e.path) for e in os.scandir(self.root / "entries") if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []

    # --- read -------------------------------------------------------------------------------

    def _read(self, key: str) -> Entry | None:
        path = self._path(key)
        try:
            meta = json.loads((path / _META).read_text())
            arrays = {}
            for name, spec in meta["arrays"].items():
                arr = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                    raise ValueError(f"array {name} is {arr.dtype}{arr.shape}, expected {spec}")
                arrays[name] = arr
        except FileNotFoundError:
            return None  # not there, or evicted while we looked
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("media cache: dropping damaged entry %s (%s)", key, exc)
            with contextlib.suppress(OSError):
                self._remove(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently used is the oldest mtime
        return Entry(arrays=arrays, meta=meta["meta"])

    # --- write and evict ---------------------------------------------------------------------

    def _store(self, key: str, entry: Entry) -> None:
        size = entry.nbytes
        if size > self.max_bytes:
            logger.info("media cache: an entry of %d bytes exceeds the whole cache (%d); not stored",
                        size, self.max_bytes)
            return
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            specs = {}
            for name, arr in entry.arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
                specs[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
            (tmp / _META).write_text(json.dumps({"arrays": specs, "meta": entry.meta}, separators=(",", ":")))
            # Make room first, so the total stays under max_bytes while the entry appears.
            self._evict(room_for=_folder_bytes(tmp))
            try:
                os.rename(tmp, self._path(key))
            except OSError:
                # Another process stored it meanwhile (a key decides its content: same entry).
                shutil.rmtree(tmp, ignore_errors=True)
        except (OSError, ValueError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            with self._stats_lock:
                self.stats.store_errors += 1
            logger.warning("media cache: could not store an entry of %d bytes (%s)", size, exc)
        self._report_size()

    def _evict(self, room_for: int) -> None:
        """Deletes least recently used entries until ``room_for`` more bytes fit."""
        with _FileLock(self.root / "locks" / "evict"):
            entries = []
            for path in self._entries():
                try:
                    entries.append((path.stat().st_mtime_ns, _folder_bytes(path), path))
                except FileNotFoundError:
                    continue
            total = sum(size for _, size, _ in entries)
            removed = 0
            kept = sorted(entries, key=lambda e: e[0])
            for _mtime, size, path in list(kept):
                if total + room_for <= self.max_bytes:
                    break
                self._remove(path)
                kept.pop(0)
                total -= size
                removed += 1
            if removed:
                self._prune_aliases(kept[0][0] if kept else time.time_ns())
        if removed:
            with self._stats_lock:
                self.stats.evictions += removed
            self._observe("evicted", removed)

    def _remove(self, path: Path) -> None:
        trash = self.root / "tmp" / f"evicted.{path.name}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    # --- counters -----------------------------------------------------------------------------

    def _count(self, *, hit: bool, waited: bool = False) -> None:
        with self._stats_lock:
            if hit:
                self.stats.hits += 1
                self.stats.waits += int(waited)
            else:
                self.stats.misses += 1
        self._observe("hit" if hit else "miss")

    def _report_size(self) -> None:
        nbytes = entries = 0
        for path in self._entries():
            with contextlib.suppress(FileNotFoundError):
                nbytes += _folder_bytes(path)
                entries += 1
        with self._stats_lock:
            self.stats.bytes, self.stats.entries = nbytes, entries
        self._observe("size", nbytes, entries)

    def _observe(self, what: str, *args: int) -> None:
        """Reports to the observer; a failing observer (metrics) never fails a request."""
        if self.observer is None:
            return
        try:
            getattr(self.observer, what)(*args)
        except Exception:  # noqa: BLE001 - metrics are best effort
            logger.warning("media cache: observer %s failed", what, exc_info=True)


class _FileLock:
    """An exclusive ``flock`` on a file, held for a ``with`` block; ``waited`` tells whether
    another holder made us wait. Each use opens its own descriptor, so threads of one process
    exclude each other as processes do."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.waited = False
        self._fd: int | None = None

    def __enter__(self) -> _FileLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not _try_exclusive(fd):
                self.waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)  # releases the GIL while it waits
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases its lock


def _try_exclusive(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _folder_bytes(path: Path) -> int:
    return sum(e.stat().st_size for e in os.scandir(path) if e.is_file(follow_symlinks=False))


def _remove_orphans(parent: Path, exclude: Path) -> None:
    """Removes per-server folders nobody holds any more (their server exited or was killed)."""
    try:
        candidates = [Path(e.path) for e in os.scandir(parent)
                      if e.name.startswith(SERVER_DIR_PREFIX) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for path in candidates:
        if path == exclude:
            continue
        try:
            fd = os.open(path / "alive", os.O_RDWR)
        except OSError:
            continue  # being created right now, or not ours
        try:
            if _try_exclusive(fd):
                shutil.rmtree(path, ignore_errors=True)
                logger.info("media cache: removed %s (its server is gone)", path)
        finally:
            os.close(fd)
