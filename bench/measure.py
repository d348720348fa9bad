"""Small measuring tools: percentiles, waiting with a deadline, resident memory of a process tree."""
from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Iterable[float], unseen: int = 0, window_s: float = 0.0) -> dict[str, float | int | None]:
    """n, p50, p90, p99 and max of durations given in seconds, in milliseconds.

    `unseen` samples never completed within `window_s`: they count as longer than anything seen,
    and a percentile that falls among them is None ("more than the window").
    """
    values = [s * 1000 for s in seconds] + [math.inf] * unseen
    out: dict[str, float | int | None] = {"n": len(values)}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        v = percentile(values, q)
        out[name] = None if v is None or math.isinf(v) else round(v, 2)
    if unseen:
        out |= {"unseen": unseen, "window_ms": round(window_s * 1000)}
    return out


def wait_until(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    # The command name may hold spaces and parentheses: the ppid follows the last ')'.
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def tree_rss_kib(pid: int) -> int:
    """A process and its direct children, e.g. a gunicorn master and its workers."""
    return rss_kib(pid) + sum(rss_kib(c) for c in children(pid))


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_split_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) / TICKS, int(fields[12]) / TICKS
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    return sum(cpu_split_s(pid))


def tree_cpu_s(pid: int) -> float:
    return cpu_s(pid) + sum(cpu_s(c) for c in children(pid))


def oncpu_s(pid: int) -> float:
    """CPU seconds the live threads of a process have run, to the nanosecond (`/proc/<pid>/task/*/schedstat`).

    For the idle suite's few milliseconds per second, where `/proc/<pid>/stat`'s clock ticks (10 ms each) are
    too coarse; a thread that ended takes its time with it, so not for windows in which threads come and go.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return total / 1e9


def tree_oncpu_s(pid: int) -> float:
    return oncpu_s(pid) + sum(oncpu_s(c) for c in children(pid))


class RssSampler:
    """Samples the resident memory of named process trees once a second in a background thread."""

    def __init__(self, pids: dict[str, int], every_s: float = 1.0) -> None:
        self.pids, self.every_s = pids, every_s
        self.samples: dict[str, list[int]] = {name: [] for name in pids}
        self.largest: dict[str, int] = {name: 0 for name in pids}  # KiB of the tree's largest single process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> dict[str, int]:
        now = {}
        for name, pid in self.pids.items():
            each = [rss_kib(pid), *(rss_kib(c) for c in children(pid))]
            now[name] = sum(each)
            self.samples[name].append(now[name])
            self.largest[name] = max(self.largest[name], *each)
        return now

    def largest_mib(self) -> dict[str, float]:
        """Per tree, the peak of its largest process (a gunicorn worker, not the master and its workers)."""
        return {name: round(kib / 1024, 1) for name, kib in self.largest.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak_mib(self) -> dict[str, float]:
        return {name: round(max(v, default=0) / 1024, 1) for name, v in self.samples.items()}

    def mean_mib(self) -> dict[str, float]:
        return {name: round(sum(v) / len(v) / 1024, 1) if v else 0.0 for name, v in self.samples.items()}

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process tree."""
        return {name: tree_cpu_s(pid) for name, pid in self.pids.items()}
