"""The FHIR packages in the repository are the published files, whole: what SHA256SUMS says, nothing more."""
from __future__ import annotations

import hashlib
import json
import tarfile

from shared.config import ROOT

PACKAGES = ROOT / "tests" / "fhir-packages"


def _sums() -> dict[str, str]:
    rows = (line.split() for line in (PACKAGES / "SHA256SUMS").read_text().splitlines() if line.strip())
    return {name: digest for digest, name in rows}


def test_every_package_matches_its_checksum() -> None:
    sums = _sums()
    assert set(sums) == {p.name for p in PACKAGES.glob("*.tgz")}
    for name, digest in sums.items():
        assert hashlib.sha256((PACKAGES / name).read_bytes()).hexdigest() == digest, name


def test_the_us_core_package_is_6_1_0_with_its_dependencies_present() -> None:
    with tarfile.open(PACKAGES / "hl7.fhir.us.core-6.1.0.tgz") as tgz:
        manifest = json.load(tgz.extractfile("package/package.json"))
    assert (manifest["name"], manifest["version"]) == ("hl7.fhir.us.core", "6.1.0")
    present = {p.name.removesuffix(".tgz") for p in PACKAGES.glob("*.tgz")}
    for dependency in ("hl7.fhir.uv.extensions.r4", "hl7.fhir.uv.sdc", "hl7.fhir.uv.smart-app-launch",
                       "hl7.fhir.uv.bulkdata", "ihe.formatcode.fhir"):
        assert any(name.startswith(dependency + "-") for name in present), dependency
