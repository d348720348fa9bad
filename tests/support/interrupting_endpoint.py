"""An EHR endpoint in the test's own process that changes the world while a notification is in flight.

On the first notification of a given type for each Subscription, it calls `interrupt(subscription_id)`
(say, a client's DELETE) before it answers, so the change lands between the worker's read of the
Subscription and its write of the result. Notifications of that type get `status`, all others 200.
It records the SubscriptionStatus of everything it receives.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.aftercare.samples import notification_status


class InterruptingEndpoint:
    def __init__(self, port: int, interrupt: Callable[[str], None], kind: str = "handshake",
                 status: int = 200) -> None:
        self.received: list[dict[str, Any]] = []
        self.interrupted: list[str] = []
        self.errors: list[BaseException] = []  # what `interrupt` raised; a test asserts there is none
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                got = endpoint.receive(json.loads(self.rfile.read(int(self.headers["Content-Length"]))), interrupt,
                                       kind)
                self.send_response(status if got == kind else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receive(self, bundle: dict, interrupt: Callable[[str], None], kind: str) -> str:
        status = notification_status(bundle)
        sid = status["subscription"]["reference"].rsplit("/", 1)[-1]
        with self._lock:
            first = status["type"] == kind and sid not in self.interrupted
            if first:
                self.interrupted.append(sid)
            self.received.append(status)
        if first:
            try:
                interrupt(sid)
            except BaseException as exc:  # noqa: BLE001 - kept for the test to see, not lost in this thread
                self.errors.append(exc)
        return status["type"]

    def kinds(self, sid: str) -> list[str]:
        with self._lock:
            return [s["type"] for s in self.received if s["subscription"]["reference"].endswith(f"/{sid}")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
