"""README's "Safety and limits" lists every media-safety setting, each with the row of the README's main
settings table (the settings' own doc and default)."""

from __future__ import annotations

from pathlib import Path

from openai_frontend.settings import DOCS

README = Path(__file__).resolve().parents[2] / "README.md"
SAFETY_SETTINGS = (
    "allowed_media_schemes", "allowed_media_domains", "allowed_media_networks", "follow_redirects", "max_redirects",
    "fetch_connect_timeout_s", "fetch_timeout_s", "fetch_total_timeout_s", "fetch_concurrency",
    "fetch_concurrency_per_request", "fetch_concurrency_per_host", "allowed_local_media_path", "max_videos",
    "max_images", "max_media_bytes", "max_request_media_bytes", "max_body_bytes", "max_jpeg_frames",
    "max_frame_pixels", "max_video_frames", "max_video_duration_s", "max_decoded_bytes",
    "max_context_tokens",
)


def _rows(text: str) -> dict[str, str]:
    return {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `VLT_")}


def test_readme_safety_section_lists_each_safety_setting_as_the_main_table_does() -> None:
    text = README.read_text()
    start = text.index("## Safety and limits")
    section = _rows(text[start:text.index("\n## ", start + 1)])
    main_start = text.index("Settings (flag > environment > default")
    main = _rows(text[main_start:text.index("\n\n", text.index("| env |", main_start))])
    for name in SAFETY_SETTINGS:
        env, flag, _default, doc = DOCS[name]
        row = section.get(env)
        assert row is not None, f"README's Safety and limits does not list {env}"
        assert f"`{flag}`" in row and doc.replace("|", "\\|") in row, f"README's row of {env} is stale"
        assert row == main.get(env), f"README: {env} differs between Safety and limits and the settings table"
