"""Prometheus text exposition for the few figures an operator watches: requests, latency, events."""
from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, tuple], float] = defaultdict(float)
        self.histograms: dict[tuple[str, tuple], list[float]] = {}
        self.gauges: dict[tuple[str, tuple], float] = {}
        self.help: dict[str, str] = {}

    def inc(self, name: str, labels: dict[str, str] | None = None, by: float = 1.0) -> None:
        with self._lock:
            self.counters[(name, tuple(sorted((labels or {}).items())))] += by

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            self.gauges[(name, tuple(sorted((labels or {}).items())))] = value

    def observe(self, name: str, seconds: float, labels: dict[str, str] | None = None) -> None:
        key = (name, tuple(sorted((labels or {}).items())))
        with self._lock:
            h = self.histograms.setdefault(key, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += 1  # count
            h[-1] += seconds  # sum

    def render(self, extra_gauges: dict[tuple[str, tuple], float] | None = None) -> str:
        def fmt(labels: tuple, more: tuple = ()) -> str:
            pairs = [*labels, *more]
            return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}" if pairs else ""

        lines: list[str] = []
        with self._lock:
            for (name, labels), value in sorted(self.counters.items()):
                lines.append(f"{name}{fmt(labels)} {value}")
            for (name, labels), value in sorted({**self.gauges, **(extra_gauges or {})}.items()):
                lines.append(f"{name}{fmt(labels)} {value}")
            for (name, labels), h in sorted(self.histograms.items()):
                for i, bound in enumerate(BUCKETS):
                    lines.append(f"{name}_bucket{fmt(labels, (('le', str(bound)),))} {h[i]}")
                lines.append(f"{name}_bucket{fmt(labels, (('le', '+Inf'),))} {h[-2]}")
                lines.append(f"{name}_count{fmt(labels)} {h[-2]}")
                lines.append(f"{name}_sum{fmt(labels)} {h[-1]}")
        return "\n".join(lines) + "\n"
