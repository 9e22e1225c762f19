"""Install ``perf_analyzer`` into the venv (for the perf/ recipes; tests do not need it).

No wheel's perf_analyzer runs here as shipped: it needs ``libcudart.so.12`` and
``libb64.so.0d``. The tritonclient 2.51 manylinux wheel carries the binary (2.52+
need glibc 2.38), and the nvidia-pytriton wheel already bundles both libraries,
so this extracts the binary to ``.venv/libexec/`` and writes a ``.venv/bin/perf_analyzer``
wrapper that puts symlinks to those libraries on LD_LIBRARY_PATH for it alone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "2.51.0"


def main() -> int:
    venv = Path(sys.prefix)
    libexec = venv / "libexec" / "perf_analyzer"
    binary = libexec / "perf_analyzer"
    wrapper = venv / "bin" / "perf_analyzer"
    if binary.exists() and wrapper.exists():
        print(f"perf_analyzer already installed: {wrapper}")
        return 0
    libexec.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        f"tritonclient=={VERSION}"], check=True)
        wheel = next(Path(tmp).glob("tritonclient-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            binary.write_bytes(zf.read(f"tritonclient-{VERSION}.data/data/bin/perf_analyzer"))
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        print("nvidia-pytriton is not installed: run scripts/setup.sh first", file=sys.stderr)
        return 1
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "nvidia_pytriton.libs"
    for pattern, name in (("libcudart-*.so.12*", "libcudart.so.12"), ("libb64-*.so.0d", "libb64.so.0d")):
        target = next(libs.glob(pattern))
        link = libexec / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    wrapper.write_text(
        "#!/bin/sh\n"
        f'LD_LIBRARY_PATH="{libexec}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "{binary}" "$@"\n'
    )
    wrapper.chmod(0o755)
    out = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True)
    print(f"installed {wrapper}: {(out.stdout or out.stderr).strip().splitlines()[:1]}")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
