"""A local HTTP server that replays scripted responses and records every request it gets.

    with ReplayServer({("GET", "/login"): (200, {"token": "t"}),
                       ("GET", "/v3/x"): [(503, {"error": "busy"}), (200, {"ok": 1})]}) as server:
        httpx.get(server.url + "/v3/x")          # -> 503, the next call gets 200
        server.calls("GET", "/v3/x")              # -> 1
        server.last("GET", "/v3/x").query         # -> {}

A route value is one of:
- ``(status, body)`` or ``(status, body, headers)``: a dict or list body is sent as JSON,
  ``str``/``bytes`` as they are (to replay malformed bodies), ``None`` as an empty body;
- ``Reply(status, body, headers, delay_s)``: the same, answered after ``delay_s`` seconds;
- a callable that takes the ``RecordedRequest`` and returns one of the above;
- a list of the above: one per call, in order, the last one repeating.
Paths are matched without the query string, percent-decoded. Unknown routes answer 404.
The server binds 127.0.0.1 on a free port and serves from daemon threads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes


Answer = Reply | tuple[int, Any] | tuple[int, Any, Mapping[str, str]]
Route = Answer | Callable[[RecordedRequest], Answer] | Sequence[Any]


def _as_reply(answer: Answer) -> Reply:
    if isinstance(answer, Reply):
        return answer
    if isinstance(answer, tuple) and len(answer) in (2, 3):
        return Reply(answer[0], answer[1], answer[2] if len(answer) == 3 else {})
    raise TypeError(f"route answer = {answer!r}: expected Reply or (status, body[, headers])")


def _encode(body: Any) -> tuple[bytes, str | None]:
    if body is None:
        return b"", None
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    if isinstance(body, str):
        return body.encode(), "application/json"
    return json.dumps(body).encode(), "application/json"


class ReplayServer:
    def __init__(self, routes: Mapping[tuple[str, str], Route] | None = None) -> None:
        self.routes: dict[tuple[str, str], Route] = dict(routes or {})
        self.requests: list[RecordedRequest] = []
        self._served: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ReplayServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="replay-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self, method: str, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def calls(self, method: str, path: str) -> int:
        return len(self.log(method, path))

    def last(self, method: str, path: str) -> RecordedRequest:
        matching = self.log(method, path)
        if not matching:
            raise AssertionError(f"no {method} {path} request; got {[(r.method, r.path) for r in self.requests]}")
        return matching[-1]

    def reply_for(self, request: RecordedRequest) -> Reply:
        """Record the request and pick its scripted answer (called from the handler thread)."""
        key = (request.method, request.path)
        with self._lock:
            self.requests.append(request)
            route = self.routes.get(key)
            index = self._served.get(key, 0)
            self._served[key] = index + 1
        if route is None:
            return Reply(404, {"error": f"no route for {request.method} {request.path}"})
        if isinstance(route, list):
            route = route[min(index, len(route) - 1)]
        if callable(route):
            route = route(request)
        return _as_reply(route)


def _handler_for(server: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = RecordedRequest(
                method=self.command, path=unquote(parts.path), query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()}, body=self.rfile.read(length) if length else b"")
            try:
                reply = server.reply_for(request)
            except Exception as exc:  # a broken route answers 500 instead of hanging the client
                reply = Reply(500, {"error": f"replay route failed: {exc!r}"})
            if reply.delay_s:
                threading.Event().wait(reply.delay_s)
            payload, content_type = _encode(reply.body)
            try:
                self.send_response(reply.status)
                if content_type and not any(k.lower() == "content-type" for k in reply.headers):
                    self.send_header("Content-Type", content_type)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    return Handler
