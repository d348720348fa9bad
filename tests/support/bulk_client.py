"""A Bulk Data Access 2.0 client written from the specification (hl7.fhir.uv.bulkdata 2.0.0, "Export"), for want
of a kept one on PyPI or npm: it knows nothing of this suite but the base URL and a Bearer token.

Kick-off (export.html#bulk-data-kick-off-request): GET [base]/[$export path] with `Accept: application/fhir+json`
and `Prefer: respond-async`; the server answers 202 Accepted with the status URL in Content-Location. Status
(#bulk-data-status-request): GET the status URL; 202 while in progress (X-Progress optional, Retry-After
honoured), 200 with a JSON manifest (transactionTime, request, requiresAccessToken, output[], error[]) when done,
4xx/5xx with an OperationOutcome on error. Files (#file-request): GET each output url, with the token when
requiresAccessToken is true, `Accept: application/fhir+ndjson`. Delete (#bulk-data-delete-request): DELETE the
status URL, 202 Accepted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.support.waiting import wait_until


class BulkError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


@dataclass
class BulkClient:
    base: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)
    progress: list[str] = field(default_factory=list)  # each X-Progress seen while polling

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def kick_off(self, path: str, params: dict[str, str] | None = None) -> str:
        """Start an export (`$export`, `Patient/$export`, `Group/{id}/$export`); its status URL."""
        resp = self.session.get(f"{self.base}/{path}", params=params or {}, timeout=30, headers={
            "Accept": "application/fhir+json", "Prefer": "respond-async", **self._auth()})
        if resp.status_code != 202:
            raise BulkError(resp.status_code, resp.text)
        return resp.headers["Content-Location"]

    def _status(self, url: str) -> dict[str, Any] | None:
        resp = self.session.get(url, headers={"Accept": "application/json", **self._auth()}, timeout=30)
        if resp.status_code == 202:
            self.progress.append(resp.headers.get("X-Progress", ""))
            return None
        if resp.status_code != 200:
            raise BulkError(resp.status_code, resp.text)
        manifest = resp.json()
        for key in ("transactionTime", "request", "requiresAccessToken", "output", "error"):
            if key not in manifest:
                raise BulkError(200, f"the manifest has no {key}")
        return manifest

    def wait(self, status_url: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll the status URL until the export completes; the manifest."""
        found: list[dict[str, Any]] = []

        def complete() -> bool:
            manifest = self._status(status_url)
            if manifest is not None:
                found.append(manifest)
            return bool(found)

        wait_until(complete, timeout, 0.1, "the bulk export to complete")
        return found[0]

    def download(self, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Every output file's resources, by type."""
        headers = {"Accept": "application/fhir+ndjson", **(self._auth() if manifest["requiresAccessToken"] else {})}
        out: dict[str, list[dict[str, Any]]] = {}
        for item in manifest["output"]:
            resp = self.session.get(item["url"], headers=headers, timeout=60, stream=True)
            if resp.status_code != 200:
                raise BulkError(resp.status_code, resp.text)
            resources = [json.loads(line) for line in resp.iter_lines(decode_unicode=True) if line]
            if any(r.get("resourceType") != item["type"] for r in resources):
                raise BulkError(200, f"a file of {item['type']} holds another type")
            out.setdefault(item["type"], []).extend(resources)
        return out

    def delete(self, status_url: str) -> None:
        resp = self.session.delete(status_url, headers=self._auth(), timeout=30)
        if resp.status_code != 202:
            raise BulkError(resp.status_code, resp.text)

    def export(self, path: str, params: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Kick-off, poll, download, delete: the whole flow."""
        status_url = self.kick_off(path, params)
        resources = self.download(self.wait(status_url))
        self.delete(status_url)
        return resources
