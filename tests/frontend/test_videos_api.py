"""The Videos API on a fake video backend: jobs, progress, content, listing, deletion, sync, references, errors.

Every test runs on the embedded store and on PostgreSQL (outputs on local disk, and in S3)."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.settings import Settings
from tests.fakes import FakeBackend, FakeVideoBackend
from tests.frontend.conftest import jpeg
from tests.stores import store_settings
from video_pipeline.generation.encode import probe_mp4


@pytest.fixture(params=["local", "postgres", "postgres+s3"])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return store_settings(request.param, settings, request)


@pytest.fixture
def videos() -> FakeVideoBackend:
    return FakeVideoBackend()


@pytest.fixture
def client(settings: Settings, videos: FakeVideoBackend) -> Iterator[TestClient]:
    with TestClient(create_app(settings, FakeBackend(), video_backend=videos), raise_server_exceptions=False) as c:
        yield c


def png(size: tuple[int, int] = (64, 64)) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 120, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def wait_for(client: TestClient, video_id: str, status: str = "completed", timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/videos/{video_id}").json()
        if job["status"] == status:
            return job
        assert job["status"] in ("queued", "in_progress"), job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def error_of(r) -> dict:
    return r.json()["error"]


def outputs(settings: Settings) -> list[str]:
    """The mp4 outputs the store keeps (on disk, or in the bucket)."""
    if settings.files_backend == "s3":
        from tests.stores import _keys

        return sorted(k.rsplit("/", 1)[1] for k in _keys(settings, "videos/"))
    return sorted(p.name for p in (Path(settings.files_dir) / "videos").glob("*.mp4"))


# --- a job from creation to its content ------------------------------------------------------------


def test_create_returns_a_queued_openai_video_job_when_posted_as_multipart(client, videos) -> None:
    r = client.post("/v1/videos", data={"prompt": "a fox", "size": "96x64", "num_frames": "17", "fps": "8",
                                        "seed": "7", "num_inference_steps": "3"})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["object"] == "video" and job["id"].startswith("video_")
    assert job["status"] in ("queued", "in_progress") and job["progress"] == 0
    assert (job["model"], job["size"], job["seconds"], job["prompt"]) == ("tiny-wan", "96x64", "2.125", "a fox")
    assert job["completed_at"] is None and job["error"] is None and isinstance(job["created_at"], int)
    done = wait_for(client, job["id"])
    assert done["progress"] == 100 and done["completed_at"] >= done["created_at"]
    assert (done["num_frames"], done["fps"], done["seed"]) == (17, 8, 7)
    request = videos.requests[0]
    assert (request.request_id, request.params.num_inference_steps, request.image) == (job["id"], 3, None)


def test_content_is_an_mp4_with_the_requested_frames_size_and_fps_when_the_job_completed(client) -> None:
    job = client.post("/v1/videos", json={"prompt": "a fox", "width": 128, "height": 64, "num_frames": 13,
                                          "fps": 24}).json()
    wait_for(client, job["id"])
    r = client.get(f"/v1/videos/{job['id']}/content")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    info = probe_mp4(r.content)
    assert (info["codec"], info["width"], info["height"], info["fps"], info["frames"]) == ("h264", 128, 64, 24, 13)


def test_content_answers_range_requests_with_206_when_asked_for_a_part(client) -> None:
    job = client.post("/v1/videos", json={"prompt": "a fox"}).json()
    wait_for(client, job["id"])
    whole = client.get(f"/v1/videos/{job['id']}/content").content
    r = client.get(f"/v1/videos/{job['id']}/content", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == whole[:100]
    assert r.headers["content-range"] == f"bytes 0-99/{len(whole)}"


def test_content_is_409_while_running_for_every_variant_and_400_for_an_unknown_one(client, videos) -> None:
    videos.hold_at = 1
    job = client.post("/v1/videos", json={"prompt": "a fox"}).json()
    for variant in ("video", "thumbnail", "spritesheet"):
        r = client.get(f"/v1/videos/{job['id']}/content?variant={variant}")
        assert r.status_code == 409 and error_of(r)["code"] == "video_not_ready", variant
    r = client.get(f"/v1/videos/{job['id']}/content?variant=gif")
    assert r.status_code == 400 and error_of(r)["param"] == "variant" and "'gif'" in error_of(r)["message"]
    assert "thumbnail, spritesheet" in error_of(r)["message"]
    videos.release()
    wait_for(client, job["id"])


def test_progress_increases_while_the_model_denoises_when_polled(client, videos) -> None:
    videos.hold_at = 2
    job = client.post("/v1/videos", json={"prompt": "a fox", "num_inference_steps": 4}).json()
    deadline = time.monotonic() + 10
    while (seen := client.get(f"/v1/videos/{job['id']}")).json()["progress"] < 45:
        assert time.monotonic() < deadline, seen.json()
        time.sleep(0.01)
    running = seen.json()
    assert running["status"] == "in_progress" and running["progress"] == 45  # 2 of 4 steps = half of 90 %
    assert seen.headers["openai-poll-after-ms"] == "500"  # the SDK's poll() waits this long
    videos.release()
    assert wait_for(client, job["id"])["progress"] == 100


def test_jobs_run_one_at_a_time_when_concurrency_is_one(client, videos) -> None:
    videos.hold_at = 1
    first = client.post("/v1/videos", json={"prompt": "one"}).json()
    second = client.post("/v1/videos", json={"prompt": "two"}).json()
    wait_for(client, first["id"], "in_progress")
    time.sleep(0.1)
    assert client.get(f"/v1/videos/{second['id']}").json()["status"] == "queued"
    videos.release()
    wait_for(client, first["id"])
    wait_for(client, second["id"])


def test_create_is_429_when_the_queue_is_full(settings) -> None:
    settings = settings.with_(videos_max_queued=1)
    videos = FakeVideoBackend(hold_at=0)
    with TestClient(create_app(settings, FakeBackend(), video_backend=videos)) as client:
        running = client.post("/v1/videos", json={"prompt": "one"}).json()
        wait_for(client, running["id"], "in_progress")
        assert client.post("/v1/videos", json={"prompt": "two"}).status_code == 200  # waits
        r = client.post("/v1/videos", json={"prompt": "three"})
        assert r.status_code == 429 and error_of(r)["code"] == "too_many_requests"
        videos.release()


def test_deleting_a_queued_job_frees_its_place_in_the_queue(settings) -> None:
    settings = settings.with_(videos_max_queued=1)
    videos = FakeVideoBackend(hold_at=0)
    with TestClient(create_app(settings, FakeBackend(), video_backend=videos)) as client:
        running = client.post("/v1/videos", json={"prompt": "one"}).json()
        wait_for(client, running["id"], "in_progress")
        queued = client.post("/v1/videos", json={"prompt": "two"}).json()
        assert client.post("/v1/videos", json={"prompt": "three"}).status_code == 429
        assert client.delete(f"/v1/videos/{queued['id']}").json()["deleted"] is True
        again = client.post("/v1/videos", json={"prompt": "four"})
        assert again.status_code == 200, again.text
        videos.release()
        wait_for(client, again.json()["id"])
        assert [r.params.prompt for r in videos.requests] == ["one", "four"]  # "two" never reached the model


def test_a_failed_generation_is_a_failed_job_with_the_models_message(client, videos) -> None:
    from video_pipeline.errors import PipelineError

    videos.error = PipelineError("generation failed: RuntimeError: out of memory")
    job = client.post("/v1/videos", json={"prompt": "a fox"}).json()
    failed = wait_for(client, job["id"], "failed")
    assert failed["error"]["message"] == "generation failed: RuntimeError: out of memory"
    assert failed["error"]["code"] == "internal_error" and failed["completed_at"] is not None
    assert client.get(f"/v1/videos/{job['id']}/content").status_code == 409


# --- listing and deletion ------------------------------------------------------------------------------


def test_list_pages_with_after_and_has_more_newest_first(client) -> None:
    ids = [client.post("/v1/videos", json={"prompt": f"p{i}"}).json()["id"] for i in range(5)]
    page = client.get("/v1/videos?limit=2").json()
    assert page["object"] == "list" and [v["id"] for v in page["data"]] == ids[::-1][:2] and page["has_more"]
    assert (page["first_id"], page["last_id"]) == (ids[4], ids[3])
    seen = [v["id"] for v in page["data"]]
    while page["has_more"]:
        page = client.get(f"/v1/videos?limit=2&after={page['last_id']}").json()
        seen += [v["id"] for v in page["data"]]
    assert seen == ids[::-1]
    asc = client.get("/v1/videos?order=asc&limit=10").json()
    assert [v["id"] for v in asc["data"]] == ids and not asc["has_more"]
    assert client.get("/v1/videos?after=video_nope").status_code == 400
    for video_id in ids:
        wait_for(client, video_id)


def test_delete_while_running_cancels_the_generation_and_forgets_the_job(client, videos, settings) -> None:
    videos.hold_at = 1
    job = client.post("/v1/videos", json={"prompt": "a fox"}).json()
    wait_for(client, job["id"], "in_progress")
    r = client.delete(f"/v1/videos/{job['id']}")
    assert r.json() == {"id": job["id"], "object": "video.deleted", "deleted": True}
    assert videos.closed_early == 1 and videos.finished == 0  # the stream to the model was closed
    assert client.get(f"/v1/videos/{job['id']}").status_code == 404
    assert client.get(f"/v1/videos/{job['id']}/content").status_code == 404
    assert client.delete(f"/v1/videos/{job['id']}").status_code == 404
    assert client.get("/v1/videos").json()["data"] == []


def test_delete_of_a_completed_job_removes_its_output(client, settings) -> None:
    job = client.post("/v1/videos", json={"prompt": "a fox"}).json()
    wait_for(client, job["id"])
    assert outputs(settings) == [f"{job['id']}.mp4"]
    assert client.delete(f"/v1/videos/{job['id']}").json()["deleted"] is True
    assert outputs(settings) == []


def test_a_tenant_sees_only_its_own_videos_when_a_scope_header_is_set(settings) -> None:
    settings = settings.with_(files_scope_header="X-Tenant")
    with TestClient(create_app(settings, FakeBackend(), video_backend=FakeVideoBackend())) as client:
        job = client.post("/v1/videos", json={"prompt": "a fox"}, headers={"X-Tenant": "a"}).json()
        assert client.get(f"/v1/videos/{job['id']}", headers={"X-Tenant": "b"}).status_code == 404
        assert client.get("/v1/videos", headers={"X-Tenant": "b"}).json()["data"] == []
        assert client.delete(f"/v1/videos/{job['id']}", headers={"X-Tenant": "b"}).status_code == 404
        assert client.get(f"/v1/videos/{job['id']}", headers={"X-Tenant": "a"}).status_code == 200


# --- the sync endpoint --------------------------------------------------------------------------------


def test_sync_returns_the_mp4_bytes_with_its_facts_in_headers(client, videos) -> None:
    r = client.post("/v1/videos/sync", data={"prompt": "a fox", "size": "64x96", "num_frames": "5", "seed": "3"})
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert (r.headers["x-video-seed"], r.headers["x-video-num-frames"], r.headers["x-video-fps"]) == ("3", "5", "16")
    info = probe_mp4(r.content)
    assert (info["width"], info["height"], info["frames"]) == (64, 96, 5)
    assert client.get("/v1/videos").json()["data"] == []  # no job record


def test_sync_answers_400_before_generating_when_a_parameter_is_bad(client, videos) -> None:
    r = client.post("/v1/videos/sync", json={"prompt": "a fox", "num_frames": 10})
    assert r.status_code == 400 and error_of(r)["param"] == "num_frames"
    assert videos.requests == []


# --- reference images -----------------------------------------------------------------------------------


def test_image_to_video_takes_an_uploaded_file_as_input_reference(client, videos) -> None:
    image = png()
    r = client.post("/v1/videos", data={"prompt": "animate it"},
                    files={"input_reference": ("ref.png", image, "image/png")})
    assert r.status_code == 200, r.text
    wait_for(client, r.json()["id"])
    assert videos.requests[0].image == image
    staging = Path(client.app.state.files.staging_dir())
    assert not any(staging.iterdir())  # the staged upload is gone


def test_image_reference_takes_a_data_url_or_a_bare_url_string(client, videos) -> None:
    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg(90)).decode()
    r = client.post("/v1/videos", data={"prompt": "animate it", "image_reference": f'{{"image_url": "{data_url}"}}'})
    assert r.status_code == 200, r.text
    r2 = client.post("/v1/videos", json={"prompt": "animate it", "image_reference": {"image_url": data_url}})
    assert r2.status_code == 200, r2.text
    wait_for(client, r.json()["id"])
    wait_for(client, r2.json()["id"])
    assert len(videos.requests) == 2 and all(req.image == jpeg(90) for req in videos.requests)


def test_image_reference_takes_the_id_of_an_uploaded_file(client, videos) -> None:
    image = png()
    file_id = client.post("/v1/files", data={"purpose": "vision"},
                          files={"file": ("ref.png", image, "image/png")}).json()["id"]
    r = client.post("/v1/videos", data={"prompt": "animate it", "image_reference": f'{{"file_id": "{file_id}"}}'})
    assert r.status_code == 200, r.text
    # OpenAI's SDK sends input_reference={"file_id": ...} in bracket notation
    r2 = client.post("/v1/videos", data={"prompt": "animate it", "input_reference[file_id]": file_id})
    assert r2.status_code == 200, r2.text
    wait_for(client, r.json()["id"])
    wait_for(client, r2.json()["id"])
    assert [req.image for req in videos.requests] == [image, image]
    missing = client.post("/v1/videos", json={"prompt": "x", "image_reference": {"file_id": "file-nope"}})
    assert missing.status_code == 404 and error_of(missing)["code"] == "file_not_found"


def test_reference_images_are_refused_when_not_an_image_or_given_twice(client) -> None:
    from tests.videos import ClipSpec, make_video

    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=5, gop=5))
    r = client.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": ("c.mp4", clip, "video/mp4")})
    assert r.status_code == 415 and error_of(r)["param"] == "input_reference"
    broken = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    r = client.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": ("b.png", broken, "image/png")})
    assert r.status_code == 400 and "not a decodable image" in error_of(r)["message"]
    data_url = "data:image/png;base64," + base64.b64encode(png()).decode()
    r = client.post("/v1/videos", data={"prompt": "x", "image_reference": data_url},
                    files={"input_reference": ("ref.png", png(), "image/png")})
    assert r.status_code == 400 and "one reference image" in error_of(r)["message"]


def test_image_reference_is_refused_when_the_model_generates_from_text_only(settings) -> None:
    from tests.fakes import tiny_wan_capabilities

    videos = FakeVideoBackend(tiny_wan_capabilities(image_to_video=False))
    with TestClient(create_app(settings, FakeBackend(), video_backend=videos)) as client:
        r = client.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": ("r.png", png(), "image/png")})
        assert r.status_code == 400 and "text only" in error_of(r)["message"]


# --- bad requests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "param", "needle"), [
    ({"size": "48x48"}, "size", "multiple of 32"),
    ({"width": 64, "height": 40}, "height", "multiple of 32"),
    ({"size": "64x64", "width": 96}, "size", "disagrees"),
    ({"size": "big"}, "size", "WIDTHxHEIGHT"),
    ({"size": "1024x64"}, "size", "from 32 to 512"),
    ({"num_frames": 10}, "num_frames", "4k+1"),
    ({"num_frames": 69}, "num_frames", "at most 65"),
    ({"seconds": "12"}, "seconds", "at most 65"),
    ({"seconds": "-1"}, "seconds", "positive"),
    ({"num_inference_steps": 0}, "num_inference_steps", "from 1 to 100"),
    ({"guidance_scale_2": 3.0}, "guidance_scale_2", "not supported by model tiny-wan"),
    ({"true_cfg_scale": 4.0, "boundary_ratio": 0.5}, "boundary_ratio", "not supported"),
    ({"extra_params": {"num_frames": 9}}, "extra_params", "request fields"),
    ({"extra_params": {"guidance_rescale": 0.7}}, "extra_params", "takes no guidance_rescale"),
    ({"fps": 0}, "fps", "from 1 to 240"),
])
def test_create_is_400_naming_the_parameter_when_a_value_is_bad(client, videos, fields, param, needle) -> None:
    r = client.post("/v1/videos", json={"prompt": "a fox", **fields})
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param and needle in error_of(r)["message"], error_of(r)
    assert videos.requests == []


def test_create_is_400_when_a_field_is_unknown_or_the_prompt_missing(client) -> None:
    r = client.post("/v1/videos", data={"prompt": "a fox", "resolution": "720p"})
    assert r.status_code == 400 and error_of(r)["code"] == "unsupported_parameter" and "resolution" in r.text
    r = client.post("/v1/videos", json={"size": "64x64"})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"
    r = client.post("/v1/videos", json={"prompt": "   "})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"
    r = client.post("/v1/videos", data={"prompt": "a fox", "num_frames": "nine"})
    assert r.status_code == 400 and error_of(r)["param"] == "num_frames"


def test_extra_params_is_400_when_its_json_is_bad_and_passes_through_when_good(client, videos) -> None:
    r = client.post("/v1/videos", data={"prompt": "a fox", "extra_params": "{max_sequence_length: 32"})
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_json" and error_of(r)["param"] == "extra_params"
    r = client.post("/v1/videos", data={"prompt": "a fox", "extra_params": '{"max_sequence_length": 32}'})
    assert r.status_code == 200, r.text
    r = client.post("/v1/videos", json={"prompt": "a fox", "extra_params": "{not json"})
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"
    r = client.post("/v1/videos", json={"prompt": "a fox", "extra_params": '{"max_sequence_length": 16}'})
    assert r.status_code == 200, r.text
    r = client.post("/v1/videos", data={"prompt": "a fox", "extra_params[max_sequence_length]": "24"})
    assert r.status_code == 200, r.text
    wait_for(client, r.json()["id"])
    assert [q.params.extra_params for q in videos.requests] == [{"max_sequence_length": 32},
                                                                 {"max_sequence_length": 16},
                                                                 {"max_sequence_length": 24}]


def test_create_is_404_when_the_model_is_not_the_served_one(client) -> None:
    r = client.post("/v1/videos", json={"prompt": "a fox", "model": "sora-2"})
    assert r.status_code == 404 and error_of(r)["code"] == "model_not_found" and "tiny-wan" in r.text
    assert client.post("/v1/videos", json={"prompt": "a fox", "model": "tiny-wan"}).status_code == 200


def test_video_endpoints_are_503_when_no_video_model_is_ready(client, videos) -> None:
    videos.available = False
    r = client.post("/v1/videos", json={"prompt": "a fox"})
    assert r.status_code == 503 and "video_generator" in error_of(r)["message"]
    assert client.get("/v1/videos/video_x").status_code == 404


def test_an_app_without_a_video_model_answers_503(settings) -> None:
    with TestClient(create_app(settings, FakeBackend())) as client:
        assert client.post("/v1/videos", json={"prompt": "a fox"}).status_code == 503
        assert client.get("/v1/videos").json()["data"] == []


# --- restarts -----------------------------------------------------------------------------------------------


def test_jobs_survive_a_restart_completed_ones_downloadable_running_ones_failed_or_handed_over(settings) -> None:
    videos = FakeVideoBackend()
    with TestClient(create_app(settings, FakeBackend(), video_backend=videos)) as client:
        done = client.post("/v1/videos", json={"prompt": "kept", "num_frames": 5}).json()
        wait_for(client, done["id"])
        content = client.get(f"/v1/videos/{done['id']}/content").content
        videos.hold_at = 1
        running = client.post("/v1/videos", json={"prompt": "cut short"}).json()
        wait_for(client, running["id"], "in_progress")
    # the first app has shut down; a new one opens the same store
    with TestClient(create_app(settings, FakeBackend(), video_backend=FakeVideoBackend())) as client:
        again = client.get(f"/v1/videos/{done['id']}").json()
        assert again["status"] == "completed" and again["prompt"] == "kept"
        assert client.get(f"/v1/videos/{done['id']}/content").content == content
        if settings.database_url:  # shared: the stopped replica handed its job back, and this one runs it
            assert wait_for(client, running["id"])["progress"] == 100
        else:
            failed = client.get(f"/v1/videos/{running['id']}").json()
            assert failed["status"] == "failed" and failed["error"]["code"] == "server_restarted"
            assert "in_progress" in failed["error"]["message"]
        assert [v["id"] for v in client.get("/v1/videos").json()["data"]] == [running["id"], done["id"]]


# --- seconds as asked ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "seconds", "num_frames", "duration"), [
    ({}, "4", 65, 4.0625),  # OpenAI's default: 4 s, 65 frames at 16 fps
    ({"seconds": "2", "fps": 8}, "2", 17, 2.125),
    ({"seconds": 1}, "1", 17, 1.0625),  # a JSON number, shown as OpenAI's string
    ({"seconds": "0.50"}, "0.5", 9, 0.5625),
    ({"num_frames": 13, "fps": 8}, "1.625", 13, 1.625),  # frames asked: the clip's length
    ({"num_frames": 5, "seconds": "4"}, "0.3125", 5, 0.3125),  # num_frames wins, so seconds shows what was made
])
def test_seconds_is_what_was_asked_and_4_by_default_with_the_clips_length_in_duration_s(
        client, videos, fields, seconds, num_frames, duration) -> None:
    job = client.post("/v1/videos", json={"prompt": "a fox", **fields}).json()
    assert (job["seconds"], job["num_frames"], job["duration_s"]) == (seconds, num_frames, duration), job
    done = wait_for(client, job["id"])
    assert (done["seconds"], done["duration_s"]) == (seconds, duration)
    assert videos.requests[0].params.num_frames == num_frames
    assert probe_mp4(client.get(f"/v1/videos/{job['id']}/content").content)["frames"] == num_frames


def test_seconds_defaults_to_the_models_own_clip_when_4_s_is_more_than_it_makes(settings) -> None:
    from tests.fakes import tiny_wan_capabilities

    videos = FakeVideoBackend(tiny_wan_capabilities(max_frames=33))
    with TestClient(create_app(settings, FakeBackend(), video_backend=videos)) as client:
        job = client.post("/v1/videos", data={"prompt": "a fox"}).json()
        assert (job["seconds"], job["num_frames"]) == ("0.5625", 9), job
        r = client.post("/v1/videos", data={"prompt": "a fox", "seconds": "4"})  # asked: refused, naming it
        assert r.status_code == 400 and error_of(r)["param"] == "seconds" and "at most 33" in error_of(r)["message"]
        wait_for(client, job["id"])


# --- remix ----------------------------------------------------------------------------------------------------


def first_frame(mp4: bytes) -> bytes:
    from openai_frontend.videos.stills import first_frame_png

    return first_frame_png(mp4)


def test_remix_queues_a_job_with_the_sources_parameters_the_new_prompt_and_its_first_frame(client, videos) -> None:
    source = client.post("/v1/videos", json={"prompt": "a fox", "size": "96x64", "seconds": "1", "seed": 11,
                                             "num_inference_steps": 3, "guidance_scale": 4.5,
                                             "extra_params": {"max_sequence_length": 32}}).json()
    wait_for(client, source["id"])
    mp4 = client.get(f"/v1/videos/{source['id']}/content").content
    r = client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a wolf"})
    assert r.status_code == 200, r.text
    remix = r.json()
    assert remix["id"] != source["id"] and remix["status"] in ("queued", "in_progress") and remix["progress"] == 0
    assert remix["remixed_from_video_id"] == source["id"] and remix["prompt"] == "a wolf"
    assert {k: remix[k] for k in ("size", "seconds", "num_frames", "fps", "seed", "model")} == \
        {k: source[k] for k in ("size", "seconds", "num_frames", "fps", "seed", "model")}
    done = wait_for(client, remix["id"])
    assert done["remixed_from_video_id"] == source["id"]
    assert client.get(f"/v1/videos/{source['id']}").json()["remixed_from_video_id"] is None
    first, again = videos.requests
    assert again.request_id == remix["id"] and again.params.prompt == "a wolf"
    assert again.params == type(first.params)(**{**first.params.__dict__, "prompt": "a wolf"})
    assert again.image == first_frame(mp4) and first.image is None  # image-to-video from the source's first frame
    info = probe_mp4(client.get(f"/v1/videos/{remix['id']}/content").content)
    assert (info["width"], info["height"], info["frames"]) == (96, 64, 17)
    remix_of_remix = client.post(f"/v1/videos/{remix['id']}/remix", data={"prompt": "a bear"})  # a form too
    assert remix_of_remix.status_code == 200 and remix_of_remix.json()["remixed_from_video_id"] == remix["id"]
    wait_for(client, remix_of_remix.json()["id"])


def test_remix_on_a_text_only_model_reuses_the_seed_and_parameters_without_an_image(settings) -> None:
    from tests.fakes import tiny_wan_capabilities

    videos = FakeVideoBackend(tiny_wan_capabilities(image_to_video=False))
    with TestClient(create_app(settings, FakeBackend(), video_backend=videos)) as client:
        source = client.post("/v1/videos", json={"prompt": "a fox", "num_frames": 5}).json()
        wait_for(client, source["id"])
        remix = client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a wolf"}).json()
        wait_for(client, remix["id"])
        first, again = videos.requests
        assert again.image is None and again.params.seed == first.params.seed == source["seed"]
        assert (again.params.prompt, again.params.num_frames) == ("a wolf", 5)


def test_remix_is_400_while_the_source_runs_or_failed_and_for_a_bad_body(client, videos) -> None:
    from video_pipeline.errors import PipelineError

    videos.hold_at = 1
    running = client.post("/v1/videos", json={"prompt": "a fox"}).json()
    r = client.post(f"/v1/videos/{running['id']}/remix", json={"prompt": "a wolf"})
    assert r.status_code == 400 and error_of(r)["code"] == "video_not_ready", r.text
    assert error_of(r)["param"] == "video_id" and "completed" in error_of(r)["message"]
    videos.release()
    done = wait_for(client, running["id"])
    for body, param in (({}, "prompt"), ({"prompt": "  "}, "prompt"), ({"prompt": "x", "seed": 3}, "seed"),
                        ({"prompt": 5}, "prompt")):
        r = client.post(f"/v1/videos/{done['id']}/remix", json=body)
        assert r.status_code == 400 and error_of(r)["param"] == param, (body, r.text)
    r = client.post(f"/v1/videos/{done['id']}/remix", data={"prompt": "x"},
                    files={"input_reference": ("r.png", png(), "image/png")})
    assert r.status_code == 400 and error_of(r)["param"] == "input_reference"
    videos.error = PipelineError("generation failed: boom")
    failed = client.post("/v1/videos", json={"prompt": "a fox"}).json()
    wait_for(client, failed["id"], "failed")
    r = client.post(f"/v1/videos/{failed['id']}/remix", json={"prompt": "a wolf"})
    assert r.status_code == 400 and "failed" in error_of(r)["message"]
    assert len(videos.requests) == 2  # no remix reached the model


def test_remix_is_404_for_an_unknown_video_or_another_tenants(settings) -> None:
    settings = settings.with_(files_scope_header="X-Tenant")
    with TestClient(create_app(settings, FakeBackend(), video_backend=FakeVideoBackend())) as client:
        job = client.post("/v1/videos", json={"prompt": "a fox"}, headers={"X-Tenant": "a"}).json()
        deadline = time.monotonic() + 20
        while client.get(f"/v1/videos/{job['id']}", headers={"X-Tenant": "a"}).json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = client.post(f"/v1/videos/{job['id']}/remix", json={"prompt": "x"}, headers={"X-Tenant": "b"})
        assert r.status_code == 404 and error_of(r)["code"] == "video_not_found"
        r = client.post("/v1/videos/video_nope/remix", json={"prompt": "x"}, headers={"X-Tenant": "a"})
        assert r.status_code == 404 and error_of(r)["param"] == "video_id"
        r = client.post(f"/v1/videos/{job['id']}/remix", json={"prompt": "x"}, headers={"X-Tenant": "a"})
        assert r.status_code == 200 and r.json()["remixed_from_video_id"] == job["id"]


# --- thumbnail and spritesheet --------------------------------------------------------------------------------


def stored(settings: Settings) -> list[str]:
    """Every output the store keeps beside the jobs: mp4s and stills."""
    if settings.files_backend == "s3":
        from tests.stores import _keys

        return sorted(k.rsplit("/", 1)[1] for k in _keys(settings, "videos/"))
    return sorted(p.name for p in (Path(settings.files_dir) / "videos").glob("video_*"))


def test_thumbnail_is_a_webp_still_at_the_video_size_kept_beside_the_mp4(client, settings) -> None:
    from PIL import Image

    job = client.post("/v1/videos", json={"prompt": "a fox", "size": "96x64", "num_frames": 9, "seed": 77}).json()
    wait_for(client, job["id"])
    assert stored(settings) == [f"{job['id']}.mp4"]  # made when first asked for
    r = client.get(f"/v1/videos/{job['id']}/content", params={"variant": "thumbnail"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert f"{job['id']}.thumbnail.webp" in r.headers["content-disposition"]
    image = Image.open(io.BytesIO(r.content))
    assert image.format == "WEBP" and image.size == (96, 64)
    assert abs(float(np.asarray(image).mean()) - 77) < 3  # the fake's frames are all the seed's grey
    assert stored(settings) == [f"{job['id']}.mp4", f"{job['id']}.thumbnail.webp"]
    assert client.get(f"/v1/videos/{job['id']}/content?variant=thumbnail").content == r.content  # the kept one


def test_spritesheet_is_a_jpeg_grid_of_frames_with_its_layout_in_headers(client, settings) -> None:
    from PIL import Image

    job = client.post("/v1/videos", json={"prompt": "a fox", "size": "96x64", "num_frames": 17}).json()
    wait_for(client, job["id"])
    r = client.get(f"/v1/videos/{job['id']}/content?variant=spritesheet")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    h = r.headers
    assert (h["x-spritesheet-columns"], h["x-spritesheet-rows"]) == ("4", "4")
    assert (h["x-spritesheet-tile-width"], h["x-spritesheet-tile-height"]) == ("96", "64")
    assert h["x-spritesheet-frames"] == "0,1,2,3,4,5,6,7,9,10,11,12,13,14,15,16"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == "JPEG" and image.size == (4 * 96, 4 * 64)
    assert f"{job['id']}.spritesheet.jpg" in stored(settings)


def test_stills_answer_range_and_head_like_the_video(client) -> None:
    job = client.post("/v1/videos", json={"prompt": "a fox", "num_frames": 5}).json()
    wait_for(client, job["id"])
    for variant, media_type in (("video", "video/mp4"), ("thumbnail", "image/webp"), ("spritesheet", "image/jpeg")):
        url = f"/v1/videos/{job['id']}/content?variant={variant}"
        head = client.head(url)  # first: HEAD alone makes a still
        assert head.status_code == 200 and head.content == b"", variant
        assert head.headers["content-type"] == media_type
        whole = client.get(url).content
        assert int(head.headers["content-length"]) == len(whole) > 20, variant
        part = client.get(url, headers={"Range": "bytes=2-11"})
        assert part.status_code == 206 and part.content == whole[2:12], variant
        assert part.headers["content-range"] == f"bytes 2-11/{len(whole)}"
        beyond = client.get(url, headers={"Range": f"bytes={len(whole) + 5}-"})
        assert beyond.status_code == 416, variant


def test_deleting_a_job_removes_its_stills_and_a_sweep_keeps_those_of_live_jobs(client, settings) -> None:
    job = client.post("/v1/videos", json={"prompt": "a fox", "num_frames": 5}).json()
    kept = client.post("/v1/videos", json={"prompt": "a wolf", "num_frames": 5}).json()
    for video_id in (job["id"], kept["id"]):
        wait_for(client, video_id)
        for variant in ("thumbnail", "spritesheet"):
            assert client.get(f"/v1/videos/{video_id}/content?variant={variant}").status_code == 200
    assert len(stored(settings)) == 6
    assert client.delete(f"/v1/videos/{job['id']}").json()["deleted"] is True
    assert client.get(f"/v1/videos/{job['id']}/content?variant=thumbnail").status_code == 404
    left = [f"{kept['id']}.mp4", f"{kept['id']}.spritesheet.jpg", f"{kept['id']}.thumbnail.webp"]
    assert stored(settings) == left
    store = client.app.state.videos.store
    real = store._clock
    store._clock = lambda: real() + 7200  # past the bucket's orphan age, before the jobs' expiry
    try:
        store.sweep()
    finally:
        store._clock = real
    assert stored(settings) == left
