"""Peak resident memory of a process tree, sampled in a background thread.

The sum of RSS over a parent and its (recursive) children is what the
benchmark reports. Pages shared between forked workers are counted once per
process, so the figure is an upper bound on the memory the tree really holds.
"""

from __future__ import annotations

import threading
from types import TracebackType

import psutil


def tree_rss(root: psutil.Process) -> int:
    """Summed RSS in bytes of ``root`` and all its descendants (0 if gone)."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited between listing and sampling
            continue
    return total


class PeakRssSampler:
    """Poll :func:`tree_rss` of ``pid`` every ``interval_s`` and keep the peak.

    Use as a context manager around the measured work::

        with PeakRssSampler(proc.pid) as rss:
            proc.wait()
        print(rss.peak_bytes)
    """

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self._proc = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_bytes = 0
        self.samples = 0

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self._interval_s):
                return

    def sample(self) -> None:
        """Take one sample now (also called once more on exit)."""
        self.peak_bytes = max(self.peak_bytes, tree_rss(self._proc))
        self.samples += 1

    def __enter__(self) -> PeakRssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
