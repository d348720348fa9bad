"""A stand-in EHR endpoint that timestamps what it receives (adapted from tests/support/receiver.py).

    python -m bench.receiver PORT            (its own process, for the benchmarks)
    Receiver(port).start()                   (a thread, for the demo)

    POST /<any path>          recorded with its arrival time (time.time(), after the body is read)
    GET  /_received?since=N   -> [{"t", "path", "headers", "body"}...] from the N-th on, in arrival order
    GET  /<any other path>    a CapabilityStatement (what a write-back handshake asks for)
"""
from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    server: ReceiverServer

    def log_message(self, *_: object) -> None:
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path == "/_received":
            since = int(parse_qs(url.query).get("since", ["0"])[0])
            return self._reply(200, self.server.received_since(since))
        return self._reply(200, {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                                 "fhirVersion": "4.0.1", "format": ["json"]})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        arrived = time.time()
        self.server.record({"t": arrived, "path": self.path, "headers": dict(self.headers),
                            "body": body.decode("utf-8", "replace")})
        return self._reply(200, {"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational", "diagnostics": "received"}]})


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self._received: list[dict] = []
        self._lock = threading.Lock()

    def record(self, item: dict) -> None:
        with self._lock:
            self._received.append(item)

    def received_since(self, since: int) -> list[dict]:
        with self._lock:
            return self._received[since:]


class Receiver:
    """The receiver in a background thread of this process."""

    def __init__(self, port: int) -> None:
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.server = ReceiverServer(port)
        self._thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def received(self, since: int = 0) -> list[dict]:
        return self.server.received_since(since)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    server = ReceiverServer(int(sys.argv[1]))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
