"""A stand-in EHR endpoint, run as its own process: records what it receives, and can be told to fail,
hang or answer slowly.

    python -m tests.support.receiver PORT
    POST /_control {"mode": "ok" | "fail" | "hang" | "slow", "delay_s": 0.5}
    GET  /_received  -> [{"path", "headers", "body"}...] in arrival order
"""
from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"mode": "ok", "delay_s": 0.0}
RECEIVED: list[dict] = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/_received":
            with LOCK:
                return self._reply(200, RECEIVED)
        return self._reply(200, {"resourceType": "CapabilityStatement"})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/_control":
            STATE.update(json.loads(body))
            return self._reply(200, STATE)
        mode = STATE["mode"]
        if mode == "hang":
            time.sleep(3600)
        if mode == "fail":
            return self._reply(503, {"resourceType": "OperationOutcome"})
        if mode == "slow":
            time.sleep(float(STATE["delay_s"]))
        with LOCK:
            RECEIVED.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
        return self._reply(200, {"resourceType": "OperationOutcome", "issue": []})


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
