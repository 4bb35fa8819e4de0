"""A real HTTP/1.1 server on loopback that answers from a script, for mlclient's fault tests.

Each request takes the next step of the script (the last step repeats): an Answer (status,
JSON body, headers), a Reset (the connection closed with an RST), a Stall (no answer for a
while, then the answer given), or a Gate (the answer waits until the test opens it).
Without a script every request is answered as the ML service would (`service_answer`).
The server records each request (arrival time, path, headers, body, connection number)
and counts connections; `close()` stops it answering at all. Answers are written in one
send, so no Nagle delay skews times.
"""

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from socketserver import ThreadingTCPServer

from pganalytics.analytics.features import FEATURE_NAMES


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: dict | None = None  # None: as the service would answer
    headers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reset:
    """Close the connection with an RST once the request is read."""


@dataclass(frozen=True)
class Stall:
    """Hold the request for `seconds`, then answer `then`."""

    seconds: float
    then: Answer = Answer()


@dataclass(frozen=True)
class Gate:
    """Hold the request until `opened` is set, then answer `then`."""

    opened: threading.Event
    then: Answer = Answer()


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the request was read
    method: str
    path: str
    headers: dict
    body: dict | None
    connection: int


def prediction(item, version="v-test"):
    features = item.get("features") or {}
    mean = float(features.get("mean_ms", 1.0))
    return {
        "fingerprint": item["fingerprint"], "scenario": item.get("scenario", "current"),
        "predicted_ms": mean, "confidence": 0.5, "interval_ms": [0.0, 2 * mean],
        "model_version": version, "source": "model",
    }


def service_answer(request, version="v-test"):
    """The body the ML service would answer for this request (the calls the tests use)."""
    if request.path == "/api/v1/predict":
        return prediction(request.body, version)
    if request.path == "/api/v1/predict/batch":
        return {"items": [prediction(item, version) for item in request.body["items"]]}
    if request.path == "/api/v1/model":
        return {"model_version": version, "feature_names": list(FEATURE_NAMES), "metrics": {},
                "trained_at": None, "source": "model"}
    if request.path == "/api/v1/train":
        return {"job_id": "job-1", "status": "queued"}
    return {"status": "ok", "model_version": version}


class FaultServer:
    """`FaultServer(script)`; `.url`; `.received`; `.connections`; `close()`."""

    def __init__(self, script=(Answer(),)):
        self.script = list(script)
        self.version = "v-test"  # the model version the default answers carry
        self.received = []
        self.connections = 0
        self.sockets = []  # every accepted connection, shut at close()
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.server = ThreadingTCPServer(("127.0.0.1", 0), self.handler_class())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next_step(self, request):
        with self.lock:
            self.received.append(request)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def requests_to(self, path):
        return [request for request in self.received if request.path == path]

    def close(self):
        """Stop listening and cut the open connections: nothing answers any more."""
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for accepted in self.sockets:
                try:
                    accepted.shutdown(socket.SHUT_RDWR)
                except OSError:  # already closed
                    pass

    def handler_class(self):
        fault_server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with fault_server.lock:
                    fault_server.connections += 1
                    fault_server.sockets.append(self.connection)
                    self.number = fault_server.connections

            def do_GET(self):
                self.serve()

            def do_POST(self):
                self.serve()

            def serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Received(
                    time.monotonic(), self.command, self.path, dict(self.headers),
                    json.loads(raw) if raw else None, self.number,
                )
                step = fault_server.next_step(request)
                if isinstance(step, Reset):
                    self.reset()
                    return
                if isinstance(step, Stall):
                    fault_server.closing.wait(step.seconds)
                    step = step.then
                elif isinstance(step, Gate):
                    step.opened.wait(30)
                    step = step.then
                body = step.body if step.body is not None else service_answer(
                    request, fault_server.version
                )
                self.answer(step.status, body, step.headers)

            def answer(self, status, body, headers):
                payload = json.dumps(body).encode()
                head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                        "Content-Type: application/json", f"Content-Length: {len(payload)}"]
                head += [f"{name}: {value}" for name, value in headers.items()]
                try:
                    self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
                except OSError:  # the client gave up (a read timeout)
                    self.close_connection = True

            def reset(self):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def log_message(self, format, *args):
                pass

        return Handler
