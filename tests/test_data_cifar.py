"""CIFAR-10/100 python batches: folder and tarball, validation, and the restricted unpickler."""

import builtins
import collections
import io
import os
import pickle
import pickletools
import struct
import tarfile

import numpy as np
import pytest
import torch

from classicnets.data.cifar import load_cifar, load_cifar10, load_cifar100, read_batch
from classicnets.errors import DataFormatError

C10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Python2Pickler(pickle._Pickler):
    """Writes every str and bytes as a Python 2 ``str`` (BINSTRING), as cPickle did for the
    official batches; with ``numpy.core`` paths, the result reads like the genuine files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def batch_bytes(obj, py2: bool = False) -> bytes:
    """Pickle like the official files: protocol 2, bytes keys; ``py2``: as Python 2 wrote them."""
    if not py2:
        return pickle.dumps(obj, protocol=2)
    out = io.BytesIO()
    _Python2Pickler(out, protocol=2).dump(obj)
    return out.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def images_for(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def make_cifar10(root, n=4, py2=False):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    (d / "batches.meta").write_bytes(batch_bytes(
        {b"label_names": [c.encode() for c in C10], b"num_cases_per_batch": n}, py2))
    for i, f in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        (d / f).write_bytes(batch_bytes({b"batch_label": f.encode(), b"data": images_for(n, i),
                                         b"labels": [(i + j) % 10 for j in range(n)],
                                         b"filenames": [b"x.png"] * n}, py2))
    (d / "readme.html").write_text("<html/>")
    return d


def make_cifar100(root, n=6):
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    (d / "meta").write_bytes(batch_bytes({
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}))
    for i, f in enumerate(["train", "test"]):
        (d / f).write_bytes(batch_bytes({b"data": images_for(n, 10 + i),
                                         b"fine_labels": [99 - j for j in range(n)],
                                         b"coarse_labels": [19 - j for j in range(n)]}))
    return d


def tar_up(folder, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def test_cifar10_folder(tmp_path):
    d = make_cifar10(tmp_path)
    train = load_cifar10(d, "train")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.images.is_contiguous() and train.labels.dtype == torch.int64
    assert train.classes == C10 and train.name == "cifar10/train"
    # Rows are planes R, G, B, each row-major.
    first = images_for(4, 0)[1]
    assert torch.equal(train.images[1, 0], torch.from_numpy(first[:1024].reshape(32, 32)))
    assert torch.equal(train.images[1, 2, 5], torch.from_numpy(first[2048 + 5 * 32: 2048 + 6 * 32]))
    assert train.labels[:4].tolist() == [0, 1, 2, 3] and train.labels[4:8].tolist() == [1, 2, 3, 4]
    test = load_cifar10(tmp_path, "test", mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))  # parent folder
    assert len(test) == 4 and test.labels.tolist() == [5, 6, 7, 8] and test.mean == (0.1, 0.2, 0.3)
    assert train.mean[0] == pytest.approx(np.concatenate([images_for(4, i) for i in range(5)])[:, :1024]
                                          .mean() / 255)


def test_cifar10_python2_style_pickles(tmp_path):
    d = make_cifar10(tmp_path, py2=True)
    ops = {op.name for op, _, _ in pickletools.genops((d / "data_batch_1").read_bytes())}
    assert "BINSTRING" in ops and not ops & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES"}
    assert b"numpy.core.multiarray" in (d / "data_batch_1").read_bytes()
    assert b"_codecs" not in (d / "data_batch_1").read_bytes()
    assert len(load_cifar10(d, "train")) == 20


def test_cifar10_tarball_read_without_extracting(tmp_path):
    src = tmp_path / "src"
    make_cifar10(src)
    (tmp_path / "dl").mkdir()
    tarball = tar_up(src / "cifar-10-batches-py", tmp_path / "dl" / "cifar-10-python.tar.gz")
    before = set(tmp_path.rglob("*"))
    from_tar = load_cifar10(tarball, "train")
    from_dir = load_cifar10(src, "train")
    assert torch.equal(from_tar.images, from_dir.images) and torch.equal(from_tar.labels, from_dir.labels)
    assert len(load_cifar10(tmp_path / "dl", "test")) == 4  # the folder holding the tarball
    assert set(tmp_path.rglob("*")) == before  # nothing extracted


def test_cifar100_fine_and_coarse(tmp_path):
    d = make_cifar100(tmp_path)
    fine = load_cifar100(d, "train")
    assert len(fine.classes) == 100 and fine.labels.tolist() == [99, 98, 97, 96, 95, 94]
    coarse = load_cifar100(d, "test", label_mode="coarse")
    assert len(coarse.classes) == 20 and coarse.labels.tolist() == [19, 18, 17, 16, 15, 14]
    assert coarse.classes[0] == "coarse0"
    tarball = tar_up(d, tmp_path / "cifar-100-python.tar.gz")
    assert torch.equal(load_cifar100(tarball, "train").images, fine.images)
    with pytest.raises(DataFormatError, match="label_mode"):
        load_cifar100(d, label_mode="medium")


def test_load_cifar_detects_which(tmp_path):
    make_cifar10(tmp_path / "a")
    make_cifar100(tmp_path / "b")
    assert len(load_cifar(tmp_path / "a", "test").classes) == 10
    assert len(load_cifar(tmp_path / "b", "test").classes) == 100
    assert len(load_cifar(tmp_path / "b" / "cifar-100-python").classes) == 100
    tar_up(tmp_path / "b" / "cifar-100-python", tmp_path / "b" / "some.tar.gz")
    assert len(load_cifar(tmp_path / "b" / "some.tar.gz").classes) == 100


# ---- broken and hostile files -----------------------------------------------------------------


class _RunsCode:
    """Unpickling this calls ``fn(*args)``: the classic code-running payload."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize("where", ["data_batch_1", "batches.meta"])
@pytest.mark.parametrize("payload", ["os.system", "builtins.exec"])
def test_malicious_pickle_refused_and_not_run(tmp_path, where, payload):
    d = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = (_RunsCode(os.system, f"touch {marker}") if payload == "os.system"
            else _RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"))
    (d / where).write_bytes(pickle.dumps({b"data": evil, b"labels": [], b"label_names": evil},
                                         protocol=2))
    with pytest.raises(DataFormatError, match=rf"{where}: refused to unpickle.*(system|exec)"):
        load_cifar10(d, "train")
    assert not marker.exists()
    # The same from inside the tarball.
    tarball = tar_up(d, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataFormatError, match=f"member cifar-10-batches-py/{where}.*refused"):
        load_cifar10(tarball, "train")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_restricted_unpickler_refuses_other_globals(protocol):
    for obj in [collections.OrderedDict(a=1), _RunsCode(print, "hello"), np.random.default_rng(0)]:
        with pytest.raises(DataFormatError, match="refused to unpickle"):
            read_batch(pickle.dumps({b"x": obj}, protocol=protocol), "file")


@pytest.mark.parametrize("content, message", [
    (b"this is not a pickle at all", "not a CIFAR python batch"),
    (b"", "not a CIFAR python batch"),
    (pickle.dumps([1, 2, 3], protocol=2), "expected a pickled dict, got list"),
])
def test_not_a_batch(tmp_path, content, message):
    d = make_cifar10(tmp_path)
    (d / "data_batch_3").write_bytes(content)
    with pytest.raises(DataFormatError, match=f"data_batch_3: {message}"):
        load_cifar10(d)


def test_truncated_pickle(tmp_path):
    d = make_cifar10(tmp_path)
    data = (d / "test_batch").read_bytes()
    (d / "test_batch").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="test_batch: not a CIFAR python batch"):
        load_cifar10(d, "test")


@pytest.mark.parametrize("batch, message", [
    ({b"labels": [0]}, "no b'data' entry"),
    ({b"data": images_for(2, 0)}, "no b'labels' entry"),
    ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, r"shape \(2, 3000\).*\(N, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "float32.*expected a uint8"),
    ({b"data": np.zeros(3072, np.uint8), b"labels": [0]}, "expected a uint8 array"),
    ({b"data": [1, 2, 3], b"labels": [0]}, "b'data' is a list"),
    ({b"data": images_for(2, 0), b"labels": [0]}, "must be 2 integers"),
    ({b"data": images_for(2, 0), b"labels": [0, 10]}, "label 10 out of range; expected 0 to 9"),
    ({b"data": images_for(2, 0), b"labels": [0, -1]}, "label -1 out of range"),
    ({b"data": images_for(2, 0), b"labels": ["a", "b"]}, "must be 2 integers"),
])
def test_wrong_contents(tmp_path, batch, message):
    d = make_cifar10(tmp_path)
    (d / "test_batch").write_bytes(batch_bytes(batch))
    with pytest.raises(DataFormatError, match=message) as e:
        load_cifar10(d, "test")
    assert "test_batch" in str(e.value)


def test_missing_files(tmp_path):
    with pytest.raises(DataFormatError, match="no such file or directory"):
        load_cifar10(tmp_path / "nothing")
    with pytest.raises(DataFormatError, match="no CIFAR files"):
        load_cifar10(tmp_path)
    d = make_cifar10(tmp_path)
    (d / "data_batch_5").unlink()
    with pytest.raises(DataFormatError, match="data_batch_5: no such file"):
        load_cifar10(d)
    (d / "batches.meta").write_bytes(batch_bytes({b"other": 1}))
    with pytest.raises(DataFormatError, match="batches.meta: no list of class names"):
        load_cifar10(d, "test")
    with pytest.raises(DataFormatError, match="unknown split 'val'"):
        load_cifar10(d, "val")


def test_broken_tarballs(tmp_path):
    d = make_cifar10(tmp_path / "src")
    good = tar_up(d, tmp_path / "cifar-10-python.tar.gz").read_bytes()
    bad = tmp_path / "bad" / "cifar-10-python.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match="cifar-10-python.tar.gz"):
        load_cifar10(bad)
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataFormatError, match="not a readable tar archive"):
        load_cifar10(bad)
    (d / "test_batch").unlink()
    tar_up(d, bad)
    with pytest.raises(DataFormatError, match="no member cifar-10-batches-py/test_batch"):
        load_cifar10(bad, "test")
    assert len(load_cifar10(bad, "train")) == 20
