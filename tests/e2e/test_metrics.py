"""Given a service answering with two gunicorn processes, a scrape of /metrics counts the requests of both."""
from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from shared.serving import gunicorn_argv
from tests.support import processes
from tests.support.auth import bearer
from tests.support.broker import Broker
from tests.support.ports import port
from tests.support.tools import tool
from tests.support.waiting import wait_until

WEB_PORT = port(18401)
ROOT_URL = f"http://127.0.0.1:{WEB_PORT}"


@pytest.fixture(scope="module")
def intake(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    var_dir = tmp_path_factory.mktemp("metrics")
    env = processes.service_env(var_dir, broker.bootstrap)
    web = processes.Proc("intake-web", gunicorn_argv("intake", WEB_PORT, workers=2, threads=2), env,
                         var_dir / "log" / "intake-web.log").start()
    try:
        wait_until(lambda: _ok(f"{ROOT_URL}/readyz"), 60, 0.1, "intake ready")
        yield var_dir
    finally:
        web.stop()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def scrape() -> dict[tuple[str, tuple], float]:
    text = requests.get(f"{ROOT_URL}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests_to(samples: dict, route: str, status: str) -> float:
    return sum(v for (name, labels), v in samples.items() if name == "iop_http_requests_total"
               and ("route", route) in labels and ("status", status) in labels)


def test_one_scrape_counts_the_requests_of_every_web_process_and_stays_consistent_during_traffic(intake) -> None:
    headers, sent, scrapes = bearer(), 120, []
    errors: list[str] = []

    def traffic() -> None:
        with requests.Session() as s:  # new connections, so that both processes take a share
            for n in range(sent):
                s.close()
                if s.get(f"{ROOT_URL}/fhir/Patient/no-such-{n}", headers=headers, timeout=10).status_code != 404:
                    errors.append(str(n))

    thread = threading.Thread(target=traffic)
    thread.start()
    while thread.is_alive():
        scrapes.append(requests_to(scrape(), "/fhir/Patient/{id}", "404"))
    thread.join()
    final = [requests_to(scrape(), "/fhir/Patient/{id}", "404") for _ in range(6)]

    assert not errors
    assert scrapes == sorted(scrapes), "a later scrape counted fewer requests than an earlier one"
    assert final == [float(sent)] * 6, final  # every scrape sees both processes' counts, not one at random
    pids = {p.name for p in (intake / "metrics" / "intake-web").iterdir()}
    assert len({name.rsplit("_", 1)[-1] for name in pids if name.startswith("counter_")}) == 2


def test_requests_are_labelled_by_route_template_never_by_raw_path_or_id(intake) -> None:
    requests.get(f"{ROOT_URL}/fhir/Patient/p-secret-42", headers=bearer(), timeout=10)
    requests.get(f"{ROOT_URL}/fhir/NoSuchType/x", headers=bearer(), timeout=10)
    requests.get(f"{ROOT_URL}/fhir/metadata", timeout=10)
    samples = scrape()
    routes = {dict(labels).get("route") for name, labels in samples if name == "iop_http_requests_total"}
    assert {"/fhir/Patient/{id}", "/fhir/{type}/{id}", "/fhir/metadata"} <= routes, routes
    assert not any("p-secret-42" in str(labels) or "NoSuchType" in str(labels) for _, labels in samples)
    assert samples[("iop_http_request_duration_seconds_count",
                    (("method", "GET"), ("route", "/fhir/metadata"), ("status", "200")))] >= 1
    assert ("iop_outbox_backlog", ()) in samples and ("iop_outbox_oldest_age_seconds", ()) in samples


def test_the_exposition_passes_promtool_check_metrics(intake) -> None:
    text = requests.get(f"{ROOT_URL}/metrics", timeout=10).text
    assert "# HELP iop_http_requests_total" in text and "# TYPE iop_http_request_duration_seconds histogram" in text
    result = subprocess.run([tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
