"""What the tiny-model build scripts share: running from a checkout, offline, and their one line of report."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def from_checkout() -> None:
    """Import the package from this checkout without installing it; never reach the Hugging Face hub."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def build_and_report(what: str, out: Path, is_complete: Callable[[], bool], build: Callable[[], Any]) -> int:
    """Runs ``build()`` (which keeps a complete folder as it is) and logs whether ``what`` was built or kept."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    skipped = is_complete()
    build()
    verb = "kept existing" if skipped else "built"
    logging.info("%s %s in %s [%.1f s]", verb, what, out, time.perf_counter() - started)
    return 0
