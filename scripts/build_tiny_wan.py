#!/usr/bin/env python
"""Build the tiny random-weight Wan 2.2 TI2V-class diffusers pipeline offline (tests, `make serve`).

    python scripts/build_tiny_wan.py --out .tiny/wan [--seed 0]

Idempotent: an existing complete build with the same seed is kept.
The logic lives in :mod:`video_pipeline.generation.tiny_wan`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _build_tiny import build_and_report, from_checkout

from_checkout()
from video_pipeline.generation import tiny_wan  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="pipeline folder to create")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    return build_and_report(f"tiny Wan pipeline (seed {args.seed})", args.out,
                            lambda: tiny_wan.is_complete(args.out, args.seed),
                            lambda: tiny_wan.build(args.out, args.seed))


if __name__ == "__main__":
    sys.exit(main())
