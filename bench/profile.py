"""Where the CPU goes: the whole suite under a steady intake load, each Python process sampled by py-spy.

    python -m bench.profile                   30 intakes/s for 20 s
    python -m bench.profile --rate 50 --seconds 30

Starts its own broker and services (the ports of `make bench`, so not while it runs), warms them up,
measures the CPU each process spends idle, then records every service process with `py-spy record`
while the load runs. Prints the CPU each process spent per intake (from /proc, so the sampler's own
cost is not in it), user and system apart, and, per process, the functions most often on the stack.
Raw stacks (one line per stack, for flame graph tools) are kept in var/bench/profiles/. py-spy comes
with the `profile` extra: `make profile` installs it.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.harness import PORTS, VAR, Broker, Suite, base_url, partner_bearer, settle, stop_leftovers
from bench.load import IntakeLoad, bodies
from bench.measure import children, cpu_split_s, oncpu_s

OUT = VAR / "profiles"
# A sample whose innermost frame is one of these is a thread waiting, not working.
IDLE_LEAF = re.compile(r"^(?:[\w<>]+\.)*(select|poll|wait|_wait_for_tstate_lock|sleep|acquire|accept|recv_into|"
                       r"readinto|sock_recv|_recv) \(")
QUIET = 50  # fewer busy samples than this: the process was (nearly) idle


def processes(suite: Suite, broker: Broker) -> tuple[dict[str, int], int | None]:
    """Python processes to sample (gunicorn workers, not their master; each worker process), and the broker."""
    pids: dict[str, int] = {}
    for name, proc in suite.procs.items():
        if name.endswith("-web"):
            for n, child in enumerate(sorted(children(proc.pid))):
                pids[f"{name}-{n}"] = child
        else:
            pids[name] = proc.pid
    return pids, broker.pid


def top_functions(raw: Path, count: int) -> tuple[int, list[tuple[float, str]]]:
    """Busy samples, and the functions most often on their stacks (inclusive share)."""
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not n.isdigit() or IDLE_LEAF.match(frames[-1]):
            continue
        busy += int(n)
        for name in {re.sub(r" \(.*site-packages/", " (", re.sub(r":\d+\)$", ")", f)) for f in frames}:
            inclusive[name] += int(n)
    skip = ("<module>", "_run_", "Thread._bootstrap", "Thread.run", "run_worker", "main (", "_worker (", "_WorkItem.",
            "ThreadWorker.", "Flask.", "ConsumerRunner.run ", "ConsumerRunner.poll_once ")  # frames every sample has
    ranked = [(100 * v / busy, k) for k, v in inclusive.most_common() if not k.startswith(skip)] if busy else []
    return busy, ranked[:count]


def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU each process spends per second while nothing is submitted, in ms."""
    before = {name: oncpu_s(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: 1000 * (oncpu_s(pid) - before[name]) / seconds for name, pid in pids.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=30, help="intakes per second (default 30)")
    parser.add_argument("--seconds", type=int, default=20, help="length of the sampled load (default 20)")
    parser.add_argument("--top", type=int, default=12, help="functions listed per process (default 12)")
    parser.add_argument("--idle", type=int, default=10, help="seconds of CPU measured with no load first (default 10)")
    parser.add_argument("--settle", type=int, default=0, help="seconds the suite rests after the warm-up before that "
                        "(default 0: the broker's JIT compiler is still at work then; 120 shows the steady state)")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed: make profile (or .venv/bin/pip install -e '.[profile]')", file=sys.stderr)
        return 2
    stop_leftovers()
    broker, suite = Broker(), Suite({service: (2, 4) for service in PORTS})
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        broker.start()
        suite.start()
        load = IntakeLoad(base_url("intake"), partner_bearer(), clients=16)
        load.run(args.rate, bodies(args.rate * 5))  # warm-up: connections, caches, the broker's JIT
        settle(30)
        pids, broker_pid = processes(suite, broker)
        measured = {**pids, "broker (JVM)": broker_pid} if broker_pid else dict(pids)
        time.sleep(args.settle)
        idle = idle_cpu(measured, args.idle)
        spies = [subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(args.seconds + 2), "-r", "100",
                                   "-f", "raw", "-o", str(OUT / f"{name}.txt"), "--nonblocking"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, pid in pids.items()]
        before = {name: cpu_split_s(pid) for name, pid in measured.items()}
        subs = load.run(args.rate, bodies(args.rate * args.seconds))
        settle(30)
        spent = {name: tuple(a - b for a, b in zip(cpu_split_s(pid), before[name], strict=True))
                 for name, pid in measured.items()}
        for s in spies:
            s.wait(60)
    finally:
        suite.stop()
        broker.stop()
    accepted = sum(s.accepted for s in subs)
    when = f"{args.settle} s" if args.settle else "just"
    print(f"\nidle for {args.idle} s, {when} after the warm-up: CPU in ms per second (1000 is one core)")
    for name, rate in sorted(idle.items(), key=lambda kv: -kv[1]):
        if rate >= 0.05:
            print(f"  {name:24s} {rate:6.1f}")
    print(f"  {'in all':24s} {sum(idle.values()):6.1f}, {sum(idle.values()) / 10:.1f} % of one core")
    per = 1000 / max(accepted, 1)
    print(f"\n{accepted} of {len(subs)} intakes accepted at {args.rate}/s; CPU per intake (all threads, from /proc):")
    print(f"  {'':24s} {'total':>8s} {'user':>7s} {'system':>7s}")
    for name, (user, system) in sorted(spent.items(), key=lambda kv: -sum(kv[1])):
        if user + system < 0.01:
            continue  # an idle web process of a service the load does not call
        print(f"  {name:24s} {per * (user + system):5.1f} ms {per * user:7.1f} {per * system:7.1f}")
    users, systems = sum(u for u, _ in spent.values()), sum(s for _, s in spent.values())
    print(f"  {'in all':24s} {per * (users + systems):5.1f} ms {per * users:7.1f} {per * systems:7.1f}")
    for name in pids:
        raw = OUT / f"{name}.txt"
        if not raw.exists():
            continue
        busy, ranked = top_functions(raw, args.top)
        if busy < QUIET:
            print(f"\n{name}: idle ({busy} busy samples)")
            continue
        print(f"\n{name}: {busy} busy samples; share of them with the function on the stack")
        for share, function in ranked:
            print(f"  {share:5.1f}%  {function[:110]}")
    print(f"\nraw stacks in {OUT}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
