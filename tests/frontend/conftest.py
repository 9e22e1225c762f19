"""The shim on a fake backend: TestClient(create_app(settings, FakeBackend()))."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.settings import Settings
from tests.fakes import FakeBackend
from tests.servers import serving

MODEL = "tiny-test"


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    d = tmp_path / "media"
    d.mkdir()
    return d


@pytest.fixture
def settings(media_dir: Path, tmp_path: Path) -> Settings:
    return Settings(served_model_name=MODEL, allowed_local_media_path=str(media_dir),
                    files_dir=str(tmp_path / "files"))


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(settings: Settings, backend: FakeBackend) -> Iterator[TestClient]:
    with TestClient(create_app(settings, backend), raise_server_exceptions=False) as c:
        yield c


def data_url(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def jpeg(value: int, size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def png(size: tuple[int, int] = (8, 6)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def frame_list_url(n: int, size: tuple[int, int] = (64, 48)) -> str:
    return "data:video/jpeg;base64," + ",".join(base64.b64encode(jpeg(i * 20, size)).decode() for i in range(n))


def sse_data(text: str) -> list[str]:
    """The data payloads of an SSE body, checking the framing: every event ends with a blank line."""
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    out = []
    for event in events:
        lines = event.split("\n")
        data = [line[len("data: "):] for line in lines if line.startswith("data: ")]
        assert len(data) == 1, event
        out.append(data[0])
    return out


def sse_named(text: str) -> list[tuple[str, dict]]:
    """(event name, data) of each event of a Responses stream."""
    assert text.endswith("\n\n")
    out = []
    for event in text[:-2].split("\n\n"):
        lines = event.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ") and len(lines) == 2, event
        out.append((lines[0][len("event: "):], json.loads(lines[1][len("data: "):])))
    return out


@pytest.fixture
def files_server(settings: Settings) -> Iterator[str]:
    """The app on a fake backend served by uvicorn on a free loopback port (real sockets, real streaming)."""
    with serving(create_app(settings, FakeBackend()), name="files-server") as url:
        yield url
