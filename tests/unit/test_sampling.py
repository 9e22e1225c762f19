"""Which frames get sampled: pure timestamp math, no video needed."""

from __future__ import annotations

import numpy as np
import pytest

from video_pipeline.errors import InvalidInput
from video_pipeline.media.options import VideoOptions
from video_pipeline.media.sampling import (
    distinct_nearest,
    nearest,
    select_frames,
    snap_to_keyframes,
    target_times,
    window,
)


def cfr(n: int, fps: float = 25.0) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / fps


def nearest_slow(times: np.ndarray, target: float) -> int:
    """Reference: the frame whose time is nearest, the earlier one on a tie."""
    d = np.abs(times - target)
    return int(np.flatnonzero(d == d.min())[0])


# --- num_frames -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 49, 50])
def test_select_frames_returns_exactly_num_frames_when_enough_frames(n: int) -> None:
    times = cfr(50)
    chosen = select_frames(times, 0.04, VideoOptions(num_frames=n))
    assert len(chosen) == n
    assert chosen[0] == 0
    if n > 1:
        assert chosen[-1] == 49
    assert np.all(np.diff(chosen) > 0)


def test_select_frames_spreads_uniformly_when_num_frames_divides_evenly() -> None:
    chosen = select_frames(cfr(101), 0.04, VideoOptions(num_frames=5))
    assert chosen.tolist() == [0, 25, 50, 75, 100]


def test_select_frames_returns_every_frame_when_num_frames_exceeds_video() -> None:
    chosen = select_frames(cfr(6), 0.04, VideoOptions(num_frames=100))
    assert chosen.tolist() == [0, 1, 2, 3, 4, 5]


def test_select_frames_ignores_max_frames_when_only_num_frames_given() -> None:
    chosen = select_frames(cfr(100), 0.04, VideoOptions(num_frames=20, max_frames=5))
    assert len(chosen) == 20


def test_select_frames_samples_by_time_not_index_when_frame_rate_varies() -> None:
    # 50 frames in the first second, then 10 frames one second apart.
    times = np.concatenate([np.arange(50) * 0.02, 1.0 + np.arange(10) * 1.0])
    chosen = select_frames(times, 0.02, VideoOptions(num_frames=5))
    targets = np.linspace(0.0, times[-1], 5)
    assert chosen.tolist() == [nearest_slow(times, t) for t in targets]
    # By index it would have taken 0, 15, 30, 44, 59: four of five from the first second.
    assert sum(times[chosen] < 1.0) == 1


def test_select_frames_returns_exactly_num_frames_when_frame_rate_varies() -> None:
    # Uniform targets crowd into a long gap and share nearest frames: de-duplicating them
    # used to return 11 frames of the 20 asked for.
    times = (
        np.cumsum([0, 40, 40, 40, 500, 10, 10, 10, 10, 1200, 33, 33, 33, 300, 700, 20, 20, 20, 20, 20]) / 1000
    )
    for n in (4, 10, 15, 20):
        chosen = select_frames(times, 0.02, VideoOptions(num_frames=n))
        assert len(chosen) == n, n
        assert np.all(np.diff(chosen) > 0)
    assert select_frames(times, 0.02, VideoOptions(num_frames=20)).tolist() == list(range(20))


def test_distinct_nearest_equals_nearest_when_nearest_frames_are_distinct() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        times = np.sort(rng.choice(np.arange(1000), size=int(rng.integers(2, 60)), replace=False)) / 100.0
        n = int(rng.integers(1, len(times) + 1))
        targets = np.linspace(times[0], times[-1], n)
        plain = nearest(times, targets)
        picked = distinct_nearest(times, targets)
        assert len(np.unique(picked)) == n and np.all(np.diff(picked) > 0)
        if np.all(np.diff(plain) > 0):
            assert picked.tolist() == plain.tolist()


# --- fps -------------------------------------------------------------------------


def test_select_frames_takes_one_frame_per_period_when_fps_given() -> None:
    times = cfr(200, fps=20)  # 10 s; every half second falls on a frame
    chosen = select_frames(times, 0.05, VideoOptions(fps=2))
    assert len(chosen) == 20
    np.testing.assert_allclose(times[chosen], np.arange(20) * 0.5)


def test_select_frames_defaults_to_2_fps_when_neither_num_frames_nor_fps() -> None:
    chosen = select_frames(cfr(250), 0.04, VideoOptions())
    assert len(chosen) == 20


def test_select_frames_returns_each_frame_once_when_fps_above_native_rate() -> None:
    chosen = select_frames(cfr(10, fps=5), 0.2, VideoOptions(fps=60))
    assert chosen.tolist() == list(range(10))


def test_select_frames_respreads_uniformly_when_fps_exceeds_max_frames() -> None:
    times = cfr(250)
    chosen = select_frames(times, 0.04, VideoOptions(fps=10, max_frames=5))
    # Spread over the whole video, not the first half second.
    assert chosen.tolist() == [nearest_slow(times, t) for t in np.linspace(0, times[-1], 5)]
    assert chosen[0] == 0 and chosen[-1] == 249


def test_select_frames_caps_fps_by_num_frames_when_both_given() -> None:
    times = cfr(250)
    capped = select_frames(times, 0.04, VideoOptions(fps=10, num_frames=4))
    assert len(capped) == 4
    assert capped[0] == 0 and capped[-1] == 249
    uncapped = select_frames(times, 0.04, VideoOptions(fps=1, num_frames=100))
    np.testing.assert_allclose(times[uncapped], np.arange(10.0))


def test_select_frames_samples_by_time_when_fps_given_on_vfr() -> None:
    times = np.array([0.0, 0.05, 0.1, 1.3, 1.31, 1.32, 2.6, 4.0])
    chosen = select_frames(times, 0.05, VideoOptions(fps=1))
    span = times[-1] - times[0] + 0.05
    targets = np.arange(round(span)) * 1.0
    assert chosen.tolist() == sorted({nearest_slow(times, t) for t in targets})


def test_target_times_does_not_overflow_when_fps_is_huge() -> None:
    # span * fps is inf: used to raise OverflowError from int(round(inf)).
    targets = target_times(0.0, 10.0, 0.04, VideoOptions(fps=1e308, max_frames=3), available=251)
    np.testing.assert_allclose(targets, [0.0, 5.0, 10.0])


def test_select_frames_returns_capped_count_when_fps_is_huge() -> None:
    chosen = select_frames(cfr(250), 0.04, VideoOptions(fps=1e308, max_frames=10))
    assert len(chosen) == 10


# --- windows ---------------------------------------------------------------------


def test_window_keeps_frames_in_start_inclusive_end_exclusive_when_both_given() -> None:
    times = cfr(100)  # 0.00 .. 3.96
    win = window(times, VideoOptions(start=1.0, end=2.0))
    assert win[0] == 25 and win[-1] == 49
    assert np.all((times[win] >= 1.0) & (times[win] < 2.0))


def test_window_runs_to_the_end_when_only_start_given() -> None:
    win = window(cfr(100), VideoOptions(start=3.0))
    assert win.tolist() == list(range(75, 100))


def test_window_starts_at_zero_when_only_end_given() -> None:
    win = window(cfr(100), VideoOptions(end=0.2))
    assert win.tolist() == [0, 1, 2, 3, 4]


def test_window_raises_invalid_input_naming_start_when_start_after_last_frame() -> None:
    with pytest.raises(InvalidInput, match="start=5.0"):
        window(cfr(50), VideoOptions(start=5.0))


def test_window_raises_invalid_input_when_window_falls_between_frames() -> None:
    times = np.array([0.0, 1.0, 2.0])
    with pytest.raises(InvalidInput, match="no frames between"):
        window(times, VideoOptions(start=1.2, end=1.8))


def test_select_frames_keeps_samples_inside_window_when_num_frames_given() -> None:
    times = cfr(250)
    chosen = select_frames(times, 0.04, VideoOptions(start=2.0, end=4.0, num_frames=5))
    assert len(chosen) == 5
    assert chosen[0] == 50 and chosen[-1] == 99
    assert np.all((times[chosen] >= 2.0) & (times[chosen] < 4.0))


def test_select_frames_samples_from_start_when_fps_and_window_given() -> None:
    times = cfr(200, fps=20)
    chosen = select_frames(times, 0.05, VideoOptions(start=2.0, end=4.0, fps=2))
    np.testing.assert_allclose(times[chosen], [2.0, 2.5, 3.0, 3.5])


def test_select_frames_raises_invalid_input_when_no_frames() -> None:
    with pytest.raises(InvalidInput, match="no frames"):
        select_frames(np.zeros(0), 0.04, VideoOptions())


def test_select_frames_returns_the_only_frame_when_video_has_one_frame() -> None:
    for opts in (VideoOptions(), VideoOptions(num_frames=8), VideoOptions(fps=30)):
        assert select_frames(np.array([0.0]), 0.04, opts).tolist() == [0]


# --- nearest ---------------------------------------------------------------------


def test_nearest_picks_the_earlier_frame_when_target_is_halfway() -> None:
    times = np.array([0.0, 1.0, 2.0])
    assert nearest(times, np.array([0.5, 1.5, 1.51, -1.0, 9.0])).tolist() == [0, 1, 2, 0, 2]


def test_nearest_matches_brute_force_when_times_are_random() -> None:
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0, 10, 200))
    targets = rng.uniform(-1, 11, 500)
    assert nearest(times, targets).tolist() == [nearest_slow(times, t) for t in targets]


# --- keyframe snapping -------------------------------------------------------------


def test_snap_to_keyframes_moves_samples_to_keyframes_when_within_tolerance() -> None:
    times = cfr(100, fps=10)
    out, snapped = snap_to_keyframes(times, np.array([1, 48, 91]), np.array([0, 50, 90]), tolerance=0.5)
    assert out.tolist() == [0, 50, 90]
    assert snapped.tolist() == [True, True, True]


def test_snap_to_keyframes_keeps_exact_frame_when_no_keyframe_within_tolerance() -> None:
    times = cfr(100, fps=10)
    out, snapped = snap_to_keyframes(times, np.array([1, 25, 91]), np.array([0, 50, 90]), tolerance=0.5)
    assert out.tolist() == [0, 25, 90]
    assert snapped.tolist() == [True, False, True]


def test_snap_to_keyframes_uses_each_keyframe_once_when_samples_share_nearest() -> None:
    times = cfr(100, fps=10)
    out, snapped = snap_to_keyframes(times, np.array([49, 51]), np.array([0, 50, 60]), tolerance=1.0)
    assert out.tolist() == [50, 60]
    assert snapped.tolist() == [True, True]


def test_snap_to_keyframes_preserves_count_when_a_sample_is_itself_a_keyframe() -> None:
    # Sample 9 used to take keyframe 10, leaving sample 10 unsnapped on index 10: one was dropped.
    times = cfr(30, fps=10)
    out, snapped = snap_to_keyframes(times, np.array([9, 10]), np.array([0, 10, 20]), tolerance=0.5)
    assert len(out) == 2
    assert out.tolist() == [9, 10]
    assert snapped.tolist() == [False, True]


def test_snap_to_keyframes_returns_unchanged_when_no_keyframes() -> None:
    out, snapped = snap_to_keyframes(cfr(10), np.array([2, 5]), np.array([], dtype=np.int64), tolerance=5)
    assert out.tolist() == [2, 5] and not snapped.any()


def test_snap_to_keyframes_keeps_invariants_when_inputs_are_random() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 120))
        times = np.sort(rng.choice(np.arange(0, 2000), size=n, replace=False)) / 100.0
        keys = np.flatnonzero(rng.random(n) < rng.uniform(0.02, 0.6))
        chosen = np.unique(rng.integers(0, n, size=int(rng.integers(1, n + 1))))
        tol = float(rng.uniform(0, 3))
        out, snapped = snap_to_keyframes(times, chosen, keys, tol)
        assert len(out) == len(chosen), (chosen, keys, out)
        assert np.all(np.diff(out) > 0)
        assert set(out[snapped].tolist()) <= set(keys.tolist())
        # Every unsnapped frame is one that was asked for.
        assert set(out[~snapped].tolist()) <= set(chosen.tolist())
        # Snapped frames stay within tolerance of some sample.
        for idx in out[snapped]:
            assert np.min(np.abs(times[chosen] - times[idx])) <= tol + 1e-9


def test_snap_to_keyframes_uses_cheap_frames_when_samples_outnumber_keyframes() -> None:
    import numpy as np

    from video_pipeline.media.sampling import snap_to_keyframes

    times = np.arange(100) / 10.0
    keys = np.array([0, 50])
    cost = np.array([i % 50 for i in range(100)])  # decode steps from the GOP's keyframe
    chosen = np.array([0, 10, 40, 50, 60, 90])
    out, snapped = snap_to_keyframes(times, chosen, keys, 5.0, cheap=np.flatnonzero(cost <= 3), cost=cost)
    assert len(out) == len(chosen) and snapped.all()
    assert set(out.tolist()) <= {0, 1, 2, 3, 50, 51, 52, 53}
    assert len(set(out.tolist())) == len(out)
