#!/usr/bin/env python
"""Build the tiny random-weight Wan 2.2 TI2V-class diffusers pipeline offline (tests, `make serve`).

    python scripts/build_tiny_wan.py --out .tiny/wan [--seed 0]

Idempotent: an existing complete build with the same seed is kept.
The logic lives in :mod:`video_pipeline.generation.tiny_wan`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from video_pipeline.generation import tiny_wan  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="pipeline folder to create")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    skipped = tiny_wan.is_complete(args.out, args.seed)
    tiny_wan.build(args.out, args.seed)
    verb = "kept existing" if skipped else "built"
    logging.info("%s tiny Wan pipeline (seed %d) in %s [%.1f s]", verb, args.seed, args.out,
                 time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
