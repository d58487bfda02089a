"""Where classicnets writes, and what it does when it cannot: a read-only folder, a full disk, an
``-o``/``--out`` that names the wrong kind of thing.

Every case runs the command line and checks the same things: the exit code, one line instead of
a traceback, the path named, the numbers printed where they were computed, no file changed that
should not have, no temporary file left.

The rule for ``-o``/``--out``: an option that takes a FILE (``export -o``, ``draw -o``) given a
folder (one that exists, or a name ending in /) writes the default file name into it; one that
takes a DIR (``evaluate --out``, ``show -o``) given a file is refused. Missing folders are
created, as ``train --out`` does. An existing file is replaced, atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classicnets import export
from classicnets.export import export_checkpoint
from conftest import temp_files


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder``, by relative path, with a hash of its content."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_clean_failure(code, err, path, option, expected_code=2):
    """One line naming ``path``, offering ``option``; no traceback."""
    assert code == expected_code, err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("classicnets ")]
    assert f"could not write {path}" in line and line.endswith(f"; choose another place with {option}"), err


# ---- a read-only folder -------------------------------------------------------------------
# Root writes into any folder whatever its mode (CAP_DAC_OVERRIDE), so as root these tests hold
# this thread to the modes while the command runs: the capability leaves its effective set and
# comes back afterwards. (Running as nobody instead would not do here: the interpreter itself
# lives under /root.) As another user, the mode alone makes the folder read-only.

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAP_VERSION_3 = 0x20080522
_CAP_DAC_OVERRIDE = 1 << 1


@contextlib.contextmanager
def held_to_file_modes():
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.skip(f"capget failed ({os.strerror(ctypes.get_errno())}): cannot make a folder read-only for root")
    effective = data[0].effective
    data[0].effective = effective & ~_CAP_DAC_OVERRIDE
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip(f"capset failed ({os.strerror(ctypes.get_errno())}): cannot make a folder read-only for root")
    try:
        yield
    finally:
        data[0].effective = effective
        assert libc.capset(ctypes.byref(header), data) == 0, "could not restore CAP_DAC_OVERRIDE"


@pytest.fixture
def read_only_run(run_dir, tmp_path):
    """A copy of the trained run in a folder of mode 0555, and a digit image beside it."""
    image = tmp_path / "digit.png"
    Image.fromarray(np.full((28, 28), 255, dtype=np.uint8)).save(image)
    run_dir.chmod(0o555)
    try:
        with held_to_file_modes():
            try:
                (run_dir / ".probe").touch()
            except PermissionError:
                pass
            else:
                (run_dir / ".probe").unlink()
                pytest.skip("this user may write into a folder of mode 0555: no read-only folder to test")
        yield run_dir, image
    finally:
        run_dir.chmod(0o755)


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_evaluate_in_a_read_only_run_prints_the_numbers_then_warns(cli, read_only_run, fmt):
    """The numbers are the result: shown, exit 0; the figure that could not be written is a
    warning that says where it could go."""
    run, _ = read_only_run
    before = snapshot(run)
    with held_to_file_modes():
        code, out, err = cli("evaluate", run, "--format", fmt)
    assert code == 0, err
    if fmt == "json":
        result = json.loads(out)
        assert result["count"] == 1000 and len(result["confusion"]) == 10
    else:
        assert "accuracy" in out and "confusion matrix" in out and "wrote" not in out
    assert err.startswith("classicnets evaluate: warning: could not write")
    assert_clean_failure(code, err, run / "confusion.png", "--out DIR", expected_code=0)
    assert "read-only" in err
    assert snapshot(run) == before and not temp_files(run)


def test_show_in_a_read_only_run_fails_cleanly(cli, read_only_run):
    run, image = read_only_run
    before = snapshot(run)
    with held_to_file_modes():
        code, out, err = cli("show", run, image)
    assert_clean_failure(code, err, run / "lenet5-filters.png", "-o DIR")
    assert out == "" and snapshot(run) == before and not temp_files(run)


@pytest.mark.parametrize(("fmt", "name"), [
    pytest.param("onnx", "model.onnx", marks=pytest.mark.slow),  # the exporter's first run: seconds
    ("torchscript", "model.torchscript.pt"),
])
def test_export_into_a_read_only_run_fails_cleanly(cli, read_only_run, fmt, name):
    run, _ = read_only_run
    before = snapshot(run)
    with held_to_file_modes():
        code, out, err = cli("export", run, "--format", fmt)
    assert_clean_failure(code, err, run / name, "-o FILE")
    assert out == "" and snapshot(run) == before and not temp_files(run)


# ---- -o / --out naming the wrong kind of thing ----------------------------------------------

def test_a_file_given_for_a_folder_is_refused_before_any_work(cli, trained_run, tmp_path):
    """evaluate --out FILE and show -o FILE: refused with one line, nothing computed or written."""
    taken = tmp_path / "taken.txt"
    taken.write_text("mine\n")
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    before = snapshot(tmp_path)
    code, out, err = cli("evaluate", trained_run, "--out", taken)
    assert_clean_failure(code, err, taken / "confusion.png", "--out DIR")
    assert f"{taken} is a file, not a folder" in err and out == ""
    code, out, err = cli("show", trained_run, image, "-o", taken)
    assert_clean_failure(code, err, taken / "lenet5-filters.png", "-o DIR")
    assert f"{taken} is a file, not a folder" in err and out == ""
    assert snapshot(tmp_path) == before and not temp_files(tmp_path)


def test_a_folder_given_for_a_file_gets_the_default_name(cli, trained_run, tmp_path):
    """export -o DIR and draw -o DIR write their default file name into the folder; so does a name
    ending in / (created)."""
    folder = tmp_path / "exports"
    folder.mkdir()
    code, out, err = cli("export", trained_run, "--format", "torchscript", "--no-check", "-o", folder)
    assert code == 0, err
    assert out.strip() == f"wrote {folder / 'model.torchscript.pt'}"
    code, out, err = cli("draw", "lenet5", "-o", folder)
    assert code == 0 and out.strip() == f"wrote {folder / 'lenet5.svg'}", err
    code, out, err = cli("draw", "lenet5", "-o", f"{tmp_path / 'new'}{os.sep}")
    assert code == 0 and (tmp_path / "new" / "lenet5.svg").is_file(), err
    assert sorted(os.listdir(folder)) == ["lenet5.svg", "model.torchscript.pt"]


def test_missing_folders_are_created_and_files_replaced(cli, tmp_path):
    target = tmp_path / "missing" / "deeper" / "x.svg"
    code, out, err = cli("draw", "lenet5", "-o", target)
    assert code == 0 and target.read_text().startswith("<?xml"), err
    target.write_text("old")
    code, _, err = cli("draw", "lenet5", "-o", target)
    assert code == 0 and target.read_text().startswith("<?xml"), err
    assert not temp_files(target.parent)


def test_a_file_in_the_way_of_a_folder(cli, tmp_path):
    blocker = tmp_path / "plain"
    blocker.write_text("mine\n")
    before = snapshot(tmp_path)
    code, out, err = cli("draw", "lenet5", "-o", blocker / "sub" / "x.svg")
    assert_clean_failure(code, err, blocker / "sub" / "x.svg", "-o FILE")
    assert f"{blocker} is a file, not a folder" in err and out == ""
    assert snapshot(tmp_path) == before


# ---- every write error, one message ----------------------------------------------------------

def error(cls, code):
    return cls(code, os.strerror(code))


@pytest.mark.parametrize(("failure", "words"), [
    (error(OSError, errno.ENOSPC), "No space left on device"),
    (error(OSError, errno.EROFS), "Read-only file system"),
    (error(OSError, errno.EDQUOT), "Disk quota exceeded"),
    (error(PermissionError, errno.EACCES), "Permission denied (a read-only folder?)"),
    (error(OSError, errno.EFBIG), "File too large (over the file-size limit, ulimit -f)"),
], ids=["ENOSPC", "EROFS", "EDQUOT", "EACCES", "EFBIG"])
def test_a_write_that_fails_halfway_is_one_line(cli, tmp_path, monkeypatch, failure, words):
    """Whatever the error, the writer half done: the old file stays, no temporary file is left."""
    from matplotlib.figure import Figure

    def half_then_fail(fig, fname, **kwargs):
        Path(fname).write_bytes(b"<svg half")
        raise failure

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    old = tmp_path / "net.svg"
    old.write_text("an older drawing")
    code, out, err = cli("draw", "lenet5", "-o", old)
    assert_clean_failure(code, err, old, "-o FILE")
    assert f"could not write {old}: {words}; the previous net.svg is intact;" in err and out == ""
    assert old.read_text() == "an older drawing" and os.listdir(tmp_path) == ["net.svg"]


def test_a_folder_where_the_file_should_be(tmp_path):
    """What no command meets (a FILE option given a folder writes into it), a library call may."""
    from classicnets.checkpoint import atomic_write_text
    from classicnets.errors import OutputError

    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputError, match=f"could not write {tmp_path / 'taken'}: it is a folder$"):
        atomic_write_text(tmp_path / "taken", "text")
    assert os.listdir(tmp_path) == ["taken"] and not os.listdir(tmp_path / "taken")


# ---- a full disk: the file-size limit makes the kernel refuse writes past N bytes (EFBIG) ---

@contextlib.contextmanager
def file_size_limit(limit: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_evaluate_on_a_full_disk_keeps_the_numbers_and_the_old_figure(cli, run_dir):
    (run_dir / "confusion.png").write_bytes(b"an older figure")
    before = snapshot(run_dir)
    with file_size_limit(4096):
        code, out, err = cli("evaluate", run_dir)
    assert "accuracy" in out and "confusion matrix" in out
    assert_clean_failure(code, err, run_dir / "confusion.png", "--out DIR", expected_code=0)
    assert "File too large" in err and "the previous confusion.png is intact" in err
    assert snapshot(run_dir) == before and not temp_files(run_dir)


def test_show_and_draw_on_a_full_disk(cli, trained_run, tmp_path):
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    old = tmp_path / "lenet5.svg"
    old.write_text("an older drawing")
    before = snapshot(tmp_path)
    with file_size_limit(4096):
        show = cli("show", trained_run, image, "-o", tmp_path)
        draw = cli("draw", "lenet5", "-o", old)
    assert_clean_failure(show[0], show[2], tmp_path / "lenet5-filters.png", "-o DIR")
    assert_clean_failure(draw[0], draw[2], old, "-o FILE")
    assert "the previous lenet5.svg is intact" in draw[2]
    assert snapshot(tmp_path) == before and not temp_files(tmp_path)


# The exports run in a process of their own: before they were written through memory, torch's
# TorchScript writer ended the whole process with a C++ exception on a full disk.
EXPORTS_ON_A_FULL_DISK = r"""
import contextlib, io, json, resource, signal, sys, traceback
from classicnets.cli import main

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
results = []
for argv in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException:
            code = "crashed"
            traceback.print_exc()
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


@pytest.mark.slow
def test_exports_on_a_full_disk_leave_the_old_files(trained_run, tmp_path):
    outputs = {"onnx": tmp_path / "model.onnx", "torchscript": tmp_path / "model.torchscript.pt"}
    for path in outputs.values():
        path.write_bytes(b"an older export")
    before = snapshot(tmp_path)
    commands = [["export", str(trained_run), "--format", fmt, "-o", str(path)] for fmt, path in outputs.items()]
    done = subprocess.run([sys.executable, "-c", EXPORTS_ON_A_FULL_DISK, "100000", json.dumps(commands)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for (code, out, err), path in zip(json.loads(done.stdout), outputs.values(), strict=True):
        assert_clean_failure(code, err, path, "-o FILE")
        assert "File too large" in err and f"the previous {path.name} is intact" in err and out == ""
    assert snapshot(tmp_path) == before and not temp_files(tmp_path)


# ---- ONNX with its weights in a second file: both written atomically ------------------------

@pytest.mark.slow
def test_onnx_with_external_weights_writes_both_files_or_neither(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "ONNX_SINGLE_FILE_LIMIT", 0)
    path, check = export_checkpoint(trained_run, "onnx", tmp_path / "ok" / "lenet.onnx")
    assert "check: max |onnx - pytorch|" in check  # ONNX Runtime found the weights beside it
    assert sorted(os.listdir(path.parent)) == ["lenet.onnx", "lenet.onnx.data"]
    failed = tmp_path / "full"
    failed.mkdir()
    with file_size_limit(100_000), pytest.raises(export.ClassicNetsError, match="could not write .*lenet.onnx.data"):
        export_checkpoint(trained_run, "onnx", failed / "lenet.onnx", verify=False)
    assert os.listdir(failed) == []  # no weights, no model, no staging folder
