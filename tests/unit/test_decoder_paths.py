"""video_decoder reading a video by path under its media_root instead of receiving the bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.videos import ClipSpec, make_video, read_indices
from video_pipeline.errors import InvalidInput, MediaTooLarge
from video_pipeline.steps import MEDIA_ROOT_ENV, DecoderStep, PreprocessorStep

CLIP = ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(CLIP)


def inputs(videos: list[bytes], options: list[dict]) -> dict:
    return {"video": np.array(videos, dtype=np.object_),
            "video_options": np.array([json.dumps(o).encode() for o in options], dtype=np.object_)}


def step(root: Path | None, tmp_path: Path, **params: str) -> DecoderStep:
    base = {"cache_max_bytes": str(10**8), "cache_dir": str(tmp_path / "cache")}
    return DecoderStep({**base, **({"media_root": str(root)} if root else {}), **params})


def test_decoder_reads_a_path_under_media_root_when_the_bytes_are_empty(tmp_path, clip) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "a.mp4").write_bytes(clip)
    by_path = step(tmp_path / "root", tmp_path)(inputs([b""], [{"num_frames": 4, "path": "a.mp4"}]))
    by_bytes = DecoderStep({})(inputs([clip], [{"num_frames": 4}]))
    assert np.array_equal(by_path["frames"], by_bytes["frames"])
    assert read_indices(by_path["frames"]) == read_indices(by_bytes["frames"])
    absolute = step(tmp_path / "root", tmp_path / "c2")(
        inputs([b""], [{"num_frames": 4, "path": str(tmp_path / "root" / "a.mp4")}]))
    assert np.array_equal(absolute["frames"], by_bytes["frames"])


def test_decoder_mixes_paths_and_bytes_when_one_request_has_both(tmp_path, clip) -> None:
    (tmp_path / "a.mp4").write_bytes(clip)
    out = step(tmp_path, tmp_path)(inputs([b"", clip], [{"num_frames": 3, "path": "a.mp4"}, {"num_frames": 5}]))
    meta = [json.loads(m) for m in out["video_metadata"]]
    assert [m["num_frames"] for m in meta] == [3, 5]


def test_preprocessor_ignores_the_path_when_the_options_name_one(tmp_path, clip) -> None:
    (tmp_path / "a.mp4").write_bytes(clip)
    options = [{"num_frames": 4, "path": "a.mp4"}]
    decoded = step(tmp_path, tmp_path)(inputs([b""], options))
    out = PreprocessorStep({})({**decoded, "video_options": inputs([b""], options)["video_options"]})
    assert out["video_frames"].shape[0] == 4


@pytest.mark.parametrize(("path", "message"), [
    ("../outside.mp4", "outside"),
    ("/etc/passwd", "outside"),
    ("link.mp4", "outside"),  # a symlink out of the root
    ("missing.mp4", "no such file"),
    (".", "no such file"),  # a directory
    ("", "non-empty string"),
])
def test_decoder_refuses_a_path_when_it_leaves_media_root_or_is_no_file(tmp_path, clip, path, message) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.mp4").write_bytes(clip)
    (root / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    with pytest.raises(InvalidInput, match=message):
        step(root, tmp_path)(inputs([b""], [{"num_frames": 2, "path": path}]))


def test_decoder_refuses_paths_when_no_media_root_is_configured(tmp_path, clip, monkeypatch) -> None:
    monkeypatch.delenv(MEDIA_ROOT_ENV, raising=False)
    (tmp_path / "a.mp4").write_bytes(clip)
    with pytest.raises(InvalidInput, match="takes no paths"):
        step(None, tmp_path)(inputs([b""], [{"num_frames": 2, "path": str(tmp_path / "a.mp4")}]))
    monkeypatch.setenv(MEDIA_ROOT_ENV, str(tmp_path))  # the launcher's way of setting it
    out = step(None, tmp_path)(inputs([b""], [{"num_frames": 2, "path": "a.mp4"}]))
    assert out["frames"].shape[0] == 2


def test_decoder_refuses_bytes_and_a_path_together_and_files_over_the_input_budget(tmp_path, clip) -> None:
    (tmp_path / "a.mp4").write_bytes(clip)
    with pytest.raises(InvalidInput, match="not both"):
        step(tmp_path, tmp_path)(inputs([clip], [{"path": "a.mp4"}]))
    with pytest.raises(MediaTooLarge, match="limit"):
        step(tmp_path, tmp_path, max_input_bytes=str(len(clip) - 1))(inputs([b""], [{"path": "a.mp4"}]))


def test_decoder_caches_a_stored_blob_under_its_content_hash_when_given_its_path(tmp_path, clip) -> None:
    digest = hashlib.sha256(clip).hexdigest()
    blob = tmp_path / "blobs" / digest[:2] / digest[2:]
    blob.parent.mkdir(parents=True)
    blob.write_bytes(clip)
    decoder = step(tmp_path, tmp_path)
    first = decoder(inputs([b""], [{"num_frames": 4, "path": f"blobs/{digest[:2]}/{digest[2:]}"}]))
    again = decoder(inputs([clip], [{"num_frames": 4}]))  # the same bytes sent whole: the same entry
    assert [json.loads(m)["cache"] for m in (first["video_metadata"][0], again["video_metadata"][0])] == [
        "miss", "hit"]
    other = tmp_path / "b.mp4"  # not a blob: hashed by reading it, so the same entry again
    other.write_bytes(clip)
    assert json.loads(decoder(inputs([b""], [{"num_frames": 4, "path": "b.mp4"}]))["video_metadata"][0])[
        "cache"] == "hit"
