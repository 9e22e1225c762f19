"""The soak's memory bookkeeping (perf/chaos.py, perf/smaps_diff.py): slopes, the flat verdict, process names."""

from __future__ import annotations

from pathlib import Path

import pytest

from perf import chaos
from perf.smaps_diff import diff, parse

MIB = chaos.MIB


def _mem(mib: float) -> dict[str, int]:
    return {"rss": int(mib * MIB), "pss": int(mib * MIB), "uss": int(mib * MIB), "shmem": 0, "anon": int(mib * MIB)}


def _samples(curve, pid_of=lambda t: 7, every: int = 20, until: int = 600) -> list[chaos.MemSample]:
    return [chaos.MemSample(t, {"p": _mem(curve(t))}, {"p": pid_of(t)}, None, 0) for t in range(0, until + 1, every)]


def test_slope_is_least_squares() -> None:
    assert chaos.slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2)
    assert chaos.slope([(0, 1)]) == 0.0


def test_a_cache_filling_during_the_warm_up_is_flat_after_it() -> None:
    (row,) = chaos.mem_rows(_samples(lambda t: 100 + min(t, 100)), warmup_s=120)
    assert (row.start, row.warm, row.end) == pytest.approx((100, 200, 200), abs=0.01)
    assert row.slope_mib_min == pytest.approx(0, abs=1e-6) and row.flat


def test_a_steady_climb_after_the_warm_up_is_not_flat() -> None:
    (row,) = chaos.mem_rows(_samples(lambda t: 100 + t / 2, until=1200), warmup_s=120)  # 30 MiB/min
    assert row.slope_mib_min == pytest.approx(30, rel=1e-3)
    assert row.per_hour_pct > 10 and not row.flat


def test_a_slow_climb_within_ten_percent_per_hour_is_flat() -> None:
    (row,) = chaos.mem_rows(_samples(lambda t: 1000 + t / 60), warmup_s=120)  # 1 MiB/min on 1 GiB: 6 %/h
    assert row.per_hour_pct == pytest.approx(6, rel=0.01) and row.flat


def test_a_restarted_process_is_not_flat() -> None:
    (row,) = chaos.mem_rows(_samples(lambda t: 100, pid_of=lambda t: 7 if t < 300 else 8), warmup_s=120)
    assert row.new and not row.flat


def test_processes_are_tracked_by_pid_not_label() -> None:
    """A short-lived process that took a label in the first sample does not become the real one's start."""
    samples = _samples(lambda t: 80)
    samples[0] = chaos.MemSample(0, {"p": _mem(500), "p #2": _mem(60)}, {"p": 99, "p #2": 7}, None, 0)
    (row,) = chaos.mem_rows(samples, warmup_s=120)
    assert row.pid == 7 and row.start == pytest.approx(60, abs=0.01)
    table = chaos.mem_tables(samples, 120)
    assert "| p | 60 | 80 | 80 |" in table


def test_sparkline_spans_min_to_max() -> None:
    assert chaos.sparkline([1, 2, 3]) == "▁▅█"
    assert chaos.sparkline([5, 5]) == "▁▁"


class _Proc:
    def __init__(self, cmd: list[str], name: str = "python") -> None:
        self._cmd, self._name = cmd, name

    def cmdline(self) -> list[str]:
        return self._cmd

    def name(self) -> str:
        return self._name


def test_process_labels() -> None:
    stub = ["/x/triton_python_backend_stub", "/repo/model_repository/llm/1/model.py", "vlt1_2_abc", "16777216",
            "67108864", "123", "/x/python", "336", "llm_0_0", "DEFAULT"]
    assert chaos.proc_label(_Proc(stub)) == "stub llm_0_0"
    assert chaos.proc_label(_Proc(["VLLM::EngineCore"])) == "VLLM::EngineCore"
    tracker = ["/venv/bin/python", "-c", "from multiprocessing.resource_tracker import main;main(9)"]
    assert chaos.proc_label(_Proc(tracker)) == "resource tracker"


SMAPS = """\
55d0-55e0 rw-p 00000000 00:00 0                          [heap]
Size:                 64 kB
Rss:                  {heap} kB
Anonymous:            {heap} kB
10000000-14000000 rw-p 00000000 00:00 0
Size:              65536 kB
Rss:                  {arena} kB
Anonymous:            {arena} kB
7f10-7f20 r-xp 00000000 08:01 1234                       /usr/lib/libc.so.6
Size:               1024 kB
Rss:                 800 kB
Anonymous:             0 kB
"""


def test_smaps_diff_groups_by_mapping(tmp_path: Path) -> None:
    before, after = tmp_path / "a.smaps", tmp_path / "b.smaps"
    before.write_text(SMAPS.format(heap=1024, arena=2048))
    after.write_text(SMAPS.format(heap=1024 + 10240, arena=2048))
    groups = parse(after)
    assert groups["[heap]"]["Rss"] == (1024 + 10240) * 1024
    assert groups["/usr/lib/libc.so.6"]["Anonymous"] == 0
    assert any(k.startswith("[anon: >= 60 MiB") for k in groups)
    text = diff(before, after)
    assert "+10.0M" in text.splitlines()[2] and "[heap]" in text.splitlines()[2]
