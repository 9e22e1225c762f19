"""Peak resident memory of a process (and its children) while a block runs, sampled in a thread."""

from __future__ import annotations

import threading

import psutil


class PeakRss:
    """``with PeakRss(pid) as rss: ...`` then ``rss.peak - rss.start``: bytes the process tree grew by at most.
    ``pid`` None: this process (a server running in one of its threads)."""

    def __init__(self, pid: int | None = None, every_s: float = 0.01) -> None:
        self.process = psutil.Process(pid)
        self.every_s = every_s
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            return sum(p.memory_info().rss for p in [self.process, *self.process.children(recursive=True)])
        except psutil.NoSuchProcess:  # a child that ended between the listing and the reading
            return self.process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
