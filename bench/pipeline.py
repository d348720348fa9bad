"""P1 propagation and P2 throughput (with P4 footprint): intake submissions through all four services.

P1: at a steady rate, from the intake's HTTP 200 to `iop.careplan.created` in an outside consumer's
hands, with a raw kafka-python hop sampled alongside under the same load. Plans not seen within the
drain window count as slower than it.
P2: stepped offered rates; a step passes when every submission is accepted, HTTP p99 <= 100 ms,
the created events keep pace (no growing lag) and every submission yields exactly one
careplan.created once the step's backlog has drained. P4 samples resident memory during P2, and
each step records the CPU time every process spent per intake.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

from bench.harness import BOOTSTRAP, Broker, Suite, base_url, partner_bearer
from bench.hop import RawHop, careplan_event
from bench.load import IntakeLoad, Submission, bodies
from bench.measure import RssSampler, cpu_s, summary_ms, tree_oncpu_s
from bench.watch import TopicWatcher
from shared.events.catalogue import CAREPLAN

CREATED = "iop.careplan.created"
HTTP_P99_LIMIT_MS = 100.0
P1_P50_MS, P1_P99_MS = 30.0, 150.0  # P1's targets, also read off each sustained P2 step


def warm_up(load: IntakeLoad, watcher: TopicWatcher, count: int = 4) -> None:
    """A few intakes end to end first, so that connections, caches and consumer groups are settled."""
    for body in bodies(count):
        sub = load.submit(body)
        if not sub.accepted:
            raise RuntimeError(f"warm-up intake refused: {sub.error}")
        watcher.wait_for(CREATED, sub.patient, timeout=60)


def created_keys(watcher: TopicWatcher, subs: list[Submission]) -> int:
    return sum(1 for s in list(subs) if s.accepted and (CREATED, s.patient) in watcher.first)


def drain(watcher: TopicWatcher, subs: list[Submission], timeout: float) -> float:
    """Seconds until every accepted submission has its careplan.created (or the timeout)."""
    started, want = time.perf_counter(), sum(s.accepted for s in subs)
    while created_keys(watcher, subs) < want and time.perf_counter() - started < timeout:
        time.sleep(0.1)
    return time.perf_counter() - started


def propagation(watcher: TopicWatcher, subs: list[Submission], window_s: float) -> dict[str, Any]:
    """From each HTTP 200 to its careplan.created; plans not seen count as slower than the window."""
    accepted = [s for s in subs if s.accepted]
    seen = [watcher.first[(CREATED, s.patient)] - s.finished for s in accepted if (CREATED, s.patient) in watcher.first]
    return summary_ms(seen, unseen=len(accepted) - len(seen), window_s=window_s)


def p1(rate: int, seconds: float, drain_s: float = 30) -> dict[str, Any]:
    load = IntakeLoad(base_url("intake"), partner_bearer(), clients=16)
    with TopicWatcher(BOOTSTRAP, (CAREPLAN,), types={CREATED}) as watcher:
        warm_up(load, watcher)
        raw, raw_s, stop = RawHop(BOOTSTRAP), [], threading.Event()

        def sample_raw() -> None:
            while not stop.wait(0.1):
                raw_s.append(raw.sample(careplan_event(0)))

        sampler = threading.Thread(target=sample_raw, name="raw-hop-sampler", daemon=True)
        payloads = bodies(int(rate * seconds))
        sampler.start()
        try:
            subs = load.run(rate, payloads)
        finally:
            stop.set()
            sampler.join(15)
            raw.close()
        drained_after = drain(watcher, subs, drain_s)
        accepted = [s for s in subs if s.accepted]
        return {"rate_per_s": rate, "seconds": seconds, "submitted": len(subs), "accepted": len(accepted),
                "created": created_keys(watcher, subs), "drained_after_s": round(drained_after, 1),
                "propagation_ms": propagation(watcher, subs, drained_after),
                "http_ms": summary_ms(s.latency_s for s in accepted), "raw_hop_ms": summary_ms(raw_s)}


IDLE_S = 10.0  # how long the idle suite's CPU is measured before the P2 steps, after as long a pause


def idle_cpu_ms_per_s(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """The CPU each process tree spends per second while nothing is submitted (1000 is one core)."""
    before = {name: tree_oncpu_s(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: round(1000 * (tree_oncpu_s(pid) - before[name]) / seconds, 1) for name, pid in pids.items()}


def p2(rates: list[int], seconds: float, drain_s: float, suite: Suite, broker: Broker,
       servers: dict[str, int] | None = None) -> dict[str, Any]:
    """`servers`: other processes to sample with the suite's (a database server, by the pid of its tree)."""
    load = IntakeLoad(base_url("intake"), partner_bearer(), clients=48)
    pids = {name: proc.pid for name, proc in suite.procs.items()}
    pids["broker (JVM)"] = broker.pid or 0
    pids |= servers or {}
    steps: list[dict[str, Any]] = []
    with TopicWatcher(BOOTSTRAP, (CAREPLAN,), types={CREATED}) as watcher:
        warm_up(load, watcher)
        idle = RssSampler(pids).sample()
        time.sleep(IDLE_S)  # the broker goes on compiling and collecting for a while after the warm-up's load
        idle_cpu = idle_cpu_ms_per_s(pids, IDLE_S)
        with RssSampler(pids) as rss:
            for rate in rates:
                step = p2_step(load, watcher, rss, rate, seconds, drain_s)
                steps.append(step)
                print(f"  P2 {rate:>4}/s: {'pass' if step['passed'] else 'FAIL: ' + step['reason']}", flush=True)
                if not step["passed"]:
                    break
    passing = [s for s in steps if s["passed"]]
    failing = next((s for s in steps if not s["passed"]), None)
    footprint = {"idle_mib": {k: round(v / 1024, 1) for k, v in idle.items()}, "peak_mib": rss.peak_mib(),
                 "mean_mib": rss.mean_mib(), "largest_process_mib": rss.largest_mib(),
                 "idle_cpu_ms_per_s": idle_cpu, "idle_s": IDLE_S,
                 "cpu_ms_per_intake": (passing or steps)[-1]["cpu_ms_per_intake"] if steps else {},
                 "bench_cpu_ms_per_intake": (passing or steps)[-1]["bench_cpu_ms_per_intake"] if steps else 0.0,
                 "cpu_at_rate_per_s": (passing or steps)[-1]["rate_per_s"] if steps else None}
    footprint["peak_total_mib"] = round(sum(footprint["peak_mib"].values()), 1)
    footprint["idle_total_mib"] = round(sum(footprint["idle_mib"].values()), 1)
    within_p1 = [s["rate_per_s"] for s in passing if (s["propagation_ms"].get("p50") or float("inf")) <= P1_P50_MS
                 and (s["propagation_ms"].get("p99") or float("inf")) <= P1_P99_MS]
    return {"steps": steps, "highest_passing_rate": max((s["rate_per_s"] for s in passing), default=0),
            "highest_rate_within_p1_targets": max(within_p1, default=0),
            "next_failing": None if failing is None else {"rate_per_s": failing["rate_per_s"],
                                                          "reason": failing["reason"]},
            "footprint": footprint}


def p2_step(load: IntakeLoad, watcher: TopicWatcher, rss: RssSampler, rate: int, seconds: float,
            drain_s: float) -> dict[str, Any]:
    payloads = bodies(int(rate * seconds))
    subs: list[Submission] = []
    lag: list[tuple[float, int]] = []
    done = threading.Event()

    def sample_lag() -> None:
        while not done.wait(0.5):
            answered = [s for s in list(subs) if s.finished]
            lag.append((time.perf_counter(), sum(s.accepted for s in answered) - created_keys(watcher, answered)))

    sampler = threading.Thread(target=sample_lag, name="lag-sampler", daemon=True)
    cpu_before, bench_before = rss.cpu(), cpu_s(os.getpid())
    sampler.start()
    started = time.perf_counter()
    try:
        load.run(rate, payloads, into=subs)
    finally:
        done.set()
        sampler.join(5)
    elapsed = time.perf_counter() - started
    created_in_step = created_keys(watcher, subs)
    drained_after = drain(watcher, subs, drain_s)
    cpu_after, bench_after, intakes = rss.cpu(), cpu_s(os.getpid()), max(1, sum(s.accepted for s in subs))
    step = judge(rate, seconds, elapsed, subs, watcher, lag, created_in_step, drained_after, drain_s)
    step["propagation_ms"] = propagation(watcher, subs, drained_after)
    step["cpu_ms_per_intake"] = {name: round((cpu_after[name] - cpu_before[name]) * 1000 / intakes, 1)
                                 for name in cpu_after}
    step["bench_cpu_ms_per_intake"] = round((bench_after - bench_before) * 1000 / intakes, 1)
    return step


def judge(rate: int, seconds: float, elapsed: float, subs: list[Submission], watcher: TopicWatcher,
          lag: list[tuple[float, int]], created_in_step: int, drained_after: float, drain_s: float) -> dict[str, Any]:
    accepted = [s for s in subs if s.accepted]
    http = summary_ms(s.latency_s for s in accepted)
    per_key = Counter(watcher.count(CREATED, s.patient) for s in accepted)
    missing, duplicates = per_key.get(0, 0), sum(n for c, n in per_key.items() if c > 1)
    refused = Counter(s.error or f"HTTP {s.status}" for s in subs if not s.accepted)
    lag_end = len(accepted) - created_in_step
    slope = lag_slope(lag[len(lag) // 2:])
    reason = ""
    if refused:
        reason = f"{sum(refused.values())} of {len(subs)} submissions not accepted ({dict(refused)})"
    elif (http["p99"] or 0) > HTTP_P99_LIMIT_MS:
        reason = f"intake HTTP p99 {http['p99']:.0f} ms > {HTTP_P99_LIMIT_MS:.0f} ms"
    elif slope > 0.1 * rate and lag_end > rate:
        reason = (f"growing lag: +{slope:.0f} plans/s behind in the step's second half, {lag_end} behind at its "
                  f"end (careplan.created at {created_in_step / elapsed:.0f}/s vs {rate}/s offered)")
    elif missing:
        reason = f"{missing} of {len(accepted)} careplan.created still missing {drain_s:.0f} s after the step"
    elif duplicates:
        reason = f"{duplicates} submissions yielded more than one careplan.created"
    return {"rate_per_s": rate, "seconds": seconds, "submitted": len(subs), "accepted": len(accepted),
            "http_ms": http, "http_service_ms": summary_ms(s.service_s for s in accepted),
            "created_during_step": created_in_step, "created_rate_per_s": round(created_in_step / elapsed, 1),
            "lag_at_end": lag_end, "lag_slope_per_s": round(slope, 1), "max_lag": max((n for _, n in lag), default=0),
            "drained_after_s": round(drained_after, 1), "missing": missing, "duplicates": duplicates,
            "passed": not reason, "reason": reason}


def lag_slope(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of lag over time, in plans per second."""
    if len(points) < 3:
        return 0.0
    xs, ys = [t for t, _ in points], [float(n) for _, n in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
