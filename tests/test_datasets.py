"""Named datasets: the table, the embedded digits, data_dir / cache / system lookup, downloads."""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import pickle
import re
import shutil
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import classicnets.data.datasets as datasets
import classicnets.data.imageset as imageset
from classicnets.data import (
    InsufficientMemoryError,
    UnknownDatasetError,
    cache_root,
    channel_stats,
    dataset_info,
    list_datasets,
    load_dataset,
)
from classicnets.errors import ClassicNetsError, DataFormatError, DownloadError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never read or write the user's real cache."""
    monkeypatch.setenv("CLASSICNETS_CACHE", str(tmp_path / "cache"))


def idx_file(path: Path, a: np.ndarray, gz: bool = True) -> Path:
    data = bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def mnist_like(d: Path, split="train", n=30, size=28, gz=True, prefix=None):
    stem = prefix or ("train" if split == "train" else "t10k")
    rng = np.random.default_rng(len(stem) + n)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    idx_file(d / f"{stem}-images-idx3-ubyte{suffix}", images, gz)
    idx_file(d / f"{stem}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


def cifar10_like(root: Path, n=3) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [c.encode() for c in dataset_info("cifar10").classes]
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    for i, f in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = np.full((n, 3072), i, np.uint8)
        (d / f).write_bytes(pickle.dumps({b"data": data, b"labels": [i] * n}, protocol=2))
    return d


# ---- the table -------------------------------------------------------------------------------


def test_table():
    assert list_datasets() == ["digits", "mnist", "fashion-mnist", "cifar10", "cifar100"]
    for name in list_datasets():
        info = dataset_info(name)
        assert info.name == name and len(info.mean) == len(info.std) == info.channels
        assert len(set(info.classes)) == info.num_classes and set(info.splits) == {"train", "test"}
        assert name in str(dataset_info(name)) or info.title in str(info)
        assert all(m.endswith("/") for m in info.mirrors)
        for files in info.files.values():
            for f in files:
                assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.size > 0
        assert info.embedded or (info.files and info.mirrors)
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("fashion-mnist").classes[9] == "Ankle boot"
    assert "11.1 MiB" in str(dataset_info("mnist"))


def test_names_and_aliases():
    assert dataset_info("CIFAR-10").name == "cifar10"
    assert dataset_info("fashion_mnist").name == "fashion-mnist"
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'imagenet': expected one of digits") as e:
        dataset_info("imagenet")
    assert isinstance(e.value, KeyError) and isinstance(e.value, ClassicNetsError)
    assert not str(e.value).startswith("'")


# ---- digits (embedded) ---------------------------------------------------------------------------


def test_digits():
    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert train.images.shape == (7000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.name == "digits/train" and train.classes == [str(d) for d in range(10)]
    # Class counts from data/digits/README.md
    assert train.class_counts() == [710, 818, 687, 721, 691, 575, 703, 760, 661, 674]
    assert test.class_counts() == [91, 109, 104, 111, 89, 88, 111, 110, 83, 104]
    # The hard-coded mean/std are the training split's, for both splits.
    mean, std = channel_stats(train.images)
    assert train.mean == test.mean == pytest.approx(mean, abs=1e-4)
    assert train.std == test.std == pytest.approx(std, abs=1e-4)


def test_digits_files_match_readme_checksums():
    root = Path(datasets.__file__).parent / "digits"
    readme = (root / "README.md").read_text()
    sums = dict((name, digest) for digest, name in re.findall(r"([0-9a-f]{64})\s+(\S+\.gz)", readme))
    assert len(sums) == 4
    for name, digest in sums.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest


def test_unknown_split():
    with pytest.raises(DataFormatError, match="unknown split 'val' for digits"):
        load_dataset("digits", "val")


def test_memory_check(monkeypatch):
    monkeypatch.setattr(imageset, "available_memory", lambda: 5 * 1024 * 1024)
    with pytest.raises(InsufficientMemoryError, match=r"digits/train needs about 7\.9 MiB.*5\.0 MiB"):
        load_dataset("digits")
    assert len(load_dataset("digits", "test")) == 1000  # 1.1 MiB fits


# ---- data_dir, cache, system locations ----------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_from_data_dir(tmp_path, gz):
    images, labels = mnist_like(tmp_path / "d", "train", gz=gz)
    mnist_like(tmp_path / "d", "test", n=12, gz=gz)
    train = load_dataset("mnist", data_dir=tmp_path / "d", download=False)
    assert train.name == "mnist/train" and train.mean == (0.1307,) and train.std == (0.3081,)
    assert np.array_equal(train.images[:, 0].numpy(), images) and train.labels.tolist() == labels.tolist()
    assert len(load_dataset("mnist", "test", data_dir=tmp_path / "d", download=False)) == 12


def test_idx_data_dir_subfolder_and_other_names(tmp_path):
    mnist_like(tmp_path / "fashion-mnist", "train", prefix="fashion-train")
    data = load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    assert data.classes[0] == "T-shirt/top" and data.mean == (0.2860,)


def test_wrong_image_size_in_data_dir(tmp_path):
    mnist_like(tmp_path, size=20)
    with pytest.raises(DataFormatError, match="images are 1x20x20, expected 1x28x28 for mnist"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_not_found_without_download(tmp_path):
    with pytest.raises(DataFormatError) as e:
        load_dataset("mnist", "test", data_dir=tmp_path / "nothing", download=False)
    message = str(e.value)
    assert str(tmp_path / "nothing") in message and str(tmp_path / "cache" / "mnist") in message
    assert "t10k-images-idx3-ubyte.gz" in message and "download=True" in message


def test_cache_location(tmp_path, monkeypatch):
    assert cache_root() == tmp_path / "cache"
    assert cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("CLASSICNETS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "classicnets"
    mnist_like(tmp_path / "xdg" / "classicnets" / "mnist", "test", n=5)
    assert len(load_dataset("mnist", "test", download=False)) == 5


def test_cifar10_from_data_dir(tmp_path):
    d = cifar10_like(tmp_path / "data")
    train = load_dataset("cifar10", data_dir=tmp_path / "data", download=False)
    assert train.images.shape == (15, 3, 32, 32) and train.name == "cifar10/train"
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.labels.tolist() == [0] * 3 + [1] * 3 + \
        [2] * 3 + [3] * 3 + [4] * 3
    assert load_dataset("cifar10", "test", data_dir=d, download=False).labels.tolist() == [5] * 3
    tarball = tmp_path / "tar" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(d, arcname=d.name)
    shutil.rmtree(d)
    for where in (tarball.parent, tarball):
        test = load_dataset("cifar10", "test", data_dir=where, download=False)
        assert test.name == "cifar10/test" and len(test) == 3


def test_cifar_class_names_checked(tmp_path):
    d = cifar10_like(tmp_path)
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}, protocol=2))
    with pytest.raises(DataFormatError, match="class names.*differ from cifar10"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_system_location(tmp_path):
    train = load_dataset("fashion-mnist", download=False)
    test = load_dataset("fashion-mnist", "test", download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.class_counts() == [6000] * 10 and test.class_counts() == [1000] * 10
    mean, std = channel_stats(train.images)
    assert mean == pytest.approx(train.mean, abs=1e-4) and std == pytest.approx(train.std, abs=1e-4)


# ---- downloads, from a local server standing in for the mirrors ------------------------------------


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP mirror holding a small 'mnist'; the table entry is pointed at it."""
    root = tmp_path / "mirror"
    mnist_like(root, "train", n=40)
    mnist_like(root, "test", n=10)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    info = dataset_info("mnist")
    files = {split: tuple(dataclasses.replace(f, sha256=hashlib.sha256((root / f.name).read_bytes())
                                              .hexdigest()) for f in fs)
             for split, fs in info.files.items()}
    monkeypatch.setitem(datasets._TABLE, "mnist", dataclasses.replace(
        info, mirrors=(url + "gone/", url), files=files))
    yield root, requests
    httpd.shutdown()
    httpd.server_close()


def test_download_into_cache(tmp_path, mirror):
    root, requests = mirror
    train = load_dataset("mnist", progress=False)
    assert len(train) == 40 and train.name == "mnist/train"
    cached = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == ["train-images-idx3-ubyte.gz",
                                                        "train-labels-idx1-ubyte.gz"]
    assert requests == ["/gone/train-images-idx3-ubyte.gz", "/train-images-idx3-ubyte.gz",
                        "/gone/train-labels-idx1-ubyte.gz", "/train-labels-idx1-ubyte.gz"]
    assert torch.equal(load_dataset("mnist", download=False).images, train.images)
    assert len(requests) == 4  # the second load came from the cache
    assert len(load_dataset("mnist", "test", cache_dir=tmp_path / "elsewhere")) == 10
    assert (tmp_path / "elsewhere" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_download_checksum_mismatch_leaves_nothing(tmp_path, mirror):
    root, _ = mirror
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="checksum mismatch for train-labels-idx1-ubyte.gz") as e:
        load_dataset("mnist")
    assert "data_dir" in str(e.value)
    cached = tmp_path / "cache" / "mnist"
    assert [p.name for p in cached.iterdir()] == ["train-images-idx3-ubyte.gz"]  # verified one stays
