"""What tests/test_explore.py and benchmarks/bench_explore.py need around the explorer's server:
the server in a thread, plain HTTP requests (also malformed ones, on a raw socket), the images
the page sends, and a browser, when one is installed."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import socket
import struct
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from classicnets.explore import make_server
from classicnets.explore.models import Models

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


@contextmanager
def running_server(checkpoint=None):
    """The explorer on a free port of 127.0.0.1, serving from a thread; yields the server."""
    server = make_server(Models(checkpoint), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def call(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         host: str | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; ``host`` replaces the Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{server.port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def raw(server, data: bytes) -> bytes:
    """Send bytes as they are, say that is all (a body shorter than its Content-Length ends there), and
    return what comes back before the server closes (or 5 s pass)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def encode(img: Image.Image, format: str = "PNG") -> bytes:
    """An image file's bytes: PNG, or another format Pillow writes."""
    out = io.BytesIO()
    img.save(out, format=format)
    return out.getvalue()


def get_json(server, path: str):
    """The JSON of a GET that must succeed."""
    status, _, body = call(server, "GET", path)
    assert status == 200, body
    return json.loads(body)


def post_json(server, path: str, body: bytes):
    """The JSON of a POST that must succeed."""
    status, _, answer = call(server, "POST", path, body)
    assert status == 200, answer
    return json.loads(answer)


def refusal(server, method: str, path: str, body: bytes | None = None, **kwargs) -> tuple[int, str]:
    """(status, the server's message) of a request the server refuses."""
    status, headers, answer = call(server, method, path, body, **kwargs)
    return status, json.loads(answer)["error"] if headers.get("content-type") == "application/json" else answer


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG that claims ``width`` x ``height`` one-bit pixels and holds a few bytes of them:
    what a decompression bomb looks like from its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def chromium() -> str | None:
    """Debian's chromium (or the headless shell), if installed."""
    for name in ("chromium", "chromium-headless-shell"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def launch(playwright):
    """A headless Chromium launched the way CI launches it: the system's browser, nothing downloaded."""
    return playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)


def draw_strokes(page, strokes: list[list[tuple]], steps: int = 4) -> None:
    """Draw ``strokes`` (in the 280-px canvas's own pixels) on the page's canvas with the mouse."""
    box = page.get_by_test_id("draw").bounding_box()
    scale = box["width"] / 280
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=steps)
        page.mouse.up()
