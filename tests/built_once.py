"""Tiny models built once per test run, also when pytest-xdist runs the suite in several processes.

The builders write into fixed folders under ``.tiny/`` that tritonserver and vLLM then map: a second
build into a folder another process is serving from could change files under its feet. So every
builder call goes through :func:`built_once`: under a lock file beside the folder, it builds only when
the folder was not built by this run yet (``VLT_TEST_RUN``, set once by the controlling process,
recorded in the folder's stamp).
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable
from pathlib import Path

RUN_ENV = "VLT_TEST_RUN"
STAMP = ".built-by-test-run"


def start_run() -> str:
    """This run's id (the controller sets it; pytest-xdist's workers inherit it)."""
    return os.environ.setdefault(RUN_ENV, uuid.uuid4().hex)


def built_once(out: Path, build: Callable[[Path], object]) -> Path:
    """``out`` built by ``build(out)`` at most once in this test run, whichever process asks first."""
    run = start_run()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = out / STAMP
        if not (stamp.is_file() and stamp.read_text() == run):
            build(out)
            stamp.write_text(run)
    return out
