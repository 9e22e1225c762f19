"""The media cache: hits, misses, one decode per key across threads and processes, LRU by bytes."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.videos import ClipSpec, make_video, read_indices
from video_pipeline.cache import Entry, MediaCache, cache_key, default_root
from video_pipeline.errors import MediaTooLarge
from video_pipeline.steps import DecoderStep, PreprocessorStep

KEY_A, KEY_B, KEY_C = (cache_key(x) for x in ("a", "b", "c"))


class Observer:
    def __init__(self) -> None:
        self.hits = self.misses = self.evictions = 0
        self.bytes = self.entries = -1

    def hit(self) -> None:
        self.hits += 1

    def miss(self) -> None:
        self.misses += 1

    def evicted(self, entries: int) -> None:
        self.evictions += entries

    def size(self, nbytes: int, entries: int) -> None:
        self.bytes, self.entries = nbytes, entries


def _entry(value: int, nbytes: int = 1000) -> Entry:
    return Entry({"frames": np.full(nbytes, value, dtype=np.uint8), "times": np.arange(3, dtype=np.float64)},
                 {"value": value})


def test_cache_returns_the_stored_entry_when_the_key_repeats(tmp_path: Path) -> None:
    seen = Observer()
    cache = MediaCache(tmp_path / "c", 10**6, observer=seen)
    calls = []
    first, status = cache.get_or_compute(KEY_A, lambda: calls.append(1) or _entry(7))
    assert status == "miss" and calls == [1]
    again, status = cache.get_or_compute(KEY_A, lambda: calls.append(2) or _entry(8))
    assert status == "hit" and calls == [1]
    assert isinstance(again.arrays["frames"], np.memmap)  # mapped, not copied
    assert np.array_equal(again.arrays["frames"], first.arrays["frames"]) and again.meta == {"value": 7}
    assert np.array_equal(again.arrays["times"], [0.0, 1.0, 2.0])
    assert (seen.hits, seen.misses, seen.entries) == (1, 1, 1) and seen.bytes > 1000
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_cache_computes_every_time_when_max_bytes_is_zero(tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "c", 0)
    assert [cache.get_or_compute(KEY_A, lambda: _entry(1))[1] for _ in range(2)] == ["off", "off"]
    assert not (tmp_path / "c").exists()


def test_cache_computes_once_when_threads_ask_for_the_same_key_at_once(tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "c", 10**6)
    calls = []

    def slow() -> Entry:
        calls.append(1)
        time.sleep(0.3)
        return _entry(3)

    results: list[tuple[Entry, str]] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute(KEY_A, slow))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(s for _, s in results) == ["hit"] * 5 + ["miss"]
    assert all(np.array_equal(e.arrays["frames"], results[0][0].arrays["frames"]) for e, _ in results)
    assert cache.stats.waits == 5


def _worker(root: str, key: str, marks: str, out: multiprocessing.Queue) -> None:
    cache = MediaCache(root, 10**6)

    def compute() -> Entry:
        with open(marks, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return _entry(9)

    entry, status = cache.get_or_compute(key, compute)
    out.put((status, int(entry.arrays["frames"][0])))


def test_cache_computes_once_when_processes_ask_for_the_same_key_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    marks = tmp_path / "marks"
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "c"), KEY_B, str(marks), out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert len(marks.read_text().split()) == 1  # one process decoded
    assert sorted(results) == [("hit", 9), ("hit", 9), ("miss", 9)]


def test_cache_evicts_the_least_recently_used_when_over_max_bytes(tmp_path: Path) -> None:
    seen = Observer()
    cache = MediaCache(tmp_path / "c", 3000, observer=seen)  # room for two entries of ~1.4 kB
    cache.get_or_compute(KEY_A, lambda: _entry(1))
    time.sleep(0.01)
    cache.get_or_compute(KEY_B, lambda: _entry(2))
    time.sleep(0.01)
    assert cache.get_or_compute(KEY_A, lambda: _entry(0))[1] == "hit"  # A is now the most recent
    time.sleep(0.01)
    cache.get_or_compute(KEY_C, lambda: _entry(3))  # evicts B
    assert cache.get_or_compute(KEY_A, lambda: _entry(0))[1] == "hit"
    assert cache.get_or_compute(KEY_C, lambda: _entry(0))[1] == "hit"
    assert cache.get_or_compute(KEY_B, lambda: _entry(2))[1] == "miss"
    assert seen.evictions >= 1 and seen.bytes <= 3000 and cache.stats.bytes <= 3000


def test_cache_does_not_store_an_entry_larger_than_the_whole_cache(tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "c", 500)
    assert cache.get_or_compute(KEY_A, lambda: _entry(1, 1000))[1] == "miss"
    assert cache.get_or_compute(KEY_A, lambda: _entry(1, 1000))[1] == "miss"
    assert cache.stats.entries == 0


def test_cache_recomputes_when_an_entry_is_damaged(tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "c", 10**6)
    cache.get_or_compute(KEY_A, lambda: _entry(1))
    frames = tmp_path / "c" / "entries" / KEY_A / "frames.npy"
    frames.write_bytes(frames.read_bytes()[:200])  # truncated
    entry, status = cache.get_or_compute(KEY_A, lambda: _entry(2))
    assert status == "miss" and entry.meta == {"value": 2}
    assert cache.get_or_compute(KEY_A, lambda: _entry(3))[0].meta == {"value": 2}


def test_cache_serves_by_computing_when_its_folder_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = MediaCache(blocker / "c", 10**6)
    entry, status = cache.get_or_compute(KEY_A, lambda: _entry(5))
    assert status == "off" and entry.meta == {"value": 5}


def test_cache_propagates_the_error_and_stores_nothing_when_compute_fails(tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "c", 10**6)

    def boom() -> Entry:
        raise MediaTooLarge("too big")

    with pytest.raises(MediaTooLarge):
        cache.get_or_compute(KEY_A, boom)
    assert cache.get_or_compute(KEY_A, lambda: _entry(1))[1] == "miss"


def test_cache_removes_its_own_folder_when_the_last_user_closes(tmp_path: Path) -> None:
    root = tmp_path / "vlt-media-cache-1"
    a, b = MediaCache(root, 10**6, owned=True), MediaCache(root, 10**6, owned=True)
    a.get_or_compute(KEY_A, lambda: _entry(1))
    assert b.get_or_compute(KEY_A, lambda: _entry(2))[1] == "hit"
    a.close()
    assert root.exists()  # b still holds it
    b.close()
    assert not root.exists()


def test_cache_removes_folders_of_gone_servers_when_it_opens(tmp_path: Path) -> None:
    gone = tmp_path / "vlt-media-cache-999999"
    (gone / "entries").mkdir(parents=True)
    (gone / "alive").write_text("")
    elsewhere = tmp_path / "not-ours"
    elsewhere.mkdir()
    live = MediaCache(tmp_path / "vlt-media-cache-5", 10**6, owned=True)
    live.get_or_compute(KEY_A, lambda: _entry(1))
    other = MediaCache(tmp_path / "vlt-media-cache-6", 10**6, owned=True)
    other.get_or_compute(KEY_A, lambda: _entry(1))
    assert not gone.exists() and elsewhere.exists()
    assert (tmp_path / "vlt-media-cache-5").exists()  # held by `live`: not an orphan
    live.close()
    other.close()


def test_default_root_names_the_server_process_when_in_dev_shm() -> None:
    assert default_root().name == f"vlt-media-cache-{os.getppid()}"


# --- the decoder step ----------------------------------------------------------------------------

CLIP = ClipSpec(width=160, height=120, fps=10, num_frames=60, gop=10)


def _step(tmp_path: Path, observer: Observer | None = None, **params: str) -> DecoderStep:
    return DecoderStep({"cache_max_bytes": str(10**8), "cache_dir": str(tmp_path / "cache"), **params},
                       observer=observer)


def _inputs(video: bytes, options: dict) -> dict:
    return {"video": np.array([video], dtype=np.object_),
            "video_options": np.array([json.dumps(options).encode()], dtype=np.object_)}


def _meta(out: dict) -> dict:
    return json.loads(out["video_metadata"][0])


def test_decoder_step_answers_identically_from_the_cache_when_asked_again(tmp_path: Path) -> None:
    seen = Observer()
    step = _step(tmp_path, seen)
    video = make_video(CLIP)
    first = step(_inputs(video, {"num_frames": 5}))
    again = step(_inputs(video, {"num_frames": 5}))
    assert (_meta(first)["cache"], _meta(again)["cache"]) == ("miss", "hit")
    assert (seen.hits, seen.misses) == (1, 1)
    for name in ("frames", "timestamps", "frame_indices"):
        assert np.array_equal(first[name], again[name])
    assert read_indices(again["frames"]) == again["frame_indices"].tolist()
    assert len(again["frame_indices"]) == 5
    strip = ("cache",)
    assert {k: v for k, v in _meta(first).items() if k not in strip} == \
        {k: v for k, v in _meta(again).items() if k not in strip}


@pytest.mark.parametrize("other", [{"num_frames": 6}, {"num_frames": 5, "start": 1.0}, {"fps": 1},
                                   {"num_frames": 5, "max_pixels": 112 * 112}, {"num_frames": 5, "resize": False},
                                   {"num_frames": 5, "mode": "keyframe"}, {"num_frames": 5, "end": 5.9}])
def test_decoder_step_misses_when_any_option_differs(tmp_path: Path, other: dict) -> None:
    step = _step(tmp_path)
    video = make_video(CLIP)
    base = step(_inputs(video, {"num_frames": 5}))
    out = step(_inputs(video, other))
    assert _meta(out)["cache"] == "miss" and _meta(out)["cache_key"] != _meta(base)["cache_key"]
    assert read_indices(out["frames"]) == out["frame_indices"].tolist()


def test_decoder_step_hits_when_defaults_are_spelled_out(tmp_path: Path) -> None:
    step = _step(tmp_path)
    video = make_video(CLIP)
    step(_inputs(video, {}))
    assert _meta(step(_inputs(video, {"fps": 2.0, "max_frames": 768})))["cache"] == "hit"


def test_decoder_step_misses_when_the_bytes_differ(tmp_path: Path) -> None:
    step = _step(tmp_path)
    step(_inputs(make_video(CLIP), {"num_frames": 5}))
    other = make_video(ClipSpec(width=160, height=120, fps=10, num_frames=60, gop=10, rotation=180))
    assert _meta(step(_inputs(other, {"num_frames": 5})))["cache"] == "miss"


def test_decoder_step_misses_when_the_server_limits_differ(tmp_path: Path) -> None:
    video = make_video(CLIP)
    _step(tmp_path)(_inputs(video, {"num_frames": 5}))
    assert _meta(_step(tmp_path, max_sampled_frames="100")(_inputs(video, {"num_frames": 5})))["cache"] == "miss"
    assert _meta(_step(tmp_path, decode_timeout_s="30")(_inputs(video, {"num_frames": 5})))["cache"] == "hit"


def test_decoder_step_still_refuses_a_request_over_budget_when_it_is_cached(tmp_path: Path) -> None:
    video = make_video(CLIP)
    _step(tmp_path)(_inputs(video, {"num_frames": 50}))
    with pytest.raises(MediaTooLarge, match="at most 10"):
        _step(tmp_path, max_sampled_frames="10")(_inputs(video, {"num_frames": 50}))


def test_decoder_step_keeps_the_cache_off_when_not_configured(tmp_path: Path) -> None:
    out = DecoderStep({})(_inputs(make_video(CLIP), {"num_frames": 2}))
    assert _meta(out)["cache"] == "off" and len(_meta(out)["cache_key"]) == 64


@pytest.mark.parametrize("bad", ["-1", "lots"])
def test_decoder_step_refuses_to_load_when_cache_size_is_bad(bad: str) -> None:
    from video_pipeline.errors import InvalidInput

    with pytest.raises(InvalidInput, match="cache_max_bytes"):
        DecoderStep({"cache_max_bytes": bad})


def test_preprocessor_gives_equal_uuids_when_the_cache_key_and_size_are_equal(tmp_path: Path) -> None:
    step, pre = _step(tmp_path), PreprocessorStep({})
    video = make_video(CLIP)
    infos = []
    for options in ({"num_frames": 4}, {"num_frames": 4}, {"num_frames": 3}):
        out = pre({**step(_inputs(video, options)), "video_options": _inputs(video, options)["video_options"]})
        infos.append(json.loads(out["video_info"][0]))
    assert infos[0]["uuid"] == infos[1]["uuid"] != infos[2]["uuid"]
    assert infos[0]["uuid"].startswith("vlt-")
    assert [i["cache"] for i in infos] == ["miss", "hit", "miss"]
    assert infos[0]["sampling"]["rule"] == "num_frames" and infos[0]["sampling"]["max_pixels"] > 0


def test_cache_sets_its_folder_up_again_when_it_was_removed_under_it(tmp_path: Path) -> None:
    import shutil

    cache = MediaCache(tmp_path / "c", 10**6)
    cache.get_or_compute(KEY_A, lambda: _entry(1))
    shutil.rmtree(tmp_path / "c")
    assert cache.get_or_compute(KEY_A, lambda: _entry(2))[1] == "off"  # served, not failed
    assert cache.get_or_compute(KEY_A, lambda: _entry(3))[1] == "miss"
    assert cache.get_or_compute(KEY_A, lambda: _entry(4))[0].meta == {"value": 3}
