"""The explorer's HTTP server: the standard library's ``ThreadingHTTPServer``, no framework.

What it answers (anything else is 404):

=====================  ====================================================================
``GET /``              the page, and its script and style files (from this package's folder)
``GET /api/models``    the trained models the page may use, and the residual view's two nets
``POST /api/predict``  ``?model=NAME``, an image as the body: prediction, input, every layer
                       (or ``blank``, saying why there is nothing to answer: no ink yet)
``POST /api/residual`` an image as the body (none: an embedded test digit): the blocks of both nets
``GET /api/summary``   ``?model=NAME&c=&h=&w=&classes=``: the summary table and the model card
``GET /api/drawing``   the same query: ``classicnets draw`` as SVG
``GET /api/cost``      ``?input=28x28x192&layers=16x1,32x5``: ``classicnets cost``
=====================  ====================================================================

Safe by default (each rule has its test in tests/test_explore.py):

- It answers only requests addressed to itself: the Host header must be its own address
  (127.0.0.1, localhost or the host it was bound to, with its port). A web page elsewhere that
  points a name it controls at 127.0.0.1 (DNS rebinding) sends its own name, and is refused.
- It sends no CORS headers, so other origins' pages cannot read its answers, and a
  Content-Security-Policy that lets the page load nothing from anywhere else.
- Request bodies are at most 10 MB (refused from Content-Length, before reading) and images at
  most 4,000 x 4,000 pixels (:mod:`.upload`).
- Static files come from a table made at start-up from this package's ``static`` folder: a
  request path is looked up, never joined to a folder, so ``/../`` leads nowhere.
- Models are chosen by name among those loaded at start-up (:mod:`.models`); no request names a path.
- Each model runs one request at a time (its lock); any error ends that request only.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qsl, unquote, urlsplit

from ..data.reading import BlankImageError
from ..errors import ClassicNetsError
from .architecture import cost_json, drawing_svg, spec_for, summary_json
from .maps import look
from .models import Models, example_image
from .residual import through_blocks
from .upload import MAX_BYTES, Refused, decode

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# The page may load and fetch from its own origin only; pictures it makes itself are blob: URLs.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
TIMEOUT_S = 30  # a connection silent for this long is closed: a stalled client holds no thread for ever


def static_files() -> dict[str, tuple[bytes, str]]:
    """URL path -> (bytes, content type) of every file in the package's ``static`` folder, read
    once: the only files the server ever sends."""
    folder = resources.files(__package__) / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in TYPES:
            files["/" + entry.name] = (entry.read_bytes(), TYPES[suffix])
    files["/"] = files["/index.html"]
    return files


class ExplorerServer(ThreadingHTTPServer):
    """The server, with what its handlers share: the models, the static files, its own names."""

    daemon_threads = True  # a request in flight does not keep the process alive after Ctrl-C

    def __init__(self, address: tuple[str, int], models: Models) -> None:
        if ":" in address[0]:  # an IPv6 address, e.g. --host ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.models = models
        self.static = static_files()
        self.port = self.server_address[1]
        host = address[0].strip("[]")
        self.hosts = {"127.0.0.1", "localhost", "[::1]", host, f"[{host}]"}
        self.wildcard = host in ("0.0.0.0", "::", "")  # reachable at any of the machine's addresses

    def host_is_mine(self, header: str | None) -> bool:
        """Whether a Host header names this server: one of its names with its port. Bound to every
        interface, any IP address with the port is mine too (a rebinding attack sends a name)."""
        if not header:
            return False
        host, _, port = header.strip().lower().rpartition(":")
        if not host or port != str(self.port):
            return False
        if host in self.hosts:
            return True
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return self.wildcard


class Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    server_version = "classicnets-explore"
    protocol_version = "HTTP/1.1"  # keep-alive: the page's requests reuse one connection
    timeout = TIMEOUT_S
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK of the first: 40 ms added to every answer.
    disable_nagle_algorithm = True

    def log_message(self, format, *args) -> None:
        pass  # one line per request would bury the address printed at start-up

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    # ---- routes --------------------------------------------------------------------------

    def _get(self, path: str, query: dict) -> None:
        models = self.server.models
        if path == "/api/models":
            return self._json(models.describe())
        if path == "/api/summary":
            return self._json(summary_json(spec_for(query, self._trained())))
        if path == "/api/drawing":
            return self._send(200, drawing_svg(spec_for(query, self._trained())).encode(), TYPES[".svg"])
        if path == "/api/cost":
            return self._json(cost_json(query))
        if path in self.server.static:
            body, kind = self.server.static[path]
            return self._send(200, body, kind)
        raise Refused(404, f"nothing at {path}")

    def _post(self, path: str, query: dict) -> None:
        body = self._body()
        if path == "/api/predict":
            return self._json(self._predict(query, body))
        if path == "/api/residual":
            return self._json(self._residual(query, body))
        raise Refused(404, f"nothing to post to at {path}")

    def _predict(self, query: dict, body: bytes) -> dict:
        entry = self._entry(query.get("model", ""))
        started, cpu = time.perf_counter(), time.thread_time()
        image = decode(body, query.get("name") or "the drawing")
        try:
            with entry.lock:
                result = look(entry.load(), image)
        except BlankImageError as exc:  # a pen put down for the first time: nothing to answer yet
            result = {"blank": str(exc)}
        # What the answer took here (decoding, reading, the forward pass, the maps), for the page and
        # benchmarks/bench_explore.py: wall-clock, and this thread's CPU time (torch runs on it).
        took = {"ms": 1000 * (time.perf_counter() - started), "cpu_ms": 1000 * (time.thread_time() - cpu)}
        return {"seq": query.get("seq"), "model": entry.name, "server": took, **result}

    def _residual(self, query: dict, body: bytes) -> dict:
        image = decode(body, query.get("name") or "the drawing") if body else example_image()
        nets = []
        for entry in self.server.models.residual.values():
            with entry.lock:
                nets.append({**entry.describe(), **through_blocks(entry.load(), image)})
        return {"seq": query.get("seq"), "nets": nets}

    # ---- helpers -------------------------------------------------------------------------

    def _trained(self) -> dict[str, dict]:
        return {e.name: e.describe() for e in self.server.models.entries.values()}

    def _entry(self, name: str):
        try:
            return self.server.models.get(name)
        except KeyError:
            raise Refused(404, f"no model called {name!r} here: the page can use "
                               f"{', '.join(self.server.models.entries)}") from None

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise Refused(411, "send the body with a Content-Length, not chunked")
        length = self.headers.get("Content-Length", "0").strip()
        if not length.isdigit():
            raise Refused(400, f"Content-Length {length!r} is not a number of bytes")
        if int(length) > MAX_BYTES:
            raise Refused(413, f"the upload is {int(length):,} bytes: the explorer takes at most "
                               f"{MAX_BYTES:,} bytes (10 MB)")
        return self.rfile.read(int(length))

    def _answer(self, route) -> None:
        """Route one request; whatever goes wrong answers this request with its status and a
        message, and leaves the server serving."""
        try:
            if not self.server.host_is_mine(self.headers.get("Host")):
                raise Refused(403, f"refused: Host {self.headers.get('Host')!r} is not this server's address "
                                   f"(127.0.0.1:{self.server.port}); the explorer answers only requests sent to "
                                   f"itself, against DNS rebinding")
            url = urlsplit(self.path)
            route(unquote(url.path), dict(parse_qsl(url.query)))
        except Refused as exc:
            self._error(exc.status, exc.message)
        except ClassicNetsError as exc:  # the model could not read the picture: a blank page, a mode it refuses
            self._error(422, str(exc))
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug: said, logged, and the server goes on
            traceback.print_exc(file=sys.stderr)
            self._error(500, f"internal error: {type(exc).__name__}: {exc}")

    def _error(self, status: int, message: str) -> None:
        # A refused request may leave its body unread: close rather than read it as the next request.
        self.close_connection = True
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def _json(self, value) -> None:
        self._send(200, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", POLICY)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (ConnectionError, TimeoutError):  # the client went away: nothing to tell it
            self.close_connection = True

