"""Print the README's settings table from ``openai_frontend.settings`` (the one source of the defaults).

    python scripts/settings_table.py            # paste over the table under "Settings" in README.md
    python scripts/settings_table.py --check    # exit 1 when README.md's table differs (the tests run this)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from openai_frontend.settings import DOCS  # noqa: E402

_MIB = 1024 * 1024


def default_text(name: str, value: Any) -> str:
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if name.endswith("_bytes") and isinstance(value, int) and value >= _MIB and value % _MIB == 0:
        mib = value // _MIB
        return f"{mib // 1024} GiB" if mib % 1024 == 0 and mib >= 1024 * 4 else f"{mib} MiB"
    return f"`{value}`"


def table() -> str:
    rows = ["| env | flag | default | |", "|---|---|---|---|"]
    for name, (env, flag, default, doc) in DOCS.items():
        cell = doc.replace("|", "\\|")
        rows.append(f"| `{env}` | `{flag}` | {default_text(name, default)} | {cell} |")
    return "\n".join(rows)


def main() -> int:
    text = table()
    if "--check" in sys.argv[1:]:
        if text not in (ROOT / "README.md").read_text():
            print("README.md's settings table is stale: run python scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
