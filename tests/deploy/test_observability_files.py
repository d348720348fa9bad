"""The alert rules pass promtool and their own unit tests; the dashboard and the rules name only real metrics,
and the README documents every metric the suite exposes."""
from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY

from shared import metrics
from shared.config import ROOT
from shared.fhir.store import SQLiteStore
from tests.support.tools import tool

OBSERVABILITY = ROOT / "deploy" / "observability"
NAME = re.compile(r"\biop_[a-z_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def families(tmp_path) -> dict[str, str]:
    """Every metric family a web process or a worker exposes: name -> type."""
    store = SQLiteStore(str(tmp_path / "store.db"))
    found = {f.name: f.type for f in REGISTRY.collect() if f.name.startswith("iop_")}
    found.update({f.name: f.type for f in metrics.StoreCollector(store, subscriptions=True).collect()})
    found["iop_kafka_up"] = "gauge"  # added by the web process (shared/web.py)
    return found


def sample_names(tmp_path) -> set[str]:
    return {name + suffix for name, kind in families(tmp_path).items() for suffix in SUFFIXES[kind]}


def test_the_alert_rules_pass_promtool_check_rules() -> None:
    result = subprocess.run([tool("promtool"), "check", "rules", str(OBSERVABILITY / "alerts.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "SUCCESS: 6 rules found" in result.stdout, result.stdout + result.stderr


def test_each_alert_fires_when_it_should_and_not_before(tmp_path) -> None:
    result = subprocess.run([tool("promtool"), "test", "rules", "alerts.test.yaml"], cwd=OBSERVABILITY,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {t["alertname"] for case in yaml.safe_load((OBSERVABILITY / "alerts.test.yaml").read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    rules = {r["alert"] for g in yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())["groups"]
             for r in g["rules"]}
    assert tested == rules  # every alert has a case in which it fires


def test_a_broken_alert_test_fails(tmp_path) -> None:
    broken = (OBSERVABILITY / "alerts.test.yaml").read_text().replace("severity: critical, service: intake}",
                                                                       "severity: warning, service: intake}")
    (tmp_path / "alerts.test.yaml").write_text(broken.replace("  - alerts.yaml", f"  - {OBSERVABILITY}/alerts.yaml"))
    result = subprocess.run([tool("promtool"), "test", "rules", "alerts.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


@pytest.mark.parametrize("what", ["dashboard.json", "alerts.yaml"])
def test_the_dashboard_and_the_rules_name_only_metrics_that_exist(what: str, tmp_path) -> None:
    text = (OBSERVABILITY / what).read_text()
    if what.endswith(".json"):
        dashboard = json.loads(text)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        titles = " ".join(p["title"].lower() for p in dashboard["panels"])
        assert all(w in titles for w in ("requests per second", "latency", "lag", "dead letters", "outbox", "ehr"))
        text = "\n".join(exprs)
    used = set(NAME.findall(text))
    assert used, "no metric referenced"
    assert used <= sample_names(tmp_path), used - sample_names(tmp_path)


def test_the_readme_documents_every_metric(tmp_path) -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, kind in families(tmp_path).items()
               if f"`{name}{'_total' if kind == 'counter' else ''}" not in readme]
    assert not missing, missing
