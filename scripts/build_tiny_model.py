#!/usr/bin/env python
"""Build a tiny random-weight Qwen-VL model folder offline (for tests and benchmarks).

    python scripts/build_tiny_model.py --arch qwen2_vl --out .tiny/qwen2_vl [--seed 0] [--media real]

Idempotent: an existing complete build of the same arch, seed and media is kept.
``--media real`` writes the real checkpoint's processor files (pixel budgets, layout)
instead of the tiny budgets.
The logic lives in :mod:`video_pipeline.engines.tiny_model`.
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

from video_pipeline.engines import tiny_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, choices=sorted(tiny_model.ARCHS))
    parser.add_argument("--out", required=True, type=Path, help="model folder to create")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--media", choices=tiny_model.MEDIA, default="tiny",
                        help="processor files: tiny pixel budgets (default) or the real checkpoint's")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    skipped = tiny_model.is_complete(args.out, args.arch, args.seed, args.media)
    tiny_model.build(args.arch, args.out, args.seed, args.media)
    verb = "kept existing" if skipped else "built"
    logging.info(
        "%s tiny %s model (seed %d, %s media) in %s [%.1f s]",
        verb,
        args.arch,
        args.seed,
        args.media,
        args.out,
        time.perf_counter() - started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
