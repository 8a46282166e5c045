"""An OpenAI-compatible ``POST /v1/embeddings`` server on 127.0.0.1 with fault injection.

Vectors are deterministic (seeded by the text), so tests can check every output row. Every request
is recorded (arrival time, inputs, status). Faults are scripted per test: ``server.script`` is a
list consumed one per request (``None`` = answer normally), and policies apply to every request:

* ``max_inputs`` / ``max_chars``: a larger request gets 413 (the client must split it);
* ``api_key``: a request without ``Authorization: Bearer <api_key>`` gets 401;
* after a 429 with a Retry-After (seconds, ``retry-after-ms`` or an HTTP date), the window from
  the moment the 429 was sent to its end is recorded; a request that arrives inside any window is
  counted in ``violations`` (and refused with another 429). After a window ends, the first request
  is a *probe*: a request that arrives before the probe was answered is counted in ``crowded``
  (clients must not all wake at the window's end and fire at once);
* ``storm(n, ...)``: the next ``n`` requests get 429s (a 429 storm).

Fault kinds (``Fault.kind``): ``429`` (after ``delay`` s), ``500``, ``401``, ``400``, ``slow`` (sleep
``delay`` s, then answer with no data: a client that waited that long must reject it), ``slow_ok``
(sleep ``delay`` s, then answer normally), ``drop`` (close the connection without an answer),
``reset`` (abort the connection with a TCP RST), ``not_json`` (200 with an HTML page), ``bad_count``,
``nan``, ``zero``, ``wrong_dims``.

The log (``records``) has every request's arrival and answer time, inputs and status: ``paid()``
counts the texts the server answered with vectors (what a real API bills), across retries.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


def fake_vector(text: str, dims: int) -> np.ndarray:
    """The server's deterministic unit vector for ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    return v / np.linalg.norm(v)


@dataclass
class Fault:
    kind: str
    retry_after: float | None = None  # seconds, sent as Retry-After
    retry_after_ms: float | None = None  # sent as retry-after-ms
    retry_after_date: float | None = None  # seconds from now, sent as an HTTP date in Retry-After
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    delay: float = 0.0  # for "slow"


@dataclass
class Record:
    t: float  # monotonic arrival time
    inputs: list[str]
    status: int
    dimensions: int | None = None
    done: float = float("inf")  # monotonic time the answer (or hang-up) was decided


class OpenAIFakeServer:
    """Start with ``with OpenAIFakeServer() as srv:``; ``srv.base_url`` is ``http://127.0.0.1:P/v1``."""

    def __init__(self, dims: int = 32, api_key: str | None = None):
        self.dims = dims
        self.api_key = api_key
        self.script: list[Fault | None] = []
        self.max_inputs: int | None = None
        self.max_chars: int | None = None
        self.records: list[Record] = []
        self.windows: list[tuple[float, float]] = []  # (start, end) of each Retry-After window
        self.violations: list[float] = []
        self.crowded: list[float] = []  # arrivals while the probe after a window was unanswered
        self._awaiting_probe = False
        self._probe: Record | None = None
        self.success_headers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> OpenAIFakeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # -- views for assertions ------------------------------------------------------------------------
    def ok_records(self) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.status == 200]

    def embedded_texts(self) -> list[str]:
        return [t for r in self.ok_records() for t in r.inputs]

    def paid(self) -> Counter[str]:
        """How many times each text was answered with vectors (the bill), over the whole log."""
        with self._lock:
            return Counter(t for r in self.records if r.status == 200 for t in r.inputs)

    def paid_twice(self) -> list[str]:
        return sorted(t for t, n in self.paid().items() if n > 1)

    def storm(self, n: int, retry_after: float = 1.0, delay: float = 0.0) -> None:
        """The next ``n`` requests get 429 with ``Retry-After: retry_after`` (after ``delay`` s)."""
        with self._lock:
            self.script.extend(Fault("429", retry_after=retry_after, delay=delay) for _ in range(n))

    def late_violations(self, grace: float = 0.05) -> list[float]:
        """Arrivals inside a window more than ``grace`` s after it opened (requests already in
        flight when the 429 left the server arrive within a few ms of its start)."""
        with self._lock:
            return [t for t in self.violations if any(s + grace <= t < e for s, e in self.windows)]

    # -- request handling ------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        t = time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(length) or b"{}")
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dims = body.get("dimensions") or self.dims
        rec = Record(t, inputs, 0, body.get("dimensions"))
        with self._lock:
            fault = self.script.pop(0) if self.script else None
            inside = any(start <= t < end for start, end in self.windows)
            if inside:
                self.violations.append(t)
            elif self._probe is not None:
                self.crowded.append(t)
            elif self._awaiting_probe:
                self._awaiting_probe, self._probe = False, rec

        def record(status: int) -> None:  # called just before the answer (or the hang-up) goes out
            rec.status = status
            with self._lock:
                rec.done = time.monotonic()
                self.records.append(rec)
                if self._probe is rec:
                    self._probe = None

        try:
            self._answer(h, rec, record, fault, inputs, dims, body, inside)
        finally:
            with self._lock:
                if self._probe is rec:  # a malformed request that was never answered
                    self._probe = None

    def _answer(  # noqa: C901 a fake server: one branch per scripted fault, read top to bottom
        self, h: BaseHTTPRequestHandler, rec: Record, record: Any, fault: Fault | None,
        inputs: list[str], dims: int, body: dict[str, Any], inside: bool,
    ) -> None:
        if h.path.rstrip("/") != "/v1/embeddings":
            record(404)
            return self._error(h, 404, "not found")
        if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            record(401)
            return self._error(h, 401, "Incorrect API key provided")
        if fault is not None and fault.kind == "401":
            record(401)
            return self._error(h, 401, "Incorrect API key provided")
        if inside:
            record(429)
            return self._error(h, 429, "inside a Retry-After window", {"retry-after": "1"})
        too_many = self.max_inputs is not None and len(inputs) > self.max_inputs
        too_long = self.max_chars is not None and sum(len(x) for x in inputs) > self.max_chars
        if too_many or too_long:
            record(413)
            return self._error(h, 413, "request too large")
        if any(not x for x in inputs):
            record(400)
            return self._error(h, 400, "'$.input' is invalid: empty string")
        if fault is not None:
            if fault.kind == "drop":
                record(-1)
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return None
            if fault.kind == "reset":  # RST instead of FIN: "connection reset by peer"
                record(-3)
                h.close_connection = True
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.connection.close()
                return None
            if fault.kind == "slow":  # recorded on arrival; the late answer usually finds no client
                record(-2)
                time.sleep(fault.delay)
                return self._send(h, 200, {"object": "list", "data": []}, {})
            if fault.kind == "not_json":  # a proxy's error page with a 200
                record(-4)
                page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
                return self._send_raw(h, 200, page, "text/html", {})
            if fault.kind in {"429", "500", "400"}:
                return self._fail(h, int(fault.kind), fault, record)
        vectors = [fake_vector(x, dims) for x in inputs]
        if fault is not None and fault.kind == "bad_count":
            vectors = vectors[:-1]
        elif fault is not None and fault.kind == "nan":
            vectors[0] = np.full(dims, np.nan, dtype=np.float32)
        elif fault is not None and fault.kind == "zero":
            vectors[0] = np.zeros(dims, dtype=np.float32)
        elif fault is not None and fault.kind == "wrong_dims":
            vectors[0] = vectors[0][:-1]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
            for i, v in enumerate(vectors)
        ]
        data.reverse()  # clients must restore order by index
        if fault is not None and fault.kind == "slow_ok":
            time.sleep(fault.delay)
        record(200)
        payload = {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }
        self._send(h, 200, payload, self.success_headers)
        return None

    def _fail(self, h: BaseHTTPRequestHandler, status: int, fault: Fault, record: Any) -> None:
        if fault.delay:
            time.sleep(fault.delay)
        headers = dict(fault.headers)
        wait = None
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
            wait = fault.retry_after
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
            wait = fault.retry_after_ms / 1000
        now = time.monotonic()
        end = now + (wait or 0.0)
        if fault.retry_after_date is not None:  # whole seconds: the window ends at that instant
            wall = time.time() + fault.retry_after_date
            headers["retry-after"] = email.utils.formatdate(wall, usegmt=True)
            end = now + (int(wall) - time.time())
        if status == 429 and end > now:
            with self._lock:
                self.windows.append((now, end))
                self._awaiting_probe = True
        record(status)
        self._error(h, status, f"injected {status}", headers)

    def _error(self, h: BaseHTTPRequestHandler, status: int, message: str,
               headers: dict[str, str] | None = None) -> None:
        payload = {"error": {"message": message, "type": "fake", "code": status}}
        self._send(h, status, payload, headers or {})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str]) -> None:
        OpenAIFakeServer._send_raw(h, status, json.dumps(payload).encode(), "application/json", headers)

    @staticmethod
    def _send_raw(h: BaseHTTPRequestHandler, status: int, raw: bytes, ctype: str, headers: dict[str, str]) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(raw)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass
