"""The printed table: figures per section, each target next to its figure with PASS or MISS."""
from __future__ import annotations

import os
from typing import Any

TARGETS = {  # (section, label, what is compared, limit)
    "p1_p50": ("p1", "P1 propagation p50", "<= 30 ms", 30.0),
    "p1_p99": ("p1", "P1 propagation p99", "<= 150 ms", 150.0),
    "p1_raw": ("p1", "P1 p50 / raw hop p50", "<= 10x", 10.0),
    "p2_rate": ("p2", "P2 sustained intakes/s", ">= 150 /s", 150.0),
    "p3_p50": ("p3", "P3 fan-out p50", "<= 50 ms", 50.0),
    "p4_cpu": ("p4", "P4 CPU per intake, all", "<= 12 ms", 12.0),
    "p4_web": ("p4", "P4 largest web process", "<= 100 MiB", 100.0),
    "p4_worker": ("p4", "P4 largest worker process", "<= 80 MiB", 80.0),
    "p4_idle": ("p4", "P4 idle suite, % of a core", "<= 2 %", 2.0),
}


def footprint_figures(p4: dict[str, Any]) -> dict[str, float | None]:
    """The P4 targets' figures: CPU per intake summed, the largest single web and worker process, idle CPU."""
    largest = p4.get("largest_process_mib") or {}
    webs = [v for k, v in largest.items() if k.endswith("-web")]
    workers = [v for k, v in largest.items() if k.endswith("-worker")]
    idle = p4.get("idle_cpu_ms_per_s")
    return {"p4_cpu": round(sum((p4.get("cpu_ms_per_intake") or {}).values()), 1) or None,
            "p4_web": max(webs, default=None), "p4_worker": max(workers, default=None),
            "p4_idle": round(sum(idle.values()) / 10, 1) if idle else None}


def _ms(summary: dict | None, key: str) -> float | str | None:
    """A percentile; ">N" when it falls among samples not seen within the window of N ms."""
    if not summary:
        return None
    value = summary.get(key)
    return f">{summary['window_ms']}" if value is None and summary.get("unseen") else value


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    figures: dict[str, float | None] = {}
    if ok(results.get("p1")):
        p1 = results["p1"]
        figures["p1_p50"] = _ms(p1["propagation_ms"], "p50")
        figures["p1_p99"] = _ms(p1["propagation_ms"], "p99")
        raw, p50 = _ms(p1["raw_hop_ms"], "p50"), figures["p1_p50"]
        figures["p1_raw"] = round(p50 / raw, 1) if isinstance(p50, float) and isinstance(raw, float) and raw else None
    if ok(results.get("p2")):
        figures["p2_rate"] = results["p2"]["highest_passing_rate"]
    if ok(results.get("p3")):
        figures["p3_p50"] = _ms(results["p3"]["fanout_ms"], "p50")
    if ok(results.get("p4")):
        figures |= footprint_figures(results["p4"])
    out = []
    for key, (section, label, target, limit) in TARGETS.items():
        if section not in results:
            continue
        value = figures.get(key)
        numeric = isinstance(value, int | float)
        passed = numeric and (value >= limit if target.startswith(">=") else value <= limit)
        out.append({"section": section, "target": label, "limit": target, "figure": value,
                    "verdict": "PASS" if passed else "MISS"})
    return out


def search_verdicts(search: dict[str, Any] | None) -> list[dict[str, Any]]:
    """p50 and p99 of each timed search of bench/search_scale.py, per store profile."""
    if not ok(search):
        return []
    out = []
    for profile, figures in search["profiles"].items():
        for name, f in figures.items():
            if "baseline" in name or "contrast" in name:
                continue
            for key, limit in (("p50", 5.0), ("p99", 20.0)):
                out.append({"section": "search", "target": f"{name[:24]} {key}", "limit": f"<= {limit:g} ms",
                            "figure": f[key], "verdict": "PASS" if f[key] <= limit else "MISS", "profile": profile})
    return out


def ok(section: Any) -> bool:
    return isinstance(section, dict) and "error" not in section


def fmt(summary: dict | None) -> str:
    if not summary or not summary.get("n"):
        return "no samples"
    beyond = f">{summary.get('window_ms', 0):.0f}"
    parts = [f"{name} {beyond if summary[name] is None else format(summary[name], '.1f')}"
             for name in ("p50", "p90", "p99", "max")]
    unseen = ""
    if summary.get("unseen"):
        unseen = f", {summary['unseen']} not seen within {summary['window_ms'] / 1000:.0f} s"
    return "  ".join(parts) + f" ms  (n={summary['n']}{unseen})"


LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def table(results: dict[str, Any], info: dict[str, Any], marks: list[dict[str, Any]]) -> str:
    lines = [f"\niop-suite benchmarks: {info['cpus']} CPUs, Python {info['python']}, load average "
             f"{info['load_average_1m']} at the end, gunicorn per service "
             + ", ".join(f"{s} {shape}" for s, shape in info["web"].items())
             + (" (--quick)" if info["quick"] else "")]
    lines += _sections(results, ("rest", "breadth", "search", "hop"))
    profiles = results.get("profiles", {})
    for profile, sections in profiles.items():
        if set(sections) & {"p1", "p2", "p3", "p4"}:
            lines += ["", f"{LABELS.get(profile, profile)} store profile"]
            lines += _sections(sections, ("p1", "p3", "p2", "p4"))
    if marks:
        lines += ["", f"  {'target':<30} {'limit':<12} {'profile':<11} {'measured':>10}  verdict"]
        lines += [f"  {m['target']:<30} {m['limit']:<12} {LABELS.get(m.get('profile', ''), '-'):<11} "
                  f"{_figure(m['figure']):>10}  {m['verdict']}" for m in marks]
    if len(profiles) > 1:
        lines += ["", *side_by_side(comparison(profiles))]
    return "\n".join(lines)


def _sections(results: dict[str, Any], order: tuple[str, ...]) -> list[str]:
    lines: list[str] = []
    renders = {"rest": _rest, "breadth": _breadth, "search": _search, "hop": _hop, "p1": _p1, "p3": _p3, "p2": _p2,
               "p4": _p4}
    for section in order:
        if section in results:
            body = results[section]
            error = str((body or {}).get("error", "not run"))[-400:]
            rows = renders[section](body) if ok(body) else [(f"{section}: error", error)]
            lines.append("")
            lines += [f"  {label:<50} {figure}" for label, figure in rows]
    return lines


def comparison(profiles: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The pipeline's figures on each store profile, and the ratio of the second profile's to the first's.

    Latencies in ms (None where a percentile fell among plans not seen within the drain window),
    rates in intakes/s. The common rate is the highest P2 step every profile passed (or else the lowest
    step every profile ran): the latencies measured there compare the engines at the same offered load.
    """
    names = list(profiles)
    p1 = {n: profiles[n].get("p1") if ok(profiles[n].get("p1")) else None for n in names}
    p2 = {n: profiles[n].get("p2") if ok(profiles[n].get("p2")) else None for n in names}
    p3 = {n: profiles[n].get("p3") if ok(profiles[n].get("p3")) else None for n in names}
    p4 = {n: profiles[n].get("p4") if ok(profiles[n].get("p4")) else None for n in names}
    passed = [{s["rate_per_s"] for s in (p2[n] or {}).get("steps", []) if s["passed"]} for n in names]
    ran = [{s["rate_per_s"] for s in (p2[n] or {}).get("steps", [])} for n in names]
    common, sustained = None, "both sustain"
    if names and all(p2.values()):
        common = max(set.intersection(*passed), default=None)
        if common is None:  # a step both ran, though not both passed it: still the same offered load
            common, sustained = min(set.intersection(*ran), default=None), "not sustained by both"

    def at_common(n: str) -> dict | None:
        return next((s["propagation_ms"] for s in p2[n]["steps"] if s["rate_per_s"] == common), None)

    rate = next((r["rate_per_s"] for r in p1.values() if r), None)
    rows: list[tuple[str, str, dict[str, Any]]] = [
        ("P2 sustained rate", "intakes/s", {n: p2[n]["highest_passing_rate"] if p2[n] else None for n in names}),
        ("P2 sustained rate within P1's targets", "intakes/s",
         {n: p2[n].get("highest_rate_within_p1_targets") if p2[n] else None for n in names}),
    ]
    for key in ("p50", "p99") if common else ():
        rows.append((f"P1 200 -> careplan.created {key}, {common}/s ({sustained})", "ms",
                     {n: _ms(at_common(n), key) for n in names}))
    for key in ("p50", "p99"):
        rows.append((f"P1 200 -> careplan.created {key}, {rate}/s (P1's rate)", "ms",
                     {n: _ms(p1[n]["propagation_ms"], key) if p1[n] else None for n in names}))
    for key in ("p50", "p99"):
        rows.append((f"  raw kafka-python hop {key}, same P1 run", "ms",
                     {n: _ms(p1[n]["raw_hop_ms"], key) if p1[n] else None for n in names}))
    rows.append(("  intake HTTP p99, same P1 run", "ms", {n: _ms(p1[n]["http_ms"], "p99") if p1[n] else None
                                                         for n in names}))
    rows.append(("P3 CarePlan revision -> EHR p50", "ms",
                 {n: _ms(p3[n]["fanout_ms"], "p50") if p3[n] else None for n in names}))
    rows.append(("P4 CPU per intake, all processes", "ms",
                 {n: round(sum((p4[n].get("cpu_ms_per_intake") or {}).values()), 1) if p4[n] else None
                  for n in names}))
    out = []
    for label, unit, values in rows:
        first, last = values[names[0]], values[names[-1]]
        ratio = round(last / first, 2) if isinstance(first, int | float) and isinstance(last, int | float) and first \
            else None
        out.append({"figure": label, "unit": unit, **values, "ratio": ratio})
    return out


def side_by_side(rows: list[dict[str, Any]]) -> list[str]:
    names = [k for k in rows[0] if k not in ("figure", "unit", "ratio")] if rows else []
    if len(names) < 2:
        return []
    head = f"  {'store profiles side by side':<58}" + "".join(f"{LABELS.get(n, n):>12}" for n in names)
    ratio = f"{LABELS.get(names[-1], names[-1])} / {LABELS.get(names[0], names[0])}"
    lines = [head + f"{ratio:>22}"]
    for row in rows:
        cells = "".join(f"{_figure(row[n]):>12}" for n in names)
        label = f"{row['figure']} ({row['unit']})"
        lines.append(f"  {label:<58}{cells}{'-' if row['ratio'] is None else format(row['ratio'], '.2f'):>22}")
    return lines


def _figure(value: float | str | None) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def _rest(r: dict) -> list[tuple[str, str]]:
    http, local = r["http_gunicorn_1_worker"], r["flask_test_client"]
    return [("FHIR REST, one careplan process (fhir_rest)", ""),
            ("  CarePlan create / read, HTTP gunicorn 1x4", f"{http['creates_per_s']} / {http['reads_per_s']} per s"),
            ("  CarePlan create / read, Flask test client", f"{local['creates_per_s']} / {local['reads_per_s']} per s"),
            ("  validate_resource(CarePlan)", f"{r['validation']['validate_us']:.0f} µs per call")]


def _breadth(r: dict) -> list[tuple[str, str]]:
    e, fifth, heavy, plain = r["export"], r["export_fifth"], r["search"]["include_heavy"], r["search"]["plain"]
    return [("FHIR REST breadth, one careplan process (fhir_breadth)", ""),
            (f"  $export of {e['resources']} resources", f"{e['export_s']} s, peak {e['peak_python_bytes'] / 1e6:.1f}"
                                                        f" MB ({fifth['peak_python_bytes'] / 1e6:.1f} MB at a fifth)"),
            (f"  search, _include + _revinclude ({heavy['entries_per_page']} a page)",
             f"p50 {heavy['p50']} ms  p95 {heavy['p95']} ms"),
            (f"  the same page plain ({plain['entries_per_page']} a page)",
             f"p50 {plain['p50']} ms  p95 {plain['p95']} ms")]


def _search(r: dict) -> list[tuple[str, str]]:
    rows = [(f"Search at scale, in process ({r['plans']} CarePlans, {r['goals']} Goals, {r['encounters']} "
             f"Encounters; search_scale)", "")]
    for profile, figures in r["profiles"].items():
        rows += [(f"  {LABELS.get(profile, profile)}: {name}"[:50], f"p50 {f['p50']} ms  p99 {f['p99']} ms")
                 for name, f in figures.items()]
    return rows


def _hop(r: dict) -> list[tuple[str, str]]:
    t = r["throughput"]
    return [("Event hop (one careplan.created, " + f"{r['event_bytes']} bytes)", ""),
            ("  outbox commit -> relay -> Kafka -> applied", fmt(r["managed_ms"])),
            ("    of which commit -> consumer has it", fmt(r["to_consumer_ms"])),
            ("    of which parse + apply + commit", fmt(r["apply_ms"])),
            ("  raw kafka-python send -> consumer (same run)", fmt(r["raw_ms"])),
            ("  one ConsumerRunner, trivial effect", f"{t['events_per_s']:.0f} events/s ({t['events']} events, "
                                                     f"{t['dead_lettered']} dead-lettered)"),
            ("  parse_event per record", f"{r['parse_event_us']:.0f} µs structural (the default), "
                                         f"{r.get('parse_event_full_us', 0):.0f} µs with IOP_EVENT_VALIDATION=full")]


def _p1(r: dict) -> list[tuple[str, str]]:
    return [(f"P1 propagation at {r['rate_per_s']}/s for {r['seconds']:.0f} s", f"{r['accepted']} of {r['submitted']} "
             f"accepted, {r['created']} careplan.created seen ({r['drained_after_s']:.0f} s after the load)"),
            ("  intake 200 -> careplan.created seen", fmt(r["propagation_ms"])),
            ("  raw kafka-python hop under the same load", fmt(r["raw_hop_ms"])),
            ("  intake HTTP (from due time)", fmt(r["http_ms"]))]


def _p3(r: dict) -> list[tuple[str, str]]:
    return [(f"P3 EHR fan-out, {r['revisions']} revisions ({r['content']})", ""),
            ("  PUT CarePlan 200 -> EHR received", fmt(r["fanout_ms"])),
            ("  PUT CarePlan itself", fmt(r["put_ms"]))]


def _p2(r: dict) -> list[tuple[str, str]]:
    rows = [("P2 throughput (stepped offered rate)", f"highest passing {r['highest_passing_rate']}/s")]
    if "highest_rate_within_p1_targets" in r:
        rows.append(("  sustained, within P1's targets", f"up to {r['highest_rate_within_p1_targets']}/s "
                     "(intake 200 -> careplan.created p50 <= 30 ms, p99 <= 150 ms)"))
    for s in r["steps"]:
        http, prop = s["http_ms"], s["propagation_ms"]
        rows.append((f"  {s['rate_per_s']:>4}/s x {s['seconds']:.0f} s: {'pass' if s['passed'] else 'FAIL'}",
                     f"HTTP p50 {http['p50']:.0f} p99 {http['p99']:.0f} ms; created {s['created_rate_per_s']:.0f}/s, "
                     f"lag at end {s['lag_at_end']} (slope {s['lag_slope_per_s']:+.0f}/s), drained in "
                     f"{s['drained_after_s']:.0f} s"))
        rows.append(("    intake 200 -> careplan.created", fmt(prop)))
        if not s["passed"]:
            rows.append(("    reason", s["reason"]))
    return rows


def _p4(r: dict) -> list[tuple[str, str]]:
    rows = [("P4 resident memory (VmRSS) idle -> peak under P2", f"{r['idle_total_mib']:.0f} -> "
                                                                  f"{r['peak_total_mib']:.0f} MiB in all")]
    cpu = r.get("cpu_ms_per_intake") or {}
    largest, idle = r.get("largest_process_mib") or {}, r.get("idle_cpu_ms_per_s") or {}
    rows += [(f"  {name}", f"{r['idle_mib'][name]:.0f} -> {r['peak_mib'][name]:>4.0f} MiB"
              + (f" (largest process {largest[name]:.0f})" if name in largest else "")
              + (f"   CPU {cpu[name]:6.1f} ms per intake" if name in cpu else "")
              + (f", idle {idle[name]:.1f} ms/s" if name in idle else "")) for name in r["peak_mib"]]
    if idle:
        rows.append((f"  idle suite, {r.get('idle_s', 0):.0f} s before the load",
                     f"{sum(idle.values()):.0f} ms of CPU per second, {sum(idle.values()) / 10:.1f} % of one core"))
    if cpu:
        rows.append((f"  CPU per intake, the suite's processes (at {r['cpu_at_rate_per_s']}/s)",
                     f"{sum(cpu.values()):.0f} ms, i.e. at most {1000 * (os.cpu_count() or 1) / sum(cpu.values()):.0f}"
                     f" intakes/s on {os.cpu_count()} CPUs"))
        rows.append(("  the bench itself (HTTP clients, watcher)",
                     f"CPU {r['bench_cpu_ms_per_intake']:.1f} ms per intake (not in the sum)"))
    return rows
