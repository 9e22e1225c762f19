"""Audio in the pipeline: PyAV decode and resample (video_pipeline.media.audio), the model's rate
from its folder, the llm handler's `audio` input and use_audio_in_video, vLLM's multi_modal_data."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import numpy as np
import pytest

from openai_frontend.outputs.plan import video_plan
from tests import bad_media
from tests.built_once import built_once
from tests.unit.test_engine_background import FakeEngine
from tests.unit.test_llm_handler_media import INFO, Media, Sink
from tests.videos import ClipSpec, make_audio_only, make_video
from video_pipeline import contract as C
from video_pipeline.engines.background import BackgroundEngine
from video_pipeline.engines.prompt import mm_processor_kwargs, multi_modal_data, normalize_messages
from video_pipeline.engines.types import AudioInput, GenerationRequest, VideoInput
from video_pipeline.errors import InvalidInput, MediaTooLarge, UnsupportedMedia
from video_pipeline.llm_handler import LlmHandler
from video_pipeline.media.audio import AudioSettings, decode_audio, probe_audio, read_audio_settings
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.steps import json_tensor

AUDIO16 = AudioSettings(sampling_rate=16000, feature_extractor="WhisperFeatureExtractor", chunk_length=30,
                        source="test")


def test_decode_audio_gives_mono_float32_at_the_asked_rate_when_the_source_differs() -> None:
    clip = decode_audio(bad_media.wav_tone(1.0, rate=44100), 16000)
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert abs(clip.samples.shape[0] - 16000) <= 2 and clip.source_rate == 44100
    assert 0.25 < float(np.abs(clip.samples).max()) < 0.35  # the tone's 0.3, not clipped or scaled
    span = clip.span()
    assert span["sampling_rate"] == 16000 and span["num_samples"] == clip.samples.shape[0] and span["start"] == 0


def test_decode_audio_takes_the_window_when_start_and_end_are_given() -> None:
    clip = decode_audio(make_audio_only("aac", "mp4", 1.0), 16000, start=0.25, end=0.75)
    assert clip.samples.shape[0] == 8000 and clip.start == 0.25 and clip.end == pytest.approx(0.75)


def test_decode_audio_decodes_the_track_of_a_video_when_it_has_one() -> None:
    clip = decode_audio(make_video(ClipSpec(audio="aac")), 16000)
    assert clip.samples.shape[0] > 16000 and clip.codec == "aac"


@pytest.mark.parametrize(("data", "error", "needle"), [
    (b"<html>not audio</html>" * 20, UnsupportedMedia, "not audio"),
    (b"", UnsupportedMedia, "not audio"),
    (make_video(ClipSpec()), UnsupportedMedia, "no audio track"),
    (bad_media.png_header(64, 64), UnsupportedMedia, "audio"),
])
def test_decode_audio_raises_typed_errors_when_the_data_is_not_audio(data, error, needle) -> None:
    with pytest.raises(error, match=needle):
        decode_audio(data, 16000)
    with pytest.raises(UnsupportedMedia):
        probe_audio(data)


def test_decode_audio_raises_media_too_large_when_longer_than_the_limit() -> None:
    with pytest.raises(MediaTooLarge, match="the limit"):
        decode_audio(bad_media.wav_tone(2.0), 16000, max_seconds=1.0)


def test_decode_audio_counts_samples_not_the_header_when_the_header_lies() -> None:
    # FFmpeg sizes a WAV by its bytes, not the declared data chunk: the header's 3 hours count for nothing
    assert probe_audio(bad_media.wav_header_lying_long()).duration == pytest.approx(0.1)
    clip = decode_audio(bad_media.wav_header_lying_long(), 16000, max_seconds=1.0)
    assert clip.samples.shape[0] == 1600  # its 3200 bytes of 16-bit samples


def test_decode_audio_raises_invalid_input_when_the_window_is_empty() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_audio(bad_media.wav_tone(), 16000, start=2, end=1)
    with pytest.raises(InvalidInput, match="nothing between"):
        decode_audio(bad_media.wav_tone(0.5), 16000, start=5)


def test_read_audio_settings_finds_the_feature_extractor_when_the_folder_has_one(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "WhisperFeatureExtractor", "sampling_rate": 16000, "chunk_length": 30,
         "image_processor_type": "Qwen2VLImageProcessor"}))
    found = read_audio_settings(tmp_path)
    assert found is not None and found.sampling_rate == 16000 and found.chunk_length == 30
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "processor_config.json").write_text(json.dumps(
        {"feature_extractor": {"feature_extractor_type": "WhisperFeatureExtractor", "sampling_rate": 24000}}))
    assert read_audio_settings(nested).sampling_rate == 24000  # type: ignore[union-attr]


def test_read_audio_settings_is_none_when_the_model_has_no_feature_extractor(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 3136, "patch_size": 14}))
    assert read_audio_settings(tmp_path) is None
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 80, "sampling_rate": "fast"}))
    with pytest.raises(InvalidInput, match="sampling_rate"):
        read_audio_settings(tmp_path)


def test_media_settings_keep_their_cache_key_when_the_audio_rate_is_added() -> None:
    assert MediaSettings().key() == MediaSettings(audio_sampling_rate=16000).key()
    assert MediaSettings.from_dict(MediaSettings(audio_sampling_rate=16000).to_dict()).audio_sampling_rate == 16000


def test_multi_modal_data_holds_samples_and_rate_when_the_request_has_audio() -> None:
    samples = np.zeros(1600, np.float32)
    request = GenerationRequest(request_id="r", messages=[{"role": "user", "content": [{"type": "audio"}]}],
                                audios=[AudioInput(samples, 16000)])
    (item,) = multi_modal_data(request)["audio"]
    assert item[0] is samples and item[1] == 16000
    assert mm_processor_kwargs(request) == {}
    assert normalize_messages(request.messages)[0]["content"] == [{"type": "audio", "audio": ""}]


def test_multi_modal_data_pairs_each_video_with_its_track_when_use_audio_in_video() -> None:
    meta = {"fps": 2.0, "duration": 1.0, "total_num_frames": 2, "frames_indices": [0, 1]}
    track = AudioInput(np.ones(800, np.float32), 16000)
    video = VideoInput(np.zeros((2, 28, 28, 3), np.uint8), meta, audio=track)
    request = GenerationRequest(request_id="r", messages=[{"role": "user", "content": [{"type": "video"}]}],
                                videos=[video])
    assert multi_modal_data(request)["audio"] == [track.as_vllm()]
    assert mm_processor_kwargs(request) == {"use_audio_in_video": True}
    with pytest.raises(InvalidInput, match="cannot be combined"):
        GenerationRequest(request_id="r", messages=[], videos=[video], audios=[track])


class RecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__(tokens=2)
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncGenerator:  # type: ignore[override]
        self.requests.append(request)
        async for delta in super().generate(request):
            yield delta


@pytest.fixture
def recording() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def engine(recording: RecordingEngine) -> Iterator[BackgroundEngine]:
    eng = BackgroundEngine(lambda: recording)
    yield eng
    eng.shutdown()


def _messages(*parts: dict) -> np.ndarray:
    return json_tensor([[{"role": "user", "content": [*parts, {"type": "text", "text": "?"}]}]])


def test_handler_decodes_audio_to_the_model_rate_when_given_audio(engine, recording) -> None:
    handler = LlmHandler(engine, None, AUDIO16)
    sink = Sink()
    handler.submit({C.MESSAGES: _messages({"type": "audio"}),
                    C.AUDIO: np.array([bad_media.wav_tone(0.5, rate=8000)], dtype=np.object_)}, "a-1", sink)
    assert sink.done.wait(20) and sink.error is None, sink.error
    (audio,) = recording.requests[-1].audios
    assert audio.sampling_rate == 16000 and abs(audio.samples.shape[0] - 8000) <= 2
    assert all(C.VIDEO_INFO not in s for s in sink.sent)  # no video: no video_info response


def test_handler_refuses_audio_naming_it_when_the_model_takes_none(engine) -> None:
    handler = LlmHandler(engine, None, None)
    with pytest.raises(InvalidInput) as caught:
        handler.submit({C.MESSAGES: _messages({"type": "audio"}),
                        C.AUDIO: np.array([bad_media.wav_tone()], dtype=np.object_)}, "a-2", Sink())
    assert (caught.value.triton_code, caught.value.kind, caught.value.index, str(caught.value)) == (
        "INVALID_ARG", "audio", 0, "audio 0: this model takes no audio (its folder has no feature extractor)")


def test_handler_fails_the_request_with_a_media_error_when_the_audio_is_not_audio(engine) -> None:
    handler = LlmHandler(engine, None, AUDIO16)
    sink = Sink()
    handler.submit({C.MESSAGES: _messages({"type": "audio"}, {"type": "audio"}),
                    C.AUDIO: np.array([bad_media.wav_tone(), b"<html>" * 40], dtype=np.object_)}, "a-3", sink)
    assert sink.done.wait(20)
    assert sink.error.triton_code == "UNSUPPORTED" and str(sink.error).startswith("audio 1: ")
    assert (sink.error.kind, sink.error.index) == ("audio", 1)


class TrackMedia(Media):
    """Answers one video whose window is 0.5..1.5 s."""

    def __call__(self, video, options, request_id):  # type: ignore[override]
        super().__call__(video, options, request_id)
        info = {**INFO, "duration": 2.0, "sampling": {"start": 0.5, "end": 1.5}}
        return np.zeros((2, 28, 28, 3), np.uint8), [info]


def test_handler_sends_the_video_track_over_its_window_when_use_audio_in_video(engine, recording) -> None:
    handler = LlmHandler(engine, TrackMedia(), AUDIO16)
    sink = Sink()
    clip = make_video(ClipSpec(audio="aac"))
    handler.submit({C.MESSAGES: _messages({"type": "video", C.USE_AUDIO_IN_VIDEO: True}),
                    C.VIDEO: np.array([clip], dtype=np.object_), C.VIDEO_OPTIONS: json_tensor([{}])}, "a-4", sink)
    assert sink.done.wait(20) and sink.error is None, sink.error
    (video,) = recording.requests[-1].videos
    assert video.audio is not None and video.audio.samples.shape[0] == 16000  # 1.0 s at 16 kHz
    info = json.loads(sink.sent[0][C.VIDEO_INFO][0])
    assert info[C.AUDIO_SPAN]["start"] == 0.5 and info[C.AUDIO_SPAN]["end"] == pytest.approx(1.5)
    assert info[C.AUDIO_SPAN]["num_samples"] == 16000 and info[C.AUDIO_SPAN]["sampling_rate"] == 16000
    (entry,) = video_plan([info])  # the answer's video_plan shows the span
    assert entry["audio"]["num_samples"] == 16000 and entry["audio"]["start"] == 0.5


def test_handler_refuses_use_audio_in_video_when_the_video_has_no_track(engine) -> None:
    handler = LlmHandler(engine, TrackMedia(), AUDIO16)
    sink = Sink()
    handler.submit({C.MESSAGES: _messages({"type": "video", C.USE_AUDIO_IN_VIDEO: True}),
                    C.VIDEO: np.array([make_video(ClipSpec())], dtype=np.object_)}, "a-5", sink)
    assert sink.done.wait(20)
    assert str(sink.error).startswith("video 0: ") and (sink.error.kind, sink.error.index) == ("video", 0)


def test_handler_refuses_use_audio_in_video_when_given_decoded_frames(engine) -> None:
    handler = LlmHandler(engine, TrackMedia(), AUDIO16)
    with pytest.raises(InvalidInput, match="container bytes"):
        handler.submit({C.MESSAGES: _messages({"type": "video", C.USE_AUDIO_IN_VIDEO: True}),
                        C.VIDEO_FRAMES: np.zeros((2, 28, 28, 3), np.uint8), C.VIDEO_INFO: json_tensor([INFO])},
                       "a-6", Sink())


# --- an audio-only model (Qwen2-Audio) and audio parts named by uuid -----------------------------------------------


def test_media_settings_of_an_audio_model_take_no_video_or_images_and_keep_the_audio_rate() -> None:
    from tests.conftest import ROOT
    from video_pipeline.engines import tiny_audio
    from video_pipeline.media.model_media import load_media_settings

    media = load_media_settings(built_once(ROOT / ".tiny" / "qwen2_audio", tiny_audio.build))
    assert (media.family, media.sizing, media.audio_sampling_rate, media.takes_visual) == ("qwen2_audio", "none",
                                                                                            16000, False)
    for call in (lambda: media.video_size(8, 360, 640), lambda: media.image_size(360, 640)):
        with pytest.raises(InvalidInput, match="takes no video or images"):
            call()
    assert MediaSettings.from_dict(media.to_dict()).takes_visual is False  # as the shim reads it


def test_decode_request_audio_caches_parts_named_by_a_uuid_and_serves_the_uuid_alone_from_there() -> None:
    from video_pipeline.llm_handler import ImageCache, decode_request_audio

    cache = ImageCache(size=lambda item: int(item.samples.nbytes))
    first, uuids = decode_request_audio([bad_media.wav_tone()], AudioSettings(16000, "test", None, "test"), 60, ["t:tone"], cache)
    assert uuids[0] is not None and uuids[0].startswith("vlt-aud-")
    again, again_uuids = decode_request_audio([b""], AudioSettings(16000, "test", None, "test"), 60, ["t:tone"], cache)
    assert np.array_equal(again[0].samples, first[0].samples) and again_uuids == uuids
    with pytest.raises(InvalidInput, match="audio 0: uuid 'other': no audio is cached"):
        decode_request_audio([b""], AudioSettings(16000, "test", None, "test"), 60, ["t:other"], cache)
    plain, plain_uuids = decode_request_audio([bad_media.wav_tone()], AudioSettings(16000, "test", None, "test"), 60)
    assert plain_uuids == [None] and plain[0].sampling_rate == 16000
