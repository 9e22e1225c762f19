"""The README's settings table is the one ``scripts/settings_table.py`` prints from the settings themselves."""

from __future__ import annotations

from pathlib import Path

from scripts.settings_table import table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_matches_settings_when_generated() -> None:
    expected = table()
    assert expected in README.read_text(), "README.md's settings table is stale: run python scripts/settings_table.py"
