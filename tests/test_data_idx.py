"""IDX reader: every element type, gzip or raw, and every way a file can be broken."""

import gzip
import struct
import time
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from classicnets.data.idx import IDX_DTYPES, find_idx_pair, read_idx, read_idx_pair
from classicnets.errors import DataFormatError


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file's bytes for ``a``, written independently of the reader."""
    be = a.astype(a.dtype.newbyteorder(">"))
    code = {v.str[1:]: k for k, v in IDX_DTYPES.items()}[be.dtype.str[1:]]
    return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + be.tobytes()


def write(path, data: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def header(code: int, *shape: int) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_round_trip_every_type(tmp_path, dtype, gz):
    a = (np.arange(60).reshape(3, 4, 5) - 30).astype(dtype)
    out = read_idx(write(tmp_path / "x", idx_bytes(a), gz))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


@settings(max_examples=40, deadline=None)
@given(a=hnp.arrays(st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
                    hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)),
       gz=st.booleans())
def test_round_trip_property(tmp_path_factory, a, gz):
    path = write(tmp_path_factory.mktemp("idx") / "a", idx_bytes(a), gz)
    np.testing.assert_array_equal(read_idx(path), a)


def test_gzip_detected_by_content_not_name(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "plain.idx", idx_bytes(a), gz=True)), a)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "named.gz", idx_bytes(a))), a)


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match="nope-images-idx3-ubyte.*no such file"):
        read_idx(tmp_path / "nope-images-idx3-ubyte")


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("data, message", [
    (b"\x08\x03\x00\x00" + bytes(20), "not an IDX file.*08 03 00 00"),
    (b"PK\x03\x04" + bytes(20), "not an IDX file"),
    (header(0x0A, 2), "unknown IDX type code 0x0A"),
    (bytes([0, 0, 8, 0]), "0 dimensions"),
    (bytes([0, 0, 8, 3, 0, 0]), "truncated IDX header"),
    (b"\x00\x00", "has only 2 bytes"),
    (header(0x08, 10, 28, 28) + bytes(100), "truncated.*7840 bytes.*100"),
    (header(0x0C, 4) + bytes(15), "truncated"),
    (header(0x08, 2, 2) + bytes(4) + b"junk", "4 unexpected bytes after"),
])
def test_broken_files(tmp_path, data, message, gz):
    path = write(tmp_path / "broken-images-idx3-ubyte", data, gz)
    with pytest.raises(DataFormatError, match=message) as e:
        read_idx(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("gz", [False, True])
def test_absurd_declared_size_refused_with_size(tmp_path, gz):
    path = write(tmp_path / "huge", header(0x0E, 2**32 - 1, 2**32 - 1, 7), gz)
    with pytest.raises(DataFormatError, match=r"over the 4\.0 GiB limit") as e:
        read_idx(path)
    assert str(8 * 7 * (2**32 - 1) ** 2) in str(e.value)


def test_max_bytes_is_a_parameter(tmp_path):
    path = write(tmp_path / "x", idx_bytes(np.zeros((10, 10), np.uint8)))
    with pytest.raises(DataFormatError, match="over the 50 bytes limit"):
        read_idx(path, max_bytes=50)
    assert read_idx(path, max_bytes=100).shape == (10, 10)


@pytest.mark.parametrize("gz", [False, True])
def test_large_declared_size_is_not_allocated(tmp_path, gz):
    # 1 GiB declared, 1 KiB present: must fail fast without allocating from the header.
    path = write(tmp_path / "liar", header(0x08, 1024, 1024, 1024) + bytes(1024), gz)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataFormatError, match="truncated"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024
    assert time.perf_counter() - start < 2


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 255, (50, 28, 28),
                                                                                  dtype=np.uint8))))
    data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
    with pytest.raises(DataFormatError, match="corrupt gzip|truncated"):
        read_idx(write(tmp_path / "c.gz", bytes(data)))


def test_truncated_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32)))
    with pytest.raises(DataFormatError, match="truncated gzip") as e:
        read_idx(write(tmp_path / "t.gz", data[:-20]))
    assert "t.gz" in str(e.value)


def test_gzip_crc_checked(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8))))
    data[-8] ^= 0xFF  # the CRC32 in the trailer
    with pytest.raises(DataFormatError, match="corrupt gzip"):
        read_idx(write(tmp_path / "crc.gz", bytes(data)))


# ---- pairs -----------------------------------------------------------------------------------

CLASSES = [str(i) for i in range(10)]


def make_pair(d, prefix="train-", n=20, gz=True, labels=None, images=None):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images
    labels = (np.arange(n) % 10).astype(np.uint8) if labels is None else labels
    suffix = ".gz" if gz else ""
    ip = write(d / f"{prefix}images-idx3-ubyte{suffix}", idx_bytes(images), gz)
    lp = write(d / f"{prefix}labels-idx1-ubyte{suffix}", idx_bytes(labels), gz)
    return ip, lp, images, labels


def test_read_idx_pair(tmp_path):
    ip, lp, images, labels = make_pair(tmp_path)
    s = read_idx_pair(ip, lp, CLASSES, "toy/train")
    assert s.images.shape == (20, 1, 28, 28) and s.images.dtype == torch.uint8
    assert s.images.is_contiguous() and s.labels.dtype == torch.int64
    assert s.name == "toy/train" and s.classes == CLASSES
    np.testing.assert_array_equal(s.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(s.labels.numpy(), labels)
    assert s.mean[0] == pytest.approx(images.mean() / 255)
    assert s.std[0] == pytest.approx(images.std() / 255)
    s2 = read_idx_pair(ip, lp, CLASSES, "toy/test", mean=(0.5,), std=(0.25,))
    assert (s2.mean, s2.std) == ((0.5,), (0.25,))


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((4, 2, 2, 1), np.uint8), np.zeros(4, np.uint8), "3-D uint8"),
    (np.zeros((4, 2, 2), np.int16), np.zeros(4, np.uint8), "3-D uint8"),
    (np.zeros((4, 2, 2), np.uint8), np.zeros((4, 1), np.uint8), "1-D integer"),
    (np.zeros((4, 2, 2), np.uint8), np.zeros(4, np.float32), "1-D integer"),
    (np.zeros((4, 2, 2), np.uint8), np.zeros(5, np.uint8), "5 labels for the 4 images"),
    (np.zeros((4, 2, 2), np.uint8), np.array([0, 1, 10, 2], np.uint8), "label 10 out of range"),
    (np.zeros((4, 2, 2), np.uint8), np.array([0, -1, 1, 2], np.int8), "label -1 out of range"),
])
def test_read_idx_pair_rejects(tmp_path, images, labels, message):
    ip = write(tmp_path / "i", idx_bytes(images))
    lp = write(tmp_path / "l", idx_bytes(labels))
    with pytest.raises(DataFormatError, match=message):
        read_idx_pair(ip, lp, CLASSES, "bad")


def test_find_idx_pair_any_prefix(tmp_path):
    ip, lp, *_ = make_pair(tmp_path, prefix="emnist-digits-train-")
    (tmp_path / ".hidden-images-idx3-ubyte").write_bytes(b"")
    (tmp_path / "README").write_text("hi")
    assert find_idx_pair(tmp_path) == (ip, lp)
    assert find_idx_pair(tmp_path, "train") == (ip, lp)


def test_find_idx_pair_by_split(tmp_path):
    train = make_pair(tmp_path, "train-")[:2]
    test = make_pair(tmp_path, "t10k-")[:2]
    assert find_idx_pair(tmp_path, "train") == train
    assert find_idx_pair(tmp_path, "test") == test
    assert find_idx_pair(tmp_path, "t10k") == test
    with pytest.raises(DataFormatError, match="several IDX pairs.*split="):
        find_idx_pair(tmp_path)


def test_find_idx_pair_dotted_and_raw_preferred(tmp_path):
    a = np.zeros((1, 2, 2), np.uint8)
    write(tmp_path / "train-images.idx3-ubyte", idx_bytes(a))
    write(tmp_path / "train-images.idx3-ubyte.gz", idx_bytes(a), gz=True)
    write(tmp_path / "train-labels.idx1-ubyte.gz", idx_bytes(np.zeros(1, np.uint8)), gz=True)
    ip, lp = find_idx_pair(tmp_path, "train")
    assert ip.name == "train-images.idx3-ubyte" and lp.name == "train-labels.idx1-ubyte.gz"


def test_find_idx_pair_errors(tmp_path):
    with pytest.raises(DataFormatError, match="no IDX files"):
        find_idx_pair(tmp_path)
    write(tmp_path / "train-images-idx3-ubyte", b"")
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte has no matching labels"):
        find_idx_pair(tmp_path)
    make_pair(tmp_path, "a-train-")
    make_pair(tmp_path, "b-train-")
    with pytest.raises(DataFormatError, match="several train IDX pairs"):
        find_idx_pair(tmp_path, "train")
    with pytest.raises(DataFormatError, match="no test IDX files"):
        find_idx_pair(tmp_path, "test")
    with pytest.raises(DataFormatError, match="not a directory"):
        find_idx_pair(tmp_path / "missing")
