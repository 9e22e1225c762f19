"""Remix and stills across two shim replicas on one PostgreSQL database and one S3 bucket (nothing shared on disk):
a still made on one replica is served by the other from the bucket, and a job made on one is remixed on the other."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.settings import Settings
from openai_frontend.videos.stills import first_frame_png
from tests.fakes import FakeBackend, FakeVideoBackend
from tests.stores import store_settings


@pytest.fixture
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return store_settings("postgres+s3", settings, request)


@contextmanager
def replica(settings: Settings, videos: FakeVideoBackend) -> Iterator[TestClient]:
    with TestClient(create_app(settings, FakeBackend(), video_backend=videos), raise_server_exceptions=False) as c:
        yield c


def completed(client: TestClient, video_id: str) -> dict:
    deadline = time.monotonic() + 20
    while (job := client.get(f"/v1/videos/{video_id}").json())["status"] != "completed":
        assert job["status"] in ("queued", "in_progress") and time.monotonic() < deadline, job
        time.sleep(0.02)
    return job


def test_a_still_made_on_one_replica_is_served_by_the_other_and_a_remix_runs_from_the_bucket(settings) -> None:
    from PIL import Image

    videos_a, videos_b = FakeVideoBackend(), FakeVideoBackend()
    with replica(settings, videos_a) as a, replica(settings.with_(files_dir=settings.files_dir + "-b"), videos_b) as b:
        job = a.post("/v1/videos", json={"prompt": "a fox", "size": "96x64", "num_frames": 9, "seed": 5}).json()
        completed(a, job["id"])
        made = b.get(f"/v1/videos/{job['id']}/content?variant=spritesheet")
        assert made.status_code == 200 and Image.open(io.BytesIO(made.content)).size == (3 * 96, 3 * 64)
        served = a.get(f"/v1/videos/{job['id']}/content?variant=spritesheet")  # A finds B's in the bucket
        assert served.content == made.content and served.headers["x-spritesheet-frames"] == "0,1,2,3,4,5,6,7,8"
        assert a.get(f"/v1/videos/{job['id']}/content?variant=spritesheet",
                     headers={"Range": "bytes=0-9"}).content == made.content[:10]
        mp4 = a.get(f"/v1/videos/{job['id']}/content").content
        remix = b.post(f"/v1/videos/{job['id']}/remix", json={"prompt": "a wolf"}).json()
        assert remix["remixed_from_video_id"] == job["id"]
        completed(b, remix["id"])
        ran = [r for r in videos_a.requests + videos_b.requests if r.request_id == remix["id"]]
        assert len(ran) == 1 and ran[0].image == first_frame_png(mp4) and ran[0].params.seed == 5
        assert a.delete(f"/v1/videos/{job['id']}").status_code == 200
        assert b.get(f"/v1/videos/{job['id']}/content?variant=spritesheet").status_code == 404
