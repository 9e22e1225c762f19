"""Reading the JSON files that sit beside a model (llm's model.json, video_generator's pipeline.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from video_pipeline.errors import InvalidInput


def read_json(path: Path, holds: str) -> Any:
    """The parsed file; a missing or malformed one is an :class:`InvalidInput` naming it and what it ``holds``."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"{path} is missing: it {holds}") from None
    except ValueError as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from None
