"""The gunicorn worker the services run in: gunicorn's own error answers as FHIR OperationOutcomes.

A request gunicorn refuses before the application sees it (a URI too long, 414; header fields too large,
431; a malformed request line or header, 400) is answered by gunicorn with an HTML page. A FHIR client
expects an OperationOutcome in application/fhir+json like every other error, so this worker writes one:

    gunicorn -k shared.serving.FhirWorker 'services.intake.app:create_app()'
"""
from __future__ import annotations

import json
import ssl
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from gunicorn import util
from gunicorn.http import errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import ThreadWorker

from shared.config import ROOT
from shared.logs import get_logger
from shared.web import stack_frames

log = get_logger("iop.serving")

# (status, reason, issue code, what the client is told) by the parse error gunicorn raised; the first
# match wins, so subclasses come before their bases. Diagnostics never repeat what the client sent.
_CLIENT_ERRORS: tuple[tuple[type[BaseException], int, str, str, str], ...] = (
    (errors.LimitRequestLine, 414, "URI Too Long", "too-long", "the request line (URL) is longer than this "
                                                                "server accepts; send the search as POST _search"),
    (errors.LimitRequestHeaders, 431, "Request Header Fields Too Large", "too-long",
     "the request's header fields are larger or more numerous than this server accepts"),
    (errors.ExpectationFailed, 417, "Expectation Failed", "not-supported", "the Expect header cannot be met"),
    (errors.UnsupportedTransferCoding, 501, "Not Implemented", "not-supported",
     "the request's transfer coding is not supported"),
    (errors.ForbiddenProxyRequest, 403, "Forbidden", "forbidden", "proxy requests are not accepted from here"),
    (ssl.SSLError, 403, "Forbidden", "security", "the TLS handshake failed"),
    (errors.ConfigurationProblem, 500, "Internal Server Error", "exception", "the server is misconfigured"),
    (errors.ParseException, 400, "Bad Request", "structure", "the request is not well-formed HTTP/1.1"),
)


def classify(exc: BaseException) -> tuple[int, str, str, str]:
    """(status, reason, issue code, diagnostics) for an error gunicorn met; 500 for anything not the client's."""
    if isinstance(exc, (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName)):
        return 500, "Internal Server Error", "exception", "internal error; the request was not applied"
    for kind, status, reason, code, message in _CLIENT_ERRORS:
        if isinstance(exc, kind):
            return status, reason, code, message
    return 500, "Internal Server Error", "exception", "internal error; the request was not applied"


def error_bytes(status: int, reason: str, code: str, diagnostics: str) -> bytes:
    """A complete HTTP/1.1 response carrying one OperationOutcome issue; the connection closes after it."""
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "fatal" if status >= 500 else "error", "code": code, "diagnostics": diagnostics}]}
    body = json.dumps(outcome, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/fhir+json; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class FhirWorker(ThreadWorker):
    """gunicorn's threaded worker (the `--threads` one), answering its own errors in FHIR."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, reason, code, diagnostics = classify(exc)
        if status >= 500:
            incident = str(uuid.uuid4())
            log.error("request failed in the server", incident=incident, status=status, error=type(exc).__name__,
                      frames=stack_frames(exc))
            diagnostics = f"{diagnostics}. Incident {incident} in the server log."
        else:  # the class only: gunicorn's message may quote the request line, which may carry PHI
            log.info("request refused before the application", status=status, error=type(exc).__name__)
        self._log_access(req, client, addr, status, reason)
        try:
            util.write_nonblock(client, error_bytes(status, reason, code, diagnostics))
        except OSError:
            pass  # the client is gone: nothing to tell it

    def _log_access(self, req: Any, client: Any, addr: Any, status: int, reason: str) -> None:
        if req is None:
            return
        addr = addr or ("", -1)  # a unix socket has no peer address
        environ = default_environ(req, client, self.cfg)
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
        resp = Response(req, client, self.cfg)
        resp.status = f"{status} {reason}"
        self.log.access(resp, req, environ, timedelta(0))


def gunicorn_argv(service: str, port: int, workers: int | None = None, threads: int | None = None) -> list[str]:
    """The command that runs a service's web process with the deploy's gunicorn settings (deploy/gunicorn.conf.py:
    this worker class, JSON logs), as deploy/suite.sh does; tests and benchmarks pick workers and threads."""
    argv = [str(Path(sys.executable).parent / "gunicorn"), "--config", str(ROOT / "deploy" / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{port}"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    return [*argv, f"services.{service}.app:create_app()"]
