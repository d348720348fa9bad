"""Helm's own chart actions, `helm lint` and `helm template`, through the Helm SDK that helm-python-sdk (PyPI)
binds: the same Go code as the helm command line, without a Go toolchain building a helm binary."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
from helm_python import chart as charts
from helm_python.errors import HelmError

from shared.fhir.patch import merge_patch

RELEASE = "iop"
WARNING = 2  # the lint report's severities: 1 info, 2 warning, 3 error


class RenderRefused(Exception):
    """What `helm template` would print before exiting non-zero: a schema violation or a template's `fail`."""


def values(chart: Path, files: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values of `-f file ... --set a.b=c ...`, merged in that order (key by key, a null removing a key, as
    helm merges them)."""
    merged: dict[str, Any] = {}
    for name in files:
        merged = merge_patch(merged, helm_python.values_from_yaml((chart / name).read_text()))
    for setting in sets:
        merged = merge_patch(merged, helm_python.parse_set_string(setting))
    return merged


def lint(chart: Path, files: tuple[str, ...] = ()) -> list[str]:
    """`helm lint --strict`: every finding that would fail it (errors, and warnings under --strict)."""
    report = charts.lint(str(chart), values(chart, files), strict=True)
    return [*report["errors"], *(f"{m['path']}: {m['error']}" for m in report["messages"]
                                 if m["severity"] >= WARNING)]


def template(chart: Path, files: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> str:
    """`helm template iop CHART -f ... --set ...`: the rendered manifests as one YAML stream."""
    try:
        rendered = charts.Chart.load(str(chart)).render(values(chart, files, sets), name=RELEASE)
    except HelmError as exc:
        raise RenderRefused(str(exc)) from exc
    return "".join(f"---\n# Source: {path}\n{text.strip()}\n" for path, text in sorted(rendered.items())
                   if path.endswith((".yaml", ".yml")) and text.strip())

