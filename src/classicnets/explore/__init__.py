"""``classicnets explore``: the networks in a browser, served from this machine.

    classicnets explore                        # lenet5-digits; prints http://127.0.0.1:8000/
    classicnets explore runs/lenet5/ --port 0  # your own checkpoint too, on any free port

One page, four views: draw a digit and watch every layer of a trained network answer (the
shipped weights, or a checkpoint given here); any zoo model drawn, tabulated and described at the
input size and number of classes you choose; x, F(x) and F(x) + x of every residual block of a
ResNet-20 beside a plain-20; and the 1x1-bottleneck arithmetic of ``classicnets cost``.

The server is the standard library's (:mod:`.server`); the page is three static files in
``static/`` that load nothing from anywhere else, so it works offline. :mod:`.models` holds the
models, :mod:`.maps` and :mod:`.residual` compute what is drawn, :mod:`.architecture` the summary,
drawing and cost, :mod:`.upload` decodes images within bounds. docs/explore.md says more.
"""

from __future__ import annotations

import errno
import ipaddress
import sys
import threading
import webbrowser

import torch

from ..errors import ClassicNetsError
from .models import Models, example_image
from .server import ExplorerServer

__all__ = ["make_server", "serve", "url_of"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_server(models: Models, host: str = "127.0.0.1", port: int = 0) -> ExplorerServer:
    """The server, bound and ready (``serve_forever`` runs it); port 0 picks a free port."""
    try:
        return ExplorerServer((host, port), models)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ClassicNetsError(f"port {port} is in use: --port 0 picks a free one") from None
        raise ClassicNetsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def url_of(server: ExplorerServer) -> str:
    """The page's address: 127.0.0.1 for loopback and every-interface binds (it answers there too)."""
    host = server.server_address[0]
    if _is_loopback(host) or host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1" if server.address_family.name == "AF_INET" else "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}/"


def _warm(server: ExplorerServer) -> None:
    """Make the first answer fast: the default model's first forward pass (torch's first call of
    each operator is slow). matplotlib, for the architecture view, is left to its first drawing: in
    the background it would slow the page's first load."""
    from .maps import look

    entry = server.models.get(server.models.default)
    with entry.lock:
        look(entry.load(), example_image())


def serve(checkpoint=None, host: str = "127.0.0.1", port: int = 8000, open_browser: bool = True) -> int:
    """Serve the explorer until Ctrl-C (KeyboardInterrupt): load the models, print the address on a
    line of its own, open it in the browser (unless ``open_browser`` is False)."""
    # One thread per forward pass: a request is one small image, which a second thread barely speeds
    # up, and on cores shared with other work (a training run) a thread that waits for a busy core
    # held every answer back by tens of milliseconds. Requests run side by side on their own threads.
    torch.set_num_threads(1)
    server = make_server(Models(checkpoint), host, port)
    try:
        if not _is_loopback(host):
            print(f"classicnets explore: warning: listening on {host}, so other machines can reach the page; "
                  f"it has no password. --host 127.0.0.1 keeps it to this machine.", file=sys.stderr)
        _warm(server)
        url = url_of(server)
        print(url, flush=True)
        if open_browser:  # in a thread: some browsers' launchers wait for the window to close
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        server.serve_forever()  # until Ctrl-C: KeyboardInterrupt, which the command reports (exit code 130)
    finally:
        server.server_close()
    return 0
