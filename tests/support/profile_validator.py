"""HAPI FHIR's instance validator (tests/support/hapi, ProfileValidator.java) against the FHIR packages kept in
tests/fhir-packages: one JVM run validates a batch of resources against the profiles they claim, offline."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shared.config import ROOT
from tests.support.hapi_server import JAR, PACKAGES, US_CORE, HapiServer
from tests.support.jvm import QUICK


@dataclass(frozen=True)
class Finding:
    resource: str      # "Goal/123"
    severity: str      # fatal | error | warning | information
    where: str
    message: str
    kind: str          # the validator's message id, e.g. Terminology_TX_NoValid_1_CC


@dataclass(frozen=True)
class Report:
    checked: int
    findings: list[Finding]
    summary: str       # the validator's own line: counts and times

    def of(self, *severities: str) -> list[Finding]:
        return [f for f in self.findings if f.severity in severities]


def validate(resources: list[dict], packages: tuple[str, ...] = US_CORE) -> Report:
    HapiServer.ensure_built()
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("Java is needed to run HAPI FHIR's validator")
    with tempfile.TemporaryDirectory() as work:
        given, answer = Path(work) / "in.json", Path(work) / "out.json"
        given.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                     "entry": [{"resource": r} for r in resources]}))
        run = subprocess.run([java, "-Xmx1g", *QUICK, "-cp", f"{JAR}:{PACKAGES}",
                              "org.iopsuite.testehr.ProfileValidator", str(given), str(answer), *packages],
                             cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        if run.returncode != 0 or not answer.exists():
            raise RuntimeError(f"the validator failed ({run.returncode}):\n{(run.stdout + run.stderr)[-4000:]}")
        outcomes = [e["resource"] for e in json.loads(answer.read_text())["entry"]]
    summary = next((line for line in run.stdout.splitlines() if line.startswith("validated ")), "")
    findings = [Finding(f"{r['resourceType']}/{r.get('id', '?')}", issue["severity"],
                        ", ".join(issue.get("expression") or issue.get("location") or []),
                        issue.get("diagnostics", ""), _message_id(issue))
                for r, outcome in zip(resources, outcomes, strict=True) for issue in outcome.get("issue", [])
                if not _all_ok(issue)]
    return Report(len(resources), findings, summary)


def _message_id(issue: dict) -> str:
    return next((e.get("valueString", "") for e in issue.get("extension", []) if e["url"].endswith("message-id")), "")


def _all_ok(issue: dict) -> bool:
    """HAPI reports a clean resource as one information issue saying so."""
    return issue["severity"] == "information" and issue.get("code") == "informational" \
        and "No issues detected" in issue.get("diagnostics", "")
