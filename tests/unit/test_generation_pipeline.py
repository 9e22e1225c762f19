"""The real diffusers pipeline (the tiny Wan, built offline): loading, describing, generating, cancelling, encoding."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import tiny_wan_capabilities
from video_pipeline import contract as C
from video_pipeline.errors import InvalidInput
from video_pipeline.generation.config import load_config, parse_config
from video_pipeline.generation.encode import encode_mp4, load_image, probe_mp4, to_uint8
from video_pipeline.generation.params import Capabilities, parse_request

MODEL_DIR = Path(__file__).resolve().parents[2] / "model_repository" / "video_generator" / "1"


@pytest.fixture(scope="module")
def generator(tiny_wan: Path):
    from video_pipeline.generation.pipeline import DiffusersGenerator

    return DiffusersGenerator(load_config(MODEL_DIR))


def params(generator, image: bool = False, **raw):
    return parse_request("a red fox runs", raw, generator.capabilities, has_image=image)


def png(width: int = 64, height: int = 64, value: int = 200) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = value
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def run(generator, p, image=None, stop_after: int | None = None):
    steps: list[tuple[int, int]] = []
    frames = generator.generate(p, image, lambda i, n: steps.append((i, n)),
                                lambda: stop_after is not None and len(steps) >= stop_after)
    return frames, steps


# --- what the committed pipeline.json gives --------------------------------------------------------------


def test_the_committed_pipeline_describes_itself_like_the_tiny_wan_capabilities_fake(generator) -> None:
    assert generator.capabilities == tiny_wan_capabilities()  # the frontend tests' fake tells the truth


def test_generate_makes_the_requested_frames_and_reports_every_step(generator) -> None:
    frames, steps = run(generator, params(generator, size="96x64", num_frames=13, num_inference_steps=3, seed=1))
    assert frames.shape == (13, 64, 96, 3) and frames.dtype == np.uint8
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert frames.std() > 0  # real (noisy) pixels, not a constant


def test_the_same_seed_gives_the_same_video_and_another_seed_another(generator) -> None:
    a, _ = run(generator, params(generator, seed=11))
    b, _ = run(generator, params(generator, seed=11))
    c, _ = run(generator, params(generator, seed=12))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_image_to_video_starts_from_the_reference_image(generator) -> None:
    p = params(generator, image=True, seed=3)
    red, _ = run(generator, p, load_image(png(value=255)))
    dark, _ = run(generator, p, load_image(png(value=0)))
    assert red.shape == (9, 64, 64, 3) and not np.array_equal(red, dark)


def test_a_stop_request_ends_generation_between_steps_and_the_pipeline_serves_on(generator) -> None:
    from video_pipeline.generation.pipeline import GenerationCancelled

    p = params(generator, num_inference_steps=8, seed=5)
    with pytest.raises(GenerationCancelled):
        run(generator, p, stop_after=2)
    frames, steps = run(generator, p)  # same seed after a cancel: same output as ever
    again, _ = run(generator, p)
    assert len(steps) == 8 and np.array_equal(frames, again)


def test_flow_shift_applies_to_one_request_and_is_undone_after(generator) -> None:
    before = generator.text_to_video.scheduler.config.flow_shift
    base, _ = run(generator, params(generator, seed=2))
    shifted, _ = run(generator, params(generator, seed=2, flow_shift=1.5))
    assert not np.array_equal(base, shifted)
    assert generator.text_to_video.scheduler.config.flow_shift == before
    assert np.array_equal(base, run(generator, params(generator, seed=2))[0])


def test_extra_params_reach_the_pipeline_call(generator) -> None:
    a, _ = run(generator, params(generator, seed=4, extra_params={"max_sequence_length": 8}))
    b, _ = run(generator, params(generator, seed=4, extra_params={"max_sequence_length": 64}))
    assert a.shape == b.shape  # both run; the pipeline took the argument


def test_one_pipeline_serves_one_request_at_a_time_when_called_from_two_threads(generator) -> None:
    p = params(generator, seed=9, num_inference_steps=3)
    expected, _ = run(generator, p)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(run(generator, p)[0])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and all(np.array_equal(r, expected) for r in results)


# --- the handler (the model's logic) on the real pipeline ---------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.cancelled = False

    def send(self, outputs: dict) -> None:
        self.sent.append(outputs)

    def finish(self, outputs: dict | None = None) -> None:
        if outputs is not None:
            self.sent.append(outputs)
        self.done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done.set()

    def is_cancelled(self) -> bool:
        return self.cancelled


def tensor(value: object) -> np.ndarray:
    return np.array([value], dtype=np.object_ if isinstance(value, bytes) else None)


@pytest.fixture(scope="module")
def handler(generator):
    from video_pipeline.generation.handler import GeneratorHandler

    h = GeneratorHandler(generator)
    yield h
    h.shutdown()


def info_of(outputs: dict) -> dict:
    return json.loads(outputs[C.GENERATION_INFO][0])


def test_handler_streams_progress_then_an_mp4_of_the_requested_shape(handler) -> None:
    sink = Sink()
    handler.submit({C.PROMPT: tensor(b"a fox"), C.GENERATION_PARAMETERS: tensor(
        json.dumps({"size": "64x96", "num_frames": 5, "fps": 10, "num_inference_steps": 2, "seed": 8}).encode())},
        "req-1", sink)
    assert sink.done.wait(60) and sink.error is None
    steps = [(int(o[C.STEP][0]), int(o[C.NUM_STEPS][0]), info_of(o).get("stage")) for o in sink.sent]
    assert steps[:4] == [(0, 2, "started"), (1, 2, "denoising"), (2, 2, "decoding"), (2, 2, "encoding")]
    final = sink.sent[-1]
    info = info_of(final)
    assert (info["width"], info["height"], info["num_frames"], info["fps"], info["seed"]) == (64, 96, 5, 10, 8)
    probe = probe_mp4(bytes(final[C.VIDEO][0]))
    assert (probe["codec"], probe["width"], probe["height"], probe["frames"], probe["fps"]) == ("h264", 64, 96, 5, 10)
    assert all(o[C.VIDEO][0] == b"" for o in sink.sent[:-1])


def test_handler_describes_the_model_when_asked_alone(handler) -> None:
    sink = Sink()
    handler.submit({C.DESCRIBE: np.array([True])}, "d", sink)
    assert Capabilities.from_json(info_of(sink.sent[0])) == tiny_wan_capabilities()


def test_handler_refuses_bad_requests_before_queueing_them(handler) -> None:
    for inputs in ({}, {C.PROMPT: tensor(b"x"), C.GENERATION_PARAMETERS: tensor(b'{"num_frames": 10}')},
                   {C.PROMPT: tensor(b"x"), C.GENERATION_PARAMETERS: tensor(b"{nope")},
                   {C.PROMPT: tensor(b"x"), C.IMAGE: tensor(b"not an image")}):
        with pytest.raises(InvalidInput):
            handler.submit(inputs, "bad", Sink())


def test_handler_stops_a_queued_and_a_running_request_when_aborted_by_id(handler) -> None:
    slow = json.dumps({"num_inference_steps": 100, "size": "256x256", "num_frames": 33}).encode()
    running, queued = Sink(), Sink()
    handler.submit({C.PROMPT: tensor(b"a"), C.GENERATION_PARAMETERS: tensor(slow)}, "run-1", running)
    handler.submit({C.PROMPT: tensor(b"b"), C.GENERATION_PARAMETERS: tensor(slow)}, "wait-1", queued)
    while len(running.sent) < 2:  # started, and one step done
        assert not running.done.is_set(), running.error
        threading.Event().wait(0.01)
    answers = []
    for target in ("wait-1", "run-1", "never-seen"):
        sink = Sink()
        handler.submit({C.ABORT_REQUEST_ID: tensor(target.encode())}, f"{target}-abort", sink)
        answers.append(info_of(sink.sent[0])["aborted"])
    assert answers == [True, True, False]
    assert running.done.wait(60) and queued.done.wait(60)
    assert "cancelled" in str(running.error) and "cancelled while queued" in str(queued.error)
    assert int(running.sent[-1][C.STEP][0]) < 100


def test_handler_stops_a_request_whose_client_cancelled(handler) -> None:
    sink = Sink()
    sink.cancelled = True
    handler.submit({C.PROMPT: tensor(b"a fox")}, "gone", sink)
    assert sink.done.wait(60) and "cancelled" in str(sink.error)


# --- pipeline.json and encoding ------------------------------------------------------------------------------


def test_the_committed_pipeline_json_points_at_the_tiny_wan() -> None:
    config = load_config(MODEL_DIR)
    assert Path(config.model) == Path(__file__).resolve().parents[2] / ".tiny" / "wan"
    assert (config.text_to_video, config.image_to_video, config.served_model_name) == (
        "WanPipeline", "WanImageToVideoPipeline", "tiny-wan")


@pytest.mark.parametrize(("data", "needle"), [
    ({}, "at least \"model\""),
    ({"model": "m", "text_to_video": "WanPipeline", "colour": 1}, "unknown key"),
    ({"model": "m"}, "text_to_video, image_to_video or both"),
    ({"model": "m", "text_to_video": "Wan Pipeline"}, "pipeline class"),
    ({"model": "m", "text_to_video": "WanPipeline", "limits": {"max_frames": 0}}, "positive integer"),
    ({"model": "m", "text_to_video": "WanPipeline", "limits": {"max_seconds": 5}}, "unknown limit"),
    ({"model": "m", "text_to_video": "WanPipeline", "fps": 0}, "fps"),
    ({"model": "m", "text_to_video": "WanPipeline", "setup": {"enable_model_cpu_offload": 1}}, "keyword arguments"),
])
def test_a_bad_pipeline_json_fails_the_load_naming_the_problem(data: dict, needle: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=needle):
        parse_config(data, tmp_path)


def test_a_missing_pipeline_class_or_model_folder_fails_the_load(tmp_path: Path, tiny_wan: Path) -> None:
    from video_pipeline.generation.pipeline import DiffusersGenerator

    with pytest.raises(InvalidInput, match="no pipeline class"):
        DiffusersGenerator(parse_config({"model": str(tiny_wan), "text_to_video": "NoSuchPipeline"}, tmp_path))
    with pytest.raises(InvalidInput, match="cannot load"):
        DiffusersGenerator(parse_config({"model": str(tmp_path / "none"), "text_to_video": "WanPipeline"}, tmp_path))


def test_setup_methods_run_once_on_the_modules_both_pipelines_share(tmp_path: Path, tiny_wan: Path) -> None:
    from video_pipeline.generation.pipeline import DiffusersGenerator

    base = {"model": str(tiny_wan), "text_to_video": "WanPipeline", "image_to_video": "WanImageToVideoPipeline",
            "defaults": {"height": 64, "width": 64, "num_frames": 9, "num_inference_steps": 2}}
    g = DiffusersGenerator(parse_config({**base, "setup": {"vae.enable_tiling": {}}}, tmp_path))
    assert g.text_to_video.vae is g.image_to_video.vae and g.image_to_video.vae.use_tiling
    with pytest.raises(InvalidInput, match="no method vae.enable_magic"):
        DiffusersGenerator(parse_config({**base, "setup": {"vae.enable_magic": {}}}, tmp_path))


def test_encode_keeps_frames_size_and_fractional_fps_when_probed() -> None:
    frames = to_uint8(np.linspace(0, 1, 9 * 32 * 48 * 3, dtype=np.float32).reshape(1, 9, 32, 48, 3))
    assert frames.dtype == np.uint8 and frames.shape == (9, 32, 48, 3) and frames.max() == 255
    probe = probe_mp4(encode_mp4(frames, 24000 / 1001))
    assert (probe["width"], probe["height"], probe["frames"], probe["pix_fmt"]) == (48, 32, 9, "yuv420p")
    assert probe["fps"].numerator == 24000 and probe["fps"].denominator == 1001
    with pytest.raises(InvalidInput):
        encode_mp4(np.zeros((3, 31, 32, 3), dtype=np.uint8), 16)
