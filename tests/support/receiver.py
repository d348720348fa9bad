"""A stand-in EHR endpoint, run as its own process: records what it receives, and can be told to fail,
hang or answer slowly. `Receiver` is the tests' handle on one.

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

import requests

from services.aftercare.samples import notification_status
from tests.support.waiting import wait_until

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


class Receiver:
    def __init__(self, port: int, tmp_path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        from tests.support.processes import Proc

        self.proc = Proc(f"receiver-{port}", [sys.executable, "-m", "tests.support.receiver", str(port)], None,
                         tmp_path / f"receiver-{port}.log").start()
        wait_until(self._up, 20, what="receiver up")

    def _up(self) -> bool:
        if self.proc.popen is not None and self.proc.popen.poll() is not None:
            raise RuntimeError(f"the receiver on {self.url} exited (port in use?); see {self.proc.log}")
        try:
            return requests.get(f"{self.url}/_received", timeout=1).ok
        except requests.RequestException:
            return False

    def mode(self, mode: str, delay_s: float = 0) -> None:
        requests.post(f"{self.url}/_control", json={"mode": mode, "delay_s": delay_s}, timeout=5)

    def received(self) -> list[dict]:
        return requests.get(f"{self.url}/_received", timeout=5).json()

    def notifications(self) -> list[dict]:
        """Event notifications only (not the handshake), as parsed Bundles."""
        bundles = [json.loads(r["body"]) for r in self.received()]
        return [b for b in bundles if notification_status(b)["type"] == "event-notification"]


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
