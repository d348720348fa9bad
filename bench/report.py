"""The printed table: figures per section, each target next to its figure with PASS or MISS."""
from __future__ import annotations

from typing import Any

TARGETS = {  # (section, label, what is compared, limit)
    "p1_p50": ("p1", "P1 propagation p50", "<= 30 ms", 30.0),
    "p1_p99": ("p1", "P1 propagation p99", "<= 150 ms", 150.0),
    "p1_raw": ("p1", "P1 p50 / raw hop p50", "<= 10x", 10.0),
    "p2_rate": ("p2", "P2 sustained intakes/s", ">= 300 /s", 300.0),
    "p3_p50": ("p3", "P3 fan-out p50", "<= 50 ms", 50.0),
}


def _ms(summary: dict | None, key: str) -> float | None:
    return None if not summary else summary.get(key)


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    figures: dict[str, float | None] = {}
    if ok(results.get("p1")):
        p1 = results["p1"]
        figures["p1_p50"] = _ms(p1["propagation_ms"], "p50")
        figures["p1_p99"] = _ms(p1["propagation_ms"], "p99")
        raw = _ms(p1["raw_hop_ms"], "p50")
        figures["p1_raw"] = round(figures["p1_p50"] / raw, 1) if figures["p1_p50"] and raw else None
    if ok(results.get("p2")):
        figures["p2_rate"] = results["p2"]["highest_passing_rate"]
    if ok(results.get("p3")):
        figures["p3_p50"] = _ms(results["p3"]["fanout_ms"], "p50")
    out = []
    for key, (section, label, target, limit) in TARGETS.items():
        if section not in results:
            continue
        value = figures.get(key)
        passed = value is not None and (value >= limit if target.startswith(">=") else value <= limit)
        out.append({"section": section, "target": label, "limit": target, "figure": value,
                    "verdict": "PASS" if passed else "MISS"})
    return out


def ok(section: Any) -> bool:
    return isinstance(section, dict) and "error" not in section


def fmt(summary: dict | None) -> str:
    if not summary or not summary.get("n"):
        return "no samples"
    return (f"p50 {summary['p50']:.1f}  p90 {summary['p90']:.1f}  p99 {summary['p99']:.1f}  "
            f"max {summary['max']:.1f} ms  (n={summary['n']})")


def table(results: dict[str, Any], info: dict[str, Any], marks: list[dict[str, Any]]) -> str:
    lines = [f"\niop-suite benchmarks: {info['cpus']} CPUs, Python {info['python']}, load average "
             f"{info['load_average_1m']} at the end, gunicorn per service "
             + ", ".join(f"{s} {shape}" for s, shape in info["web"].items())
             + (" (--quick)" if info["quick"] else "")]
    for section, render in (("rest", _rest), ("hop", _hop), ("p1", _p1), ("p3", _p3), ("p2", _p2), ("p4", _p4)):
        if section in results:
            body = results[section]
            rows = render(body) if ok(body) else [("error", str((body or {}).get("error", "not run"))[-400:])]
            lines.append("")
            lines += [f"  {label:<44} {figure}" for label, figure in rows]
    if marks:
        lines += ["", f"  {'target':<30} {'limit':<12} {'measured':>10}  verdict"]
        lines += [f"  {m['target']:<30} {m['limit']:<12} {_figure(m['figure']):>10}  {m['verdict']}" for m in marks]
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _rest(r: dict) -> list[tuple[str, str]]:
    http, local = r["http_gunicorn_1_worker"], r["flask_test_client"]
    return [("FHIR REST, one careplan process (fhir_rest)", ""),
            ("  CarePlan create / read, HTTP gunicorn 1x4", f"{http['creates_per_s']} / {http['reads_per_s']} per s"),
            ("  CarePlan create / read, Flask test client", f"{local['creates_per_s']} / {local['reads_per_s']} per s"),
            ("  validate_resource(CarePlan)", f"{r['validation']['validate_us']:.0f} µs per call")]


def _hop(r: dict) -> list[tuple[str, str]]:
    t = r["throughput"]
    return [("Event hop (one careplan.created, " + f"{r['event_bytes']} bytes)", ""),
            ("  outbox commit -> relay -> Kafka -> applied", fmt(r["managed_ms"])),
            ("    of which commit -> consumer has it", fmt(r["to_consumer_ms"])),
            ("    of which parse + apply + commit", fmt(r["apply_ms"])),
            ("  raw kafka-python send -> consumer (same run)", fmt(r["raw_ms"])),
            ("  one ConsumerRunner, trivial effect", f"{t['events_per_s']:.0f} events/s ({t['events']} events, "
                                                     f"{t['dead_lettered']} dead-lettered)"),
            ("  parse_event per record", f"{r['parse_event_us']:.0f} µs")]


def _p1(r: dict) -> list[tuple[str, str]]:
    return [(f"P1 propagation at {r['rate_per_s']}/s for {r['seconds']:.0f} s", f"{r['accepted']} of {r['submitted']} "
             f"accepted, {r['created']} careplan.created seen"),
            ("  intake 200 -> careplan.created seen", fmt(r["propagation_ms"])),
            ("  raw kafka-python hop under the same load", fmt(r["raw_hop_ms"])),
            ("  intake HTTP (from due time)", fmt(r["http_ms"]))]


def _p3(r: dict) -> list[tuple[str, str]]:
    return [(f"P3 EHR fan-out, {r['revisions']} revisions ({r['content']})", ""),
            ("  PUT CarePlan 200 -> EHR received", fmt(r["fanout_ms"])),
            ("  PUT CarePlan itself", fmt(r["put_ms"]))]


def _p2(r: dict) -> list[tuple[str, str]]:
    rows = [("P2 throughput (stepped offered rate)", f"highest passing {r['highest_passing_rate']}/s")]
    for s in r["steps"]:
        http = s["http_ms"]
        rows.append((f"  {s['rate_per_s']:>4}/s x {s['seconds']:.0f} s: {'pass' if s['passed'] else 'FAIL'}",
                     f"HTTP p50 {http['p50']} p99 {http['p99']} ms; created {s['created_rate_per_s']}/s; lag at end "
                     f"{s['lag_at_end']} (slope {s['lag_slope_per_s']}/s); drained in {s['drained_after_s']} s"))
        if not s["passed"]:
            rows.append(("    reason", s["reason"]))
    return rows


def _p4(r: dict) -> list[tuple[str, str]]:
    rows = [("P4 resident memory (VmRSS) idle -> peak under P2", f"{r['idle_total_mib']:.0f} -> "
                                                                  f"{r['peak_total_mib']:.0f} MiB in all")]
    rows += [(f"  {name}", f"{r['idle_mib'][name]:.0f} -> {r['peak_mib'][name]:.0f} MiB") for name in r["peak_mib"]]
    return rows
