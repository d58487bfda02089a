"""Verified downloads and safe archive extraction.

A download streams into a hidden temporary file next to its destination, is checked against
its SHA-256, and only then renamed into place with :func:`os.replace` (atomic on one file
system). So the destination path either does not exist or holds the complete, verified file:
an interrupted transfer or a corrupt mirror leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..errors import DataFormatError, DownloadError
from ..version import __version__

_CHUNK = 1024 * 1024
_FilterError = getattr(tarfile, "FilterError", ())  # Python 3.11.4+; () matches nothing
USER_AGENT = f"classicnets/{__version__} (+https://pypi.org/project/classicnets/)"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str | Sequence[str],
    dest_path: str | os.PathLike,
    sha256: str,
    *,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest_path`` and verify its SHA-256; return the path.

    ``url`` may be a list of mirrors, tried in order until one gives the right file. A file
    already at ``dest_path`` with the right checksum is kept without downloading. Raises
    :class:`DownloadError` naming each URL tried and why it failed (HTTP error, timeout,
    connection closed early, checksum mismatch with expected and actual digest).
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise DownloadError(f"no URL to download {dest_path} from")
    dest = Path(dest_path)
    sha256 = sha256.lower()
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for u in urls:
        try:
            _fetch(u, dest, sha256, progress=progress, timeout=timeout)
            return dest
        except DownloadError as e:
            failures.append(str(e))
    if len(failures) == 1:
        raise DownloadError(failures[0])
    raise DownloadError(f"could not download {dest.name} from any of {len(urls)} mirrors:\n  "
                        + "\n  ".join(failures))


def _fetch(url: str, dest: Path, sha256: str, *, progress: bool, timeout: float) -> None:
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"{url}: refused, expected an http:// or https:// URL")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        received = 0
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            show = progress and sys.stderr.isatty()
            with tqdm(total=expected, desc=dest.name, unit="B", unit_scale=True, unit_divisor=1024,
                      disable=not show) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if expected is not None and received != expected:
                raise DownloadError(f"{url}: connection closed after {received} of {expected} bytes "
                                    f"(interrupted transfer); nothing was saved")
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if actual != sha256:
            raise DownloadError(f"{url}: checksum mismatch for {dest.name}: expected SHA-256 "
                                f"{sha256}, got {actual} ({received} bytes); the file was deleted")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is for reading
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: cannot connect ({e.reason})") from None
    except (http.client.HTTPException, OSError, ValueError) as e:  # incl. timeouts, resets
        raise DownloadError(f"{url}: transfer failed ({type(e).__name__}: {e}); nothing was "
                            f"saved") from None
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Archives


def _stays_inside(path: PurePosixPath) -> bool:
    """Whether a relative path stays inside its folder once its ``..`` are resolved."""
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


def check_tar_member(member: tarfile.TarInfo, archive: str | os.PathLike) -> None:
    """Raise :class:`DataFormatError` for a member that would write outside the target folder.

    Refused: absolute paths, any ``..`` component (a genuine archive has no use for one), links
    that point outside or are absolute, device files, FIFOs, and anything that is not a file,
    folder or link.
    """
    name = member.name
    where = f"{archive}: member {name!r}"
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (
            len(name) > 1 and name[1] == ":"):
        raise DataFormatError(f"{where} has an absolute path; expected paths inside the archive")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise DataFormatError(f"{where} has a '..' component that could escape the target folder; "
                              f"refused")
    if member.isdev() or member.isfifo():
        raise DataFormatError(f"{where} is a device file or FIFO; refused")
    if (member.issym() or member.islnk()) and (not member.linkname or posixpath.normpath(name) == "."):
        raise DataFormatError(f"{where} is a link with an empty target or in place of the target folder; "
                              f"refused")
    if member.issym():
        link = member.linkname
        if link.startswith("/") or not _stays_inside(PurePosixPath(name).parent / link):
            raise DataFormatError(f"{where} is a symlink to {link!r}, outside the target folder; refused")
    elif member.islnk():
        link = member.linkname
        if link.startswith("/") or not _stays_inside(PurePosixPath(link)):
            raise DataFormatError(f"{where} is a hard link to {link!r}, outside the target folder; refused")
    elif not (member.isfile() or member.isdir()):
        raise DataFormatError(f"{where} has an unsupported type {member.type!r}; refused")


def safe_extract(tar_path: str | os.PathLike, target_dir: str | os.PathLike) -> Path:
    """Extract a tar archive (any compression) into ``target_dir``; return ``target_dir``.

    Every member is checked by :func:`check_tar_member`, and none may lie under a link member,
    before anything is written, so a hostile archive extracts nothing. Where Python has it
    (3.12, 3.11.4+), tarfile's own ``"data"`` filter runs as well.
    """
    tar_path, target = Path(tar_path), Path(target_dir)
    tar = None
    try:
        tar = tarfile.open(tar_path, "r:*")
        members = tar.getmembers()
    except FileNotFoundError:
        raise DataFormatError(f"{tar_path}: no such file (expected a tar archive)") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        if tar is not None:
            tar.close()
        raise DataFormatError(f"{tar_path}: corrupt or truncated tar archive ({e})") from None
    with tar:
        links = {PurePosixPath(m.name) for m in members if m.issym() or m.islnk()}
        files: set[str] = set()  # regular files so far: what a hard link may point to
        for m in members:
            check_tar_member(m, tar_path)
            if m.islnk() and posixpath.normpath(m.linkname) not in files:
                # tarfile would fail with a KeyError, or recurse forever on a link to itself
                raise DataFormatError(f"{tar_path}: member {m.name!r} is a hard link to {m.linkname!r}, "
                                      f"which is not a file earlier in the archive; refused")
            if m.isfile():
                files.add(posixpath.normpath(m.name))
            # A member under a linked folder could be steered anywhere by the link: refuse.
            through = [p for p in PurePosixPath(m.name).parents if p in links]
            if through:
                raise DataFormatError(f"{tar_path}: member {m.name!r} lies under the link "
                                      f"{str(through[0])!r}; refused")
        try:
            target.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(target, members=members)
        except _FilterError as e:
            raise DataFormatError(f"{tar_path}: refused by tarfile's data filter ({e})") from None
        except (tarfile.TarError, EOFError, KeyError, RecursionError) as e:  # links tarfile cannot resolve
            raise DataFormatError(f"{tar_path}: corrupt or truncated tar archive ({e})") from None
        except OSError as e:
            raise DataFormatError(f"{tar_path}: cannot extract into {target} ({e})") from None
    return target
