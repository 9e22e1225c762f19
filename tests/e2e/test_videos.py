"""Video generation end to end: the OpenAI SDK's videos client -> shim -> tritonserver -> diffusers (tiny Wan).

The real pipeline code runs on a tiny random-weight Wan 2.2 TI2V-class pipeline: the
videos are noise, but every frame count, size, fps, seed and reference image is real.
"""

from __future__ import annotations

import base64
import io
import json
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.servers import serving
from video_pipeline.generation.encode import probe_mp4

pytestmark = pytest.mark.e2e

# Denoising steps that take long enough to watch (and to cancel) while VAE decoding stays short:
# 512x256x17 on the tiny Wan is about 20-40 ms per step on these machines.
SLOW = {"num_inference_steps": 100, "seed": 42}


def png(value: int = 200, size: tuple[int, int] = (96, 64)) -> bytes:
    from PIL import Image

    rgb = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    rgb[..., 1] = value
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def form(**fields: str) -> dict:
    """multipart/form-data text fields, as curl -F sends them (httpx: files without a filename)."""
    return {k: (None, v) for k, v in fields.items()}


def frames_of(mp4: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(mp4)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def same_video(a: np.ndarray, b: np.ndarray) -> bool:
    """The same frames, up to x264's occasional rounding (the pipeline's own frames are bit-identical
    for a seed: tests/unit/test_generation_pipeline.py); different videos differ by tens of levels."""
    return a.shape == b.shape and float(np.abs(a.astype(np.int16) - b).mean()) < 1.0


def wait_done(client: openai.OpenAI, video_id: str, timeout_s: float = 180) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        video = client.videos.retrieve(video_id)
        if video.status in ("completed", "failed"):
            return video
        assert time.monotonic() < deadline, video
        time.sleep(0.05)


def test_sdk_job_progresses_completes_and_downloads_the_requested_video(shim) -> None:
    client = shim.client()
    video = client.videos.create(prompt="a red fox running through snow", size="512x256", seconds="2",
                                 extra_body={"fps": 8, **SLOW})
    assert video.object == "video" and video.status in ("queued", "in_progress") and video.progress == 0
    assert (video.model, video.size, video.seconds) == ("tiny-wan", "512x256", "2")  # as asked
    assert video.to_dict()["duration_s"] == 2.125  # 17 frames at 8 fps
    seen = []
    deadline = time.monotonic() + 180
    while (current := client.videos.retrieve(video.id)).status != "completed":
        assert current.status in ("queued", "in_progress"), current.error
        seen.append(current.progress)
        assert time.monotonic() < deadline
        time.sleep(0.03)
    assert seen == sorted(seen), seen  # never goes back
    assert len({p for p in seen if 0 < p < 100}) >= 2, seen  # rose step by step while denoising
    assert current.progress == 100 and current.completed_at is not None and current.error is None
    mp4 = client.videos.download_content(video.id).content
    probe = probe_mp4(mp4)
    assert (probe["codec"], probe["width"], probe["height"], probe["frames"], probe["fps"]) == ("h264", 512, 256,
                                                                                               17, 8)


def test_sync_endpoint_returns_the_mp4_and_matches_a_job_with_the_same_seed(shim) -> None:
    fields = {"prompt": "waves on a beach", "size": "96x64", "num_frames": "9", "fps": "12", "seed": "5"}
    r = httpx.post(f"{shim.base_url}/v1/videos/sync", files=form(**fields), timeout=180)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4" and r.headers["x-video-seed"] == "5"
    probe = probe_mp4(r.content)
    assert (probe["width"], probe["height"], probe["frames"], probe["fps"]) == (96, 64, 9, 12)
    client = shim.client()
    job = client.videos.create(prompt=fields["prompt"], size="96x64",
                               extra_body={"num_frames": 9, "fps": 12, "seed": 5})
    assert wait_done(client, job.id).status == "completed"
    assert same_video(frames_of(client.videos.download_content(job.id).content), frames_of(r.content))


def test_image_to_video_takes_an_sdk_upload_a_file_id_and_a_data_url(shim) -> None:
    client = shim.client()
    common = {"size": "96x64", "extra_body": {"num_frames": 5, "seed": 9}}
    upload = client.videos.create_and_poll(prompt="make it move", input_reference=("ref.png", png(), "image/png"),
                                           poll_interval_ms=50, **common)
    file_id = client.files.create(file=("ref.png", png(), "image/png"), purpose="vision").id
    # This SDK refuses a dict input_reference client-side; vLLM-Omni's image_reference carries the id
    # (the SDK sends the nested object in bracket notation: image_reference[file_id]=...).
    by_id = client.videos.create_and_poll(prompt="make it move", size="96x64", poll_interval_ms=50,
                                          extra_body={**common["extra_body"], "image_reference": {"file_id": file_id}})
    data_url = "data:image/png;base64," + base64.b64encode(png()).decode()
    r = httpx.post(f"{shim.base_url}/v1/videos/sync", timeout=180,
                   json={"prompt": "make it move", "size": "96x64", "num_frames": 5, "seed": 9,
                         "image_reference": {"image_url": data_url}})
    assert upload.status == by_id.status == "completed" and r.status_code == 200, (upload.error, by_id.error, r.text)
    a = frames_of(client.videos.download_content(upload.id).content)
    b = frames_of(client.videos.download_content(by_id.id).content)
    assert a.shape == (5, 64, 96, 3) and same_video(a, b) and same_video(a, frames_of(r.content))
    other = client.videos.create_and_poll(prompt="make it move", input_reference=("dark.png", png(0), "image/png"),
                                          poll_interval_ms=50, **common)
    text_only = client.videos.create_and_poll(prompt="make it move", poll_interval_ms=50, **common)
    assert not same_video(a, frames_of(client.videos.download_content(other.id).content))  # the image counts
    assert not same_video(a, frames_of(client.videos.download_content(text_only.id).content))


def test_seconds_defaults_to_openais_4_and_the_video_lasts_that_long(shim) -> None:
    client = shim.client()
    video = client.videos.create(prompt="a quiet pond", extra_body={"num_inference_steps": 1})
    assert video.seconds == "4" and video.to_dict()["duration_s"] == 4.0625
    assert wait_done(client, video.id).status == "completed"
    probe = probe_mp4(client.videos.download_content(video.id).content)
    assert (probe["frames"], probe["fps"]) == (65, 16)  # the shortest 4k+1 frame count lasting 4 s at 16 fps


# --- remix, thumbnail, spritesheet ---------------------------------------------------------------------------


def test_remix_regenerates_from_the_sources_first_frame_and_parameters_with_the_new_prompt(shim) -> None:
    from openai_frontend.videos.stills import first_frame_png

    client = shim.client()
    fields = {"seed": 21, "num_inference_steps": 3}
    source = client.videos.create_and_poll(prompt="a red fox", size="96x64", seconds="1", extra_body=fields,
                                           poll_interval_ms=50)
    assert source.status == "completed", source.error
    remix = client.videos.remix(source.id, prompt="a grey wolf")
    assert remix.status in ("queued", "in_progress") and remix.remixed_from_video_id == source.id
    assert (remix.prompt, remix.size, remix.seconds, remix.model) == ("a grey wolf", "96x64", "1", "tiny-wan")
    done = wait_done(client, remix.id)
    assert done.status == "completed" and done.remixed_from_video_id == source.id, done.error
    source_mp4 = client.videos.download_content(source.id).content
    remixed = frames_of(client.videos.download_content(remix.id).content)
    assert remixed.shape == (17, 64, 96, 3) and not same_video(remixed, frames_of(source_mp4))
    # what the remix is: image-to-video from the source's first frame, the source's parameters, the new prompt
    by_hand = client.videos.create_and_poll(prompt="a grey wolf", size="96x64", seconds="1", extra_body=fields,
                                            input_reference=("first.png", first_frame_png(source_mp4), "image/png"),
                                            poll_interval_ms=50)
    assert same_video(remixed, frames_of(client.videos.download_content(by_hand.id).content))
    with pytest.raises(openai.NotFoundError):
        client.videos.remix("video_nope", prompt="x")
    running = client.videos.create(prompt="a slow one", size="512x256", extra_body={"num_frames": 17, **SLOW})
    with pytest.raises(openai.BadRequestError) as info:
        client.videos.remix(running.id, prompt="x")
    assert info.value.body["code"] == "video_not_ready" and info.value.body["param"] == "video_id"  # type: ignore[index]
    client.videos.delete(running.id)


def test_thumbnail_and_spritesheet_download_through_the_sdk_with_range_and_head(shim) -> None:
    from PIL import Image

    client = shim.client()
    video = client.videos.create_and_poll(prompt="a lighthouse", size="128x64", extra_body={"num_frames": 9},
                                          poll_interval_ms=50)
    assert video.status == "completed", video.error
    thumb = client.videos.download_content(video.id, variant="thumbnail")
    assert thumb.response.headers["content-type"] == "image/webp"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.format == "WEBP" and image.size == (128, 64)
    sheet = client.videos.download_content(video.id, variant="spritesheet")
    headers = sheet.response.headers
    assert headers["content-type"] == "image/jpeg" and headers["x-spritesheet-frames"] == "0,1,2,3,4,5,6,7,8"
    image = Image.open(io.BytesIO(sheet.content))
    assert image.format == "JPEG" and image.size == (3 * 128, 3 * 64)
    assert (headers["x-spritesheet-columns"], headers["x-spritesheet-rows"]) == ("3", "3")
    url = f"{shim.base_url}/v1/videos/{video.id}/content"
    head = httpx.head(url, params={"variant": "spritesheet"})
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(sheet.content)
    part = httpx.get(url, params={"variant": "thumbnail"}, headers={"Range": "bytes=0-15"})
    assert part.status_code == 206 and part.content == thumb.content[:16]
    bad = httpx.get(url, params={"variant": "poster"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "variant", bad.text


def test_list_pages_through_jobs_with_the_sdk_cursor(shim) -> None:
    client = shim.client()
    ids = [client.videos.create(prompt=f"clip {i}", extra_body={"num_inference_steps": 1}).id for i in range(3)]
    first = client.videos.list(limit=2)
    assert [v.id for v in first.data] == ids[::-1][:2] and first.has_more
    listed = [v.id for v in client.videos.list(limit=2)]  # the SDK follows after=last_id
    assert listed[:3] == ids[::-1] and len(listed) == len(set(listed))
    for video_id in ids:
        wait_done(client, video_id)


def test_delete_while_running_stops_the_generation_in_the_model(shim) -> None:
    client = shim.client()
    video = client.videos.create(prompt="a slow one", size="512x256", extra_body={"num_frames": 17, **SLOW})
    deadline = time.monotonic() + 120
    while client.videos.retrieve(video.id).progress < 5:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    deleted = client.videos.delete(video.id)
    assert deleted.deleted and deleted.object == "video.deleted" and deleted.id == video.id
    assert time.monotonic() - started < shim.settings.videos_cancel_timeout_s
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    deadline = time.monotonic() + 30
    while f"video request {video.id} cancelled at step" not in shim.triton.log_tail(400):
        assert time.monotonic() < deadline, shim.triton.log_tail(40)
        time.sleep(0.1)
    line = next(x for x in shim.triton.log_tail(400).splitlines() if f"video request {video.id} cancelled" in x)
    assert int(line.split("cancelled at step ")[1].split()[0]) < 100  # stopped long before the last step


@pytest.mark.parametrize(("fields", "param"), [
    ({"size": "48x48"}, "size"),  # a multiple of 16 (Wan 2.1's grid), not of this model's 32
    ({"num_frames": 10}, "num_frames"),  # not 4k+1
    ({"num_frames": 129}, "num_frames"),  # more than the model's limit
    ({"guidance_scale_2": 3.0}, "guidance_scale_2"),  # a two-stage (A14B) field; this model has one stage
    ({"motion_strength": 0.5}, "motion_strength"),  # unknown
])
def test_bad_parameters_are_400_naming_them(shim, fields, param) -> None:
    client = shim.client()
    with pytest.raises(openai.BadRequestError) as info:
        client.videos.create(prompt="a fox", extra_body=fields)
    assert info.value.body["param"] == param, info.value.body  # type: ignore[index]


def test_bad_json_in_extra_params_is_400(shim) -> None:
    r = httpx.post(f"{shim.base_url}/v1/videos", files=form(prompt="a fox", extra_params="{not json"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "extra_params", r.text
    r = httpx.post(f"{shim.base_url}/v1/videos", files=form(prompt="a fox", extra_params='{"strength": 1}'))
    assert r.status_code == 400 and "takes no strength" in r.json()["error"]["message"], r.text


# --- the model for Triton clients ---------------------------------------------------------------------------


def test_triton_clients_can_describe_generate_and_get_errors_from_the_model(shim) -> None:
    import tritonclient.grpc as grpcclient

    def tensor(name: str, value: object, dtype: str = "BYTES") -> grpcclient.InferInput:
        t = grpcclient.InferInput(name, [1], dtype)
        t.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else np.bool_))
        return t

    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(shim.triton.grpc_url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("video_generator", [tensor("describe", True, "BOOL")], request_id="describe-1")
        result, error = answers.get(timeout=30)
        caps = json.loads(result.as_numpy("generation_info")[0])
        assert error is None and caps["model"] == "tiny-wan" and caps["size_multiple"] == 32
        params = json.dumps({"size": "64x32", "num_frames": 5, "num_inference_steps": 2, "seed": 1}).encode()
        client.async_stream_infer("video_generator", [tensor("prompt", b"a fox"),
                                                      tensor("generation_parameters", params)], request_id="gen-1")
        steps = []
        while True:
            result, error = answers.get(timeout=120)
            assert error is None, error
            steps.append(int(result.as_numpy("step")[0]))
            video = result.as_numpy("video")[0]
            if video:
                break
        assert steps[0] == 0 and steps[-1] == 2
        probe = probe_mp4(bytes(video))
        assert (probe["width"], probe["height"], probe["frames"]) == (64, 32, 5)
        client.async_stream_infer("video_generator", [tensor("prompt", b"a fox"),
                                                      tensor("generation_parameters", b'{"num_frames": 6}')])
        _result, error = answers.get(timeout=30)
        assert error is not None and "4k+1" in error.message()
    finally:
        client.stop_stream()
        client.close()


# --- restarts --------------------------------------------------------------------------------------------------


@contextmanager
def serve(settings, grpc_url: str) -> Iterator[str]:
    """Another shim (its own app, port and store) on the session's tritonserver."""
    from openai_frontend.app import create_app
    from openai_frontend.backend.triton import TritonBackend

    with serving(create_app(settings, TritonBackend(grpc_url, timeout_s=120)), settings.port, "restart-shim") as url:
        yield url


def test_jobs_survive_a_shim_restart(shim, tmp_path: Path) -> None:
    from video_pipeline.launch import free_port

    settings = shim.settings.with_(files_dir=str(tmp_path / "store"), port=free_port())
    with serve(settings, shim.triton.grpc_url) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        done = client.videos.create_and_poll(prompt="kept", size="96x64", extra_body={"num_frames": 5},
                                             poll_interval_ms=50)
        content = client.videos.download_content(done.id).content
        running = client.videos.create(prompt="cut short", size="512x256", extra_body={"num_frames": 17, **SLOW})
        while client.videos.retrieve(running.id).progress < 5:
            time.sleep(0.02)
    # The first shim is gone (its running job was cancelled in the model); a new one opens the same store.
    with serve(settings.with_(port=free_port()), shim.triton.grpc_url) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        again = client.videos.retrieve(done.id)
        assert again.status == "completed" and client.videos.download_content(done.id).content == content
        failed = client.videos.retrieve(running.id)
        assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_restarted"
        assert [v.id for v in client.videos.list().data] == [running.id, done.id]
