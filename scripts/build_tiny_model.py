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
import sys
from pathlib import Path

from _build_tiny import build_and_report, from_checkout

from_checkout()
from video_pipeline.engines import tiny_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, choices=sorted(tiny_model.ARCHS))
    parser.add_argument("--out", required=True, type=Path, help="model folder to create")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--media", choices=tiny_model.MEDIA, default="tiny",
                        help="processor files: tiny pixel budgets (default) or the real checkpoint's")
    args = parser.parse_args(argv)
    return build_and_report(f"tiny {args.arch} model (seed {args.seed}, {args.media} media)", args.out,
                            lambda: tiny_model.is_complete(args.out, args.arch, args.seed, args.media),
                            lambda: tiny_model.build(args.arch, args.out, args.seed, args.media))


if __name__ == "__main__":
    sys.exit(main())
