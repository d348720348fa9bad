"""What a real gunicorn process answers at the edges of HTTP: requests it refuses before the application sees
them (414, 431, 400) and bodies larger than the service reads (413), each as an OperationOutcome the client
can read."""
from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import pytest
import requests

from tests.support.auth import bearer
from tests.support.processes import TEST_PORTS, base_url

SIX_MB = b"x" * (6 * 1024 * 1024)  # past IOP_MAX_BODY_BYTES (5 MiB by default)
FHIR_JSON = "application/fhir+json"


def outcome_of(status: int, content_type: str | None, body: bytes) -> dict[str, Any]:
    assert (content_type or "").startswith(FHIR_JSON), (status, content_type, body[:200])
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"], outcome
    return outcome


def raw(service: str, request: bytes) -> tuple[int, str, bytes]:
    """Send bytes as they are and read the whole answer (the server closes the connection after an error)."""
    with socket.create_connection(("127.0.0.1", TEST_PORTS[service]), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), body


@pytest.mark.parametrize("service", list(TEST_PORTS))
def test_a_uri_too_long_is_414_as_an_operation_outcome(suite: Any, service: str) -> None:
    resp = requests.get(f"{base_url(service)}/CarePlan?subject=" + "x" * 6000, headers=bearer(), timeout=10)

    assert resp.status_code == 414
    outcome = outcome_of(resp.status_code, resp.headers.get("Content-Type"), resp.content)
    assert outcome["issue"][0]["code"] == "too-long"


@pytest.mark.parametrize("service", list(TEST_PORTS))
def test_header_fields_too_large_are_431_as_an_operation_outcome(suite: Any, service: str) -> None:
    resp = requests.get(f"{base_url(service)}/metadata", headers={"X-Padding": "y" * 9000}, timeout=10)

    assert resp.status_code == 431
    outcome_of(resp.status_code, resp.headers.get("Content-Type"), resp.content)


@pytest.mark.parametrize("request_bytes", [b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                                           b"G\x01T /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n",
                                           b"GET /fhir/metadata HTTP/9.9\r\nHost: x\r\n\r\n"],
                         ids=["header-without-colon", "bad-method", "bad-version"])
def test_a_malformed_request_is_400_as_an_operation_outcome(suite: Any, request_bytes: bytes) -> None:
    status, content_type, body = raw("careplan", request_bytes)

    assert status == 400
    outcome_of(status, content_type, body)


@pytest.mark.parametrize("service", ["intake", "careplan"])
def test_a_body_too_large_gets_a_413_the_client_can_read(suite: Any, service: str) -> None:
    url = f"{base_url(service)}/Goal" if service == "careplan" else f"{base_url(service)}/Patient"

    resp = requests.post(url, data=SIX_MB, headers={**bearer(), "Content-Type": FHIR_JSON}, timeout=30)

    assert resp.status_code == 413
    assert outcome_of(413, resp.headers.get("Content-Type"), resp.content)["issue"][0]["code"] == "too-costly"


@pytest.mark.parametrize("headers, content_type, status", [(bearer(), FHIR_JSON, 413), ({}, FHIR_JSON, 401),
                                                           (bearer(), "text/plain", 415)],
                         ids=["too-large", "no-token", "wrong-media-type"])
def test_a_client_that_sends_its_whole_body_first_reads_the_answer(suite: Any, headers: dict[str, str],
                                                                   content_type: str, status: int) -> None:
    """http.client writes the whole body before it reads: the answer must wait for the body to be read."""
    conn = http.client.HTTPConnection("127.0.0.1", TEST_PORTS["careplan"], timeout=30)
    try:
        conn.request("POST", "/fhir/Goal", SIX_MB, {**headers, "Content-Type": content_type})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()

    assert resp.status == status
    outcome_of(resp.status, resp.getheader("Content-Type"), body)
