"""`make bench` on two store profiles: each profile's services get their own stores, and the printed
comparison puts the profiles' pipeline figures side by side with their ratio."""
from __future__ import annotations

from typing import Any

import pytest

from bench import report
from bench.harness import PG_PORT, PORTS, VAR, store_env
from bench.run import parse_args


def summary(p50: float | None, p99: float | None, unseen: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"n": 100, "p50": p50, "p90": p50, "p99": p99, "max": p99}
    return out | ({"unseen": unseen, "window_ms": 30000} if unseen else {})


def step(rate: int, passed: bool, p50: float, p99: float) -> dict[str, Any]:
    return {"rate_per_s": rate, "seconds": 15, "passed": passed, "reason": "" if passed else "HTTP p99",
            "http_ms": summary(5.0, 40.0), "propagation_ms": summary(p50, p99), "created_rate_per_s": rate,
            "lag_at_end": 0, "lag_slope_per_s": 0.0, "drained_after_s": 0.1}


def profile(steps: list[dict[str, Any]], p1: dict[str, Any], cpu: dict[str, float]) -> dict[str, Any]:
    passing = [s["rate_per_s"] for s in steps if s["passed"]]
    return {"p2": {"steps": steps, "highest_passing_rate": max(passing, default=0),
                   "highest_rate_within_p1_targets": min(passing, default=0), "next_failing": None},
            "p1": {"rate_per_s": 50, "seconds": 20, "submitted": 1000, "accepted": 1000, "created": 1000,
                   "drained_after_s": 2.0, "http_ms": summary(8.0, 90.0), **p1},
            "p3": {"revisions": 100, "content": "id-only", "fanout_ms": summary(15.0, 35.0),
                   "put_ms": summary(10.0, 20.0)},
            "p4": {"cpu_ms_per_intake": cpu, "idle_mib": {}, "peak_mib": {}, "idle_total_mib": 0,
                   "peak_total_mib": 0, "bench_cpu_ms_per_intake": 1.0, "cpu_at_rate_per_s": 30}}


PROFILES = {
    "sqlite": profile([step(10, True, 12.0, 30.0), step(20, True, 14.0, 40.0), step(30, True, 16.0, 50.0),
                       step(40, False, 20.0, 90.0)],
                      {"propagation_ms": summary(400.0, 2000.0), "raw_hop_ms": summary(3.0, 7.0)},
                      {"intake-web": 13.0, "careplan-worker": 10.0}),
    "postgresql": profile([step(10, True, 18.0, 45.0), step(20, True, 24.0, 80.0), step(30, False, 60.0, 500.0)],
                          {"propagation_ms": summary(800.0, None, unseen=30), "raw_hop_ms": summary(3.0, 8.0)},
                          {"intake-web": 15.0, "careplan-worker": 12.0, "postgresql (server)": 19.0}),
}


def rows_by_label() -> dict[str, dict[str, Any]]:
    return {row["figure"]: row for row in report.comparison(PROFILES)}


def test_the_comparison_gives_each_profile_its_figure_and_postgresql_over_sqlite() -> None:
    rows = rows_by_label()
    sustained = rows["P2 sustained rate"]
    assert (sustained["sqlite"], sustained["postgresql"], sustained["ratio"]) == (30, 20, 0.67)
    raw = rows["  raw kafka-python hop p99, same P1 run"]
    assert (raw["sqlite"], raw["postgresql"], raw["ratio"]) == (7.0, 8.0, 1.14)
    cpu = rows["P4 CPU per intake, all processes"]
    assert (cpu["sqlite"], cpu["postgresql"], cpu["ratio"]) == (23.0, 46.0, 2.0)  # the database server counts


def test_latencies_are_compared_at_the_highest_rate_both_profiles_sustain() -> None:
    rows = rows_by_label()
    p50 = rows["P1 200 -> careplan.created p50, 20/s (both sustain)"]
    assert (p50["sqlite"], p50["postgresql"], p50["ratio"]) == (14.0, 24.0, 1.71)
    p99 = rows["P1 200 -> careplan.created p99, 20/s (both sustain)"]
    assert (p99["sqlite"], p99["postgresql"], p99["ratio"]) == (40.0, 80.0, 2.0)


def test_a_percentile_beyond_the_drain_window_is_shown_as_such_and_has_no_ratio() -> None:
    p99 = rows_by_label()["P1 200 -> careplan.created p99, 50/s (P1's rate)"]
    assert (p99["sqlite"], p99["postgresql"], p99["ratio"]) == (2000.0, ">30000", None)


def test_a_profile_that_failed_leaves_its_cells_empty_and_the_table_still_prints() -> None:
    broken = {"sqlite": PROFILES["sqlite"], "postgresql": {"p1": {"error": "PostgreSQL did not start: port in use"},
                                                           "p2": {"error": "PostgreSQL did not start: port in use"}}}
    rows = {row["figure"]: row for row in report.comparison(broken)}
    assert rows["P2 sustained rate"]["postgresql"] is None
    assert rows["P2 sustained rate"]["ratio"] is None
    assert not any("both sustain" in label for label in rows)  # no common rate without a second P2
    info = {"cpus": 2, "python": "3.11", "load_average_1m": 1.0, "web": {"intake": "2x4"}, "quick": True}
    printed = report.table({"profiles": broken}, info, [])
    assert "p1: error" in printed and "PostgreSQL did not start" in printed
    assert "store profiles side by side" in printed


def test_the_table_prints_both_profiles_and_the_side_by_side_rows() -> None:
    info = {"cpus": 2, "python": "3.11", "load_average_1m": 1.0, "web": {"intake": "2x4"}, "quick": False}
    marks = [{**v, "profile": name} for name, sections in PROFILES.items() for v in report.verdicts(sections)]
    printed = report.table({"profiles": PROFILES}, info, marks)
    assert "SQLite store profile" in printed and "PostgreSQL store profile" in printed
    header = next(line for line in printed.splitlines() if "store profiles side by side" in line)
    assert header.split()[-5:] == ["SQLite", "PostgreSQL", "PostgreSQL", "/", "SQLite"]
    sustained = next(line for line in printed.splitlines() if line.strip().startswith("P2 sustained rate (intakes/s)"))
    assert sustained.split()[-3:] == ["30", "20", "0.67"]
    assert {(m["profile"], m["target"]) for m in marks} >= {("sqlite", "P2 sustained intakes/s"),
                                                           ("postgresql", "P2 sustained intakes/s")}


def test_each_profile_names_a_store_for_every_service() -> None:
    sqlite, pg = store_env("sqlite"), store_env("postgresql")
    assert sqlite == {f"IOP_{s.upper()}_DB": str(VAR / f"{s}.db") for s in PORTS}
    assert pg == {f"IOP_{s.upper()}_DB": f"postgresql://iop@127.0.0.1:{PG_PORT}/iop_{s}" for s in PORTS}
    with pytest.raises(ValueError, match="store profile"):
        store_env("mysql")


def test_the_profile_option_defaults_to_both_in_turn() -> None:
    assert parse_args([]).profiles == ("sqlite", "postgresql")
    assert parse_args(["--profile", "postgresql"]).profiles == ("postgresql",)
    with pytest.raises(SystemExit):
        parse_args(["--profile", "oracle"])


def test_when_no_rate_passes_on_both_the_latencies_are_compared_at_the_lowest_rate_both_ran() -> None:
    slow = {name: {**sections, "p2": {**sections["p2"], "steps": [step(10, False, 900.0, 4000.0)],
                                      "highest_passing_rate": 0}} for name, sections in PROFILES.items()}
    rows = {row["figure"]: row for row in report.comparison(slow)}
    p50 = rows["P1 200 -> careplan.created p50, 10/s (not sustained by both)"]
    assert (p50["sqlite"], p50["postgresql"], p50["ratio"]) == (900.0, 900.0, 1.0)


def test_the_footprint_targets_read_the_largest_single_process_and_the_idle_suite() -> None:
    p4 = {**PROFILES["sqlite"]["p4"], "largest_process_mib": {"intake-web": 96.0, "careplan-web": 104.5,
                                                              "intake-worker": 61.0, "careplan-worker": 79.0,
                                                              "broker (JVM)": 300.0},
          "idle_cpu_ms_per_s": {"intake-worker": 2.0, "careplan-worker": 5.0, "broker (JVM)": 30.0}, "idle_s": 10,
          "idle_mib": {"careplan-web": 200.0}, "peak_mib": {"careplan-web": 230.0}}
    marks = {m["target"]: m for m in report.verdicts({"p4": p4})}
    assert (marks["P4 largest web process"]["figure"], marks["P4 largest web process"]["verdict"]) == (104.5, "MISS")
    # The broker is no worker: the largest worker is careplan's.
    assert (marks["P4 largest worker process"]["figure"], marks["P4 largest worker process"]["verdict"]) == \
        (79.0, "PASS")
    assert (marks["P4 idle suite, % of a core"]["figure"], marks["P4 idle suite, % of a core"]["verdict"]) == \
        (3.7, "MISS")
    assert (marks["P4 CPU per intake, all"]["figure"], marks["P4 CPU per intake, all"]["verdict"]) == (23.0, "MISS")
    printed = "\n".join(f"{a} {b}" for a, b in report._p4(p4))
    assert "largest process 104" in printed and "3.7 % of one core" in printed
