"""Cores a decode may borrow while nobody else is decoding, counted across processes.

Each video_decoder instance is its own process and serves one request at a time, so the launcher gives
it one core (``decoder_scale``): under load every core decodes a video. At low concurrency that leaves
cores idle while one long decode sets the time to first token. A decode can then split its GOPs over
several workers, but only on cores no other decode is using, or it would slow the others down.

The count is kept in the file system, so every decoder process on the machine (several instances,
several tritonservers) sees the same one: one lock file per decode slot (a slot: the cores of one
worker, ``threads`` FFmpeg threads), taken with a non-blocking ``flock``. A decode takes every free
slot; the kernel drops a dead process's locks. Taking never waits: a decode that finds none free still
runs, on one worker.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

#: Where the lock files are, one folder per user (several users' decoders share cores, not files).
CORES_DIR_ENV = "VLT_DECODE_CORES_DIR"


def cgroup_cpu_limit(cpu_max: str | None) -> int | None:
    """Whole cores allowed by a cgroup v2 ``cpu.max`` line ("max 100000" or "150000 100000"); None: no limit."""
    if not cpu_max:
        return None
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        limit = cgroup_cpu_limit(Path("/sys/fs/cgroup/cpu.max").read_text())
    except OSError:
        limit = None
    return max(1, min(cores, limit or cores))


def cores_dir() -> Path:
    return Path(os.environ.get(CORES_DIR_ENV) or Path(tempfile.gettempdir()) / f"vlt-decode-cores-{os.getuid()}")


@contextmanager
def borrowed_cores(slots: int, directory: Path | None = None) -> Iterator[int]:
    """Free slots of the machine's ``slots`` decode slots (a slot: the cores of one decode worker), held
    for the ``with`` block; yields how many workers the decode may run: the slots it took, at least 1
    (a decode that finds every slot taken runs alone)."""
    if slots <= 1:
        yield 1
        return
    folder = directory or cores_dir()
    held: list[int] = []
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        for slot in range(slots):
            fd = os.open(folder / str(slot), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # another decode has this slot
                continue
            held.append(fd)
    except OSError as exc:  # no writable temp dir: decode alone rather than fail
        logger.debug("decode slots not counted (%s): decoding on one worker", exc)
    try:
        yield max(1, len(held))
    finally:
        for fd in held:
            os.close(fd)  # closing drops the lock
