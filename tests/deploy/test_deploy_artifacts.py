"""Each deployment artifact passes the real tool that checks it: hadolint, the Compose Specification schema,
Helm (its SDK's lint and template) with the Kubernetes schemas, systemd-analyze. Each check is also shown to
refuse a broken input."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from shared.config import ROOT
from tests.support import helm
from tests.support.tools import tool

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "iop-suite"
COMPOSE_SCHEMA = ROOT / "tests" / "deploy" / "schemas" / "compose-spec" / "compose-spec.json"
SERVICES = ("intake", "careplan", "encounters", "aftercare")
KUBERNETES = "1.33.0"


def run(*argv: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=300)


# -- the image ---------------------------------------------------------------------------------------------
def test_the_dockerfile_passes_hadolint_and_is_multi_stage_non_root_pinned_and_health_checked() -> None:
    result = run(tool("hadolint"), str(DEPLOY / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M) and "HEALTHCHECK" in text
    assert run("sh", "-n", str(DEPLOY / "container" / "entrypoint.sh")).returncode == 0


def test_hadolint_refuses_an_unpinned_base_image(tmp_path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nRUN pip install requests\n")
    assert run(tool("hadolint"), str(tmp_path / "Dockerfile")).returncode != 0


# -- compose -----------------------------------------------------------------------------------------------
def compose_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose_errors(doc) == []
    services = doc["services"]
    assert {f"kafka-{n}" for n in (1, 2, 3)} <= set(services) and "postgres" in services
    assert all("healthcheck" in services[name] for name in services if name != "topics")
    for service in SERVICES:
        for kind in ("web", "worker"):
            conditions = {k: v["condition"] for k, v in services[f"{service}-{kind}"]["depends_on"].items()}
            assert conditions == {"postgres": "service_healthy", "topics": "service_completed_successfully"}
    assert {v["condition"] for v in services["topics"]["depends_on"].values()} == {"service_healthy"}
    assert services["kafka-1"]["environment"]["KAFKA_MIN_INSYNC_REPLICAS"] == "2"


def test_the_compose_schema_refuses_a_misspelt_condition() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    doc["services"]["topics"]["depends_on"]["kafka-1"] = {"condition": "service_healty"}
    assert compose_errors(doc)


# -- helm ----------------------------------------------------------------------------------------------------
def render(tmp_path: Path, *files: str) -> Path:
    out = tmp_path / "rendered.yaml"
    out.write_text(helm.template(CHART, files))
    return out


@pytest.mark.parametrize("files", [(), ("ci/cluster-values.yaml",)])
def test_the_chart_lints_renders_and_every_manifest_is_valid_for_kubernetes(tmp_path, files: tuple) -> None:
    assert helm.lint(CHART, files) == []
    rendered = render(tmp_path, *files)
    checked = run(tool("kubernetes-validate"), "-k", KUBERNETES, "--strict", "--quiet", str(rendered))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == 8 and kinds.count("PodDisruptionBudget") == 8
    assert {"ConfigMap", "Service", "ServiceAccount"} <= set(kinds)
    assert ("Secret" in kinds) is (not files)  # the cluster values name an existing Secret
    assert ("HorizontalPodAutoscaler" in kinds) is (not files)  # the cluster values turn the HPA off
    for d in (d for d in docs if d["kind"] == "Deployment"):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        if d["metadata"]["name"].endswith("-web"):
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_helm_lint_refuses_a_chart_whose_template_does_not_parse(tmp_path) -> None:
    broken = tmp_path / "iop-suite"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "configmap.yaml").write_text("{{ if .Values.web }}\nkind: ConfigMap\n")  # no {{ end }}
    assert any("configmap.yaml" in finding for finding in helm.lint(broken))


def test_the_kubernetes_check_refuses_a_misspelt_field(tmp_path) -> None:
    rendered = render(tmp_path)
    rendered.write_text(rendered.read_text().replace("readinessProbe:", "readinesProbe:"))
    assert run(tool("kubernetes-validate"), "-k", KUBERNETES, "--strict", "--quiet", str(rendered)).returncode != 0


@pytest.mark.parametrize(("setting", "refusal"), [("web.replicas=0", "minimum"),
                                                  ("worker.replicas=7", "must not exceed kafka.partitions"),
                                                  ("image.pullPolicy=Sometimes", "pullPolicy")])
def test_the_chart_refuses_values_that_cannot_work(setting: str, refusal: str) -> None:
    with pytest.raises(helm.RenderRefused, match=refusal):
        helm.template(CHART, sets=(setting,))


def test_the_strimzi_example_names_every_topic_of_the_contract() -> None:
    from shared.events.catalogue import DLQ_SUFFIX, TOPICS

    docs = list(yaml.safe_load_all((CHART / "examples" / "strimzi-kafka.yaml").read_text()))
    topics = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == {t for topic in TOPICS for t in (topic, topic + DLQ_SUFFIX)}
    assert all(spec["replicas"] == 3 and spec["config"]["min.insync.replicas"] == 2 for spec in topics.values())


# -- systemd -----------------------------------------------------------------------------------------------
def installed_units(tmp_path: Path, mangle: str = "") -> Path:
    """The units as installed with this checkout as their prefix, so that their executables exist here."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "iop.env").write_text("IOP_BIND=127.0.0.1:8082\n")
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/iop-suite", str(ROOT)).replace("/etc/iop-suite", str(tmp_path / "etc"))
        (tmp_path / unit.name).write_text(text.replace("NoNewPrivileges=", mangle) if mangle else text)
    return tmp_path


def test_the_systemd_template_units_pass_systemd_analyze_verify(tmp_path) -> None:
    units = installed_units(tmp_path)
    result = run("systemd-analyze", "verify", str(units / "iop-web@careplan.service"),
                 str(units / "iop-worker@careplan.service"))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_analyze_reports_an_unknown_directive(tmp_path) -> None:
    units = installed_units(tmp_path, mangle="NoNewPrivilege=")
    result = run("systemd-analyze", "verify", str(units / "iop-web@careplan.service"))
    assert "Unknown key 'NoNewPrivilege'" in result.stderr
