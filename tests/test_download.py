"""Downloads against a local HTTP server on 127.0.0.1, and safe tar extraction."""

import hashlib
import http.server
import io
import tarfile
import threading
import time

import pytest

from classicnets.data.download import download, safe_extract, sha256_file
from classicnets.errors import DataFormatError, DownloadError

GOOD = bytes(range(256)) * 4000  # ~1 MB: several read chunks
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
BAD = b"x" * len(GOOD)


class _Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        _Handler.requests.append(self.path)
        if self.path == "/good.bin":
            self._send(GOOD)
        elif self.path == "/corrupt.bin":
            self._send(BAD)
        elif self.path == "/short.bin":  # promises everything, sends half, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[: len(GOOD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/slow.bin":
            time.sleep(1.5)
            self._send(GOOD)
        else:
            self.send_error(404, "Not Found")

    def _send(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def leftovers(d):
    return sorted(p.name for p in d.iterdir())


def test_good_download(server, tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    assert download(f"{server}/good.bin", dest, GOOD_SHA, progress=True) == dest
    assert dest.read_bytes() == GOOD and sha256_file(dest) == GOOD_SHA
    assert leftovers(dest.parent) == ["file.bin"]  # no temporary file left


def test_existing_verified_file_is_kept(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(GOOD)
    before = len(_Handler.requests)
    download(f"{server}/good.bin", dest, GOOD_SHA.upper())
    assert len(_Handler.requests) == before


def test_checksum_mismatch(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError) as e:
        download(f"{server}/corrupt.bin", dest, GOOD_SHA, progress=False)
    message = str(e.value)
    assert f"{server}/corrupt.bin" in message and "checksum mismatch" in message
    assert GOOD_SHA in message and hashlib.sha256(BAD).hexdigest() in message
    assert leftovers(tmp_path) == []


def test_failed_redownload_keeps_old_file(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    with pytest.raises(DownloadError):
        download(f"{server}/corrupt.bin", dest, GOOD_SHA)
    assert dest.read_bytes() == b"old" and leftovers(tmp_path) == ["file.bin"]


def test_interrupted_transfer(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match=rf"short.bin: connection closed after \d+ of {len(GOOD)} bytes"):
        download(f"{server}/short.bin", dest, GOOD_SHA)
    assert leftovers(tmp_path) == []


def test_http_error_and_refused_connection(server, tmp_path):
    with pytest.raises(DownloadError, match="missing.bin: HTTP 404"):
        download(f"{server}/missing.bin", tmp_path / "f", GOOD_SHA)
    with pytest.raises(DownloadError, match="127.0.0.1:9.*cannot connect"):
        download("http://127.0.0.1:9/file", tmp_path / "f", GOOD_SHA, timeout=2)
    assert leftovers(tmp_path) == []


def test_timeout(server, tmp_path):
    with pytest.raises(DownloadError, match="slow.bin"):
        download(f"{server}/slow.bin", tmp_path / "f", GOOD_SHA, timeout=0.3)
    assert leftovers(tmp_path) == []


def test_only_http_urls(tmp_path):
    with pytest.raises(DownloadError, match="expected an http"):
        download("file:///etc/passwd", tmp_path / "f", GOOD_SHA)


def test_mirrors_tried_in_order(server, tmp_path):
    dest = tmp_path / "file.bin"
    mirrors = [f"{server}/missing.bin", f"{server}/corrupt.bin", f"{server}/short.bin", f"{server}/good.bin"]
    start = len(_Handler.requests)
    assert download(mirrors, dest, GOOD_SHA) == dest
    assert _Handler.requests[start:] == ["/missing.bin", "/corrupt.bin", "/short.bin", "/good.bin"]
    assert dest.read_bytes() == GOOD and leftovers(tmp_path) == ["file.bin"]


def test_all_mirrors_fail(server, tmp_path):
    with pytest.raises(DownloadError) as e:
        download([f"{server}/missing.bin", f"{server}/corrupt.bin"], tmp_path / "f.bin", GOOD_SHA)
    message = str(e.value)
    assert "any of 2 mirrors" in message and "HTTP 404" in message and "checksum mismatch" in message
    assert leftovers(tmp_path) == []


# ---- safe_extract ----------------------------------------------------------------------------


def make_tar(path, *members):
    """members: (TarInfo fields..., data) as dicts."""
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.type = m.get("type", tarfile.REGTYPE)
            info.linkname = m.get("linkname", "")
            data = m.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return path


def test_safe_extract_good(tmp_path):
    tar = make_tar(tmp_path / "ok.tar.gz",
                   {"name": "top", "type": tarfile.DIRTYPE},
                   {"name": "top/a.txt", "data": b"hello"},
                   {"name": "./top/b.txt", "data": b"bee"},
                   {"name": "top/link", "type": tarfile.SYMTYPE, "linkname": "a.txt"})
    out = safe_extract(tar, tmp_path / "out")
    assert (out / "top" / "a.txt").read_bytes() == b"hello"
    assert (out / "top" / "b.txt").read_bytes() == b"bee"
    assert (out / "top" / "link").is_symlink()


@pytest.mark.parametrize("bad, message", [
    ({"name": "../evil.txt", "data": b"x"}, "'..' component"),
    ({"name": "top/../../evil.txt", "data": b"x"}, "'..' component"),
    ({"name": "top/sub/../b.txt", "data": b"x"}, "'..' component"),
    ({"name": "/tmp/evil.txt", "data": b"x"}, "absolute path"),
    ({"name": "top/l", "type": tarfile.SYMTYPE, "linkname": "../../etc/passwd"}, "symlink to '../../etc"),
    ({"name": "top/l", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "symlink to '/etc/passwd'"),
    ({"name": "top/h", "type": tarfile.LNKTYPE, "linkname": "../outside"}, "hard link"),
    ({"name": "top/h", "type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, "hard link"),
    ({"name": "top/dev", "type": tarfile.CHRTYPE}, "device file"),
    ({"name": "top/blk", "type": tarfile.BLKTYPE}, "device file"),
    ({"name": "top/fifo", "type": tarfile.FIFOTYPE}, "FIFO"),
])
def test_safe_extract_refuses(tmp_path, bad, message):
    tar = make_tar(tmp_path / "bad.tar.gz", {"name": "top/fine.txt", "data": b"ok"}, bad)
    target = tmp_path / "deep" / "out"
    with pytest.raises(DataFormatError, match=rf"bad\.tar\.gz: member .*{message}"):
        safe_extract(tar, target)
    assert not target.exists()  # checked before anything was written
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()


def test_safe_extract_refuses_paths_through_links(tmp_path):
    # Each link alone stays inside; together "a/b" resolves to the parent of the target.
    tar = make_tar(tmp_path / "chain.tar.gz",
                   {"name": "a", "type": tarfile.SYMTYPE, "linkname": "."},
                   {"name": "a/b", "type": tarfile.SYMTYPE, "linkname": ".."},
                   {"name": "a/b/escaped.txt", "data": b"x"})
    with pytest.raises(DataFormatError, match="member 'a/b' lies under the link 'a'"):
        safe_extract(tar, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped.txt").exists()


def test_safe_extract_corrupt(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataFormatError, match="x.tar.gz: corrupt or truncated"):
        safe_extract(tmp_path / "x.tar.gz", tmp_path / "out")
    with pytest.raises(DataFormatError, match="no such file"):
        safe_extract(tmp_path / "missing.tar", tmp_path / "out")
