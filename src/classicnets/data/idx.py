"""IDX files, the format of MNIST and Fashion-MNIST.

Layout (big-endian; LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type
code, the number of dimensions ``ndim``; then ``ndim`` uint32 sizes; then the elements, row-major.
Files are often gzip-compressed; we tell by the gzip magic bytes, not the file name.

The header is untrusted: a 16-byte file can declare terabytes. For a raw file the declared size
is checked against the real file size before anything is allocated; a gzip file is decompressed
chunk by chunk into a buffer that grows only as real data arrives, up to ``max_bytes``.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..errors import DataFormatError
from .imageset import ImageSet, channel_stats, check_memory, format_bytes

# IDX type code -> element type (big-endian on disk).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_IDX_BYTES = 4 * 1024**3  # refuse to read more than this much element data (4 GiB)
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 4 * 1024 * 1024


def read_idx(path: str | os.PathLike, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not, into a native-endian numpy array.

    Raises :class:`DataFormatError`, naming the file, for a missing file, a bad magic number or
    type code, truncated data, data beyond what the header declares, corrupt gzip data, or a
    declared size above ``max_bytes``.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no such file (expected an IDX file)") from None
    except OSError as e:
        raise DataFormatError(f"{path}: cannot open ({e.strerror}); expected an IDX file") from None
    with f:
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if compressed:
            return _read_gzip(path, f, max_bytes)
        return _read_raw(path, f, max_bytes)


def _parse_header(path: Path, read, where: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read magic and sizes with ``read(n)``; return (dtype, shape, header length in bytes)."""
    magic = read(4)
    if len(magic) < 4:
        raise DataFormatError(f"{path}: {where}has only {len(magic)} bytes; expected an IDX file "
                              f"(at least a 4-byte magic number)")
    if magic[0] != 0 or magic[1] != 0:
        raise DataFormatError(f"{path}: not an IDX file{' ' + where.strip() if where else ''}: it "
                              f"starts with bytes {magic.hex(' ')}, expected 00 00, a type code and "
                              f"the number of dimensions")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataFormatError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    if ndim == 0:
        raise DataFormatError(f"{path}: IDX header declares 0 dimensions; expected at least 1")
    raw_dims = read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataFormatError(f"{path}: truncated IDX header: {ndim} dimensions need "
                              f"{4 * ndim} bytes of sizes, found {len(raw_dims)}")
    shape = struct.unpack(f">{ndim}I", raw_dims)
    return IDX_DTYPES[code], shape, 4 + 4 * ndim


def _declared_bytes(path: Path, dtype: np.dtype, shape: tuple[int, ...], max_bytes: int) -> int:
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise DataFormatError(
            f"{path}: IDX header declares shape {shape} of {dtype.name} = {format_bytes(nbytes)} "
            f"({nbytes} bytes), over the {format_bytes(max_bytes)} limit; the header is corrupt, or "
            f"pass a larger max_bytes to read_idx"
        )
    return nbytes


def _finish(raw: bytearray | np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    a = raw.view(dtype) if isinstance(raw, np.ndarray) else np.frombuffer(raw, dtype=dtype)
    a = a.reshape(shape)
    if dtype.byteorder == ">":  # to native order; a copy, once, for the multi-byte types
        a = a.astype(dtype.newbyteorder("="))
    return a


def _read_raw(path: Path, f: BinaryIO, max_bytes: int) -> np.ndarray:
    dtype, shape, header = _parse_header(path, f.read, "")
    nbytes = _declared_bytes(path, dtype, shape, max_bytes)
    present = os.fstat(f.fileno()).st_size - header
    if present < nbytes:
        raise DataFormatError(f"{path}: truncated IDX file: header declares shape {shape} "
                              f"({nbytes} bytes of data) but only {present} bytes follow the header")
    if present > nbytes:
        raise DataFormatError(f"{path}: {present - nbytes} unexpected bytes after the {nbytes} bytes "
                              f"of data its IDX header declares (shape {shape}); expected nothing")
    check_memory(nbytes, f"{path} (IDX array of shape {shape}, {nbytes} bytes)")
    data = np.fromfile(f, dtype=np.uint8, count=nbytes)
    if data.size != nbytes:  # the file shrank while we read it
        raise DataFormatError(f"{path}: truncated IDX file: expected {nbytes} bytes of data, "
                              f"read {data.size}")
    return _finish(data, dtype, shape)


def _read_gzip(path: Path, f: BinaryIO, max_bytes: int) -> np.ndarray:
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            dtype, shape, _ = _parse_header(path, gz.read, "after gzip decompression ")
            nbytes = _declared_bytes(path, dtype, shape, max_bytes)
            check_memory(nbytes, f"{path} (IDX array of shape {shape}, {nbytes} bytes)")
            buf = bytearray()  # grows with the data actually decompressed, never from the header
            while len(buf) < nbytes:
                chunk = gz.read(min(_CHUNK, nbytes - len(buf)))
                if not chunk:
                    raise DataFormatError(
                        f"{path}: truncated IDX file: header declares shape {shape} ({nbytes} bytes "
                        f"of data) but the decompressed data ends after {len(buf)} bytes")
                buf += chunk
            # Reading on to the end makes gzip check the CRC and length of the whole stream.
            extra = len(gz.read(_CHUNK))
            if extra:
                raise DataFormatError(
                    f"{path}: {'at least ' if extra == _CHUNK else ''}{extra} unexpected bytes after "
                    f"the {nbytes} bytes of data its IDX header declares (shape {shape}); "
                    f"expected nothing")
    except EOFError:
        raise DataFormatError(f"{path}: truncated gzip file: the compressed stream ends early "
                              f"(an interrupted download?)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataFormatError(f"{path}: corrupt gzip data ({e}); expected a gzip-compressed "
                              f"IDX file") from None
    return _finish(buf, dtype, shape)


# --------------------------------------------------------------------------------------------
# Image/label pairs


def read_idx_pair(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    classes: list[str],
    name: str,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    max_bytes: int = MAX_IDX_BYTES,
) -> ImageSet:
    """Read an images file (N, H, W) uint8 and a labels file (N,) into an :class:`ImageSet`.

    ``mean``/``std`` should be the training split's; when omitted they are computed from these
    images.
    """
    images = read_idx(images_path, max_bytes=max_bytes)
    labels = read_idx(labels_path, max_bytes=max_bytes)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataFormatError(f"{images_path}: expected images as a 3-D uint8 IDX array "
                              f"(count, rows, columns), got {images.ndim}-D {images.dtype} "
                              f"of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataFormatError(f"{labels_path}: expected labels as a 1-D integer IDX array, got "
                              f"{labels.ndim}-D {labels.dtype} of shape {labels.shape}")
    if len(labels) != len(images):
        raise DataFormatError(f"{labels_path}: {len(labels)} labels for the {len(images)} images "
                              f"of {images_path}; expected one label per image")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DataFormatError(f"{labels_path}: label {int(bad)} out of range; expected 0 to "
                              f"{len(classes) - 1} for the {len(classes)} classes")
    tensor = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W): a view, no copy
    if mean is None or std is None:
        mean, std = channel_stats(tensor)
    return ImageSet(
        images=tensor,
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(classes),
        name=name,
        mean=tuple(mean),
        std=tuple(std),
    )


class IdxPairNotFoundError(DataFormatError):
    """:func:`find_idx_pair` found no complete pair (as opposed to several)."""


_PAIR_FILE = re.compile(r"^(?P<prefix>.*?)(?P<kind>images|labels)[-.](?P<idx>idx[13])[-.]ubyte(?P<gz>\.gz)?$",
                        re.IGNORECASE)
_SPLIT_ALIASES = {"test": {"test", "t10k"}, "t10k": {"test", "t10k"}}


def find_idx_pair(directory: str | os.PathLike, split: str | None = None) -> tuple[Path, Path]:
    """Find ``<prefix>images-idx3-ubyte[.gz]`` and its ``<prefix>labels-idx1-ubyte[.gz]``.

    The prefix is free (``train-``, ``t10k-``, ``emnist-letters-test-``...); ``.`` is accepted
    in place of ``-`` (``train-images.idx3-ubyte``). With several pairs, ``split`` picks the one
    whose prefix names it ("train"; "test" or "t10k"). Where both a raw and a gzip file exist,
    the raw one is used.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IdxPairNotFoundError(f"{directory}: not a directory; expected one holding IDX files "
                              f"(*-images-idx3-ubyte[.gz], *-labels-idx1-ubyte[.gz])")
    found: dict[str, dict[str, Path]] = {}  # prefix -> {"images": path, "labels": path}
    for p in sorted(directory.iterdir()):
        m = _PAIR_FILE.match(p.name)
        if p.name.startswith(".") or not m or not p.is_file():
            continue
        if (m["kind"].lower(), m["idx"].lower()) not in {("images", "idx3"), ("labels", "idx1")}:
            continue
        slot = found.setdefault(m["prefix"].lower(), {})
        kind = m["kind"].lower()
        if kind not in slot or not m["gz"]:  # raw wins over gzip
            slot[kind] = p
    if split is not None:
        wanted = _SPLIT_ALIASES.get(split.lower(), {split.lower()})
        found = {k: v for k, v in found.items() if wanted & set(re.split(r"[-_.\s]+", k))}
    complete = {k: v for k, v in found.items() if len(v) == 2}
    what = f"{split} " if split else ""
    if len(complete) == 1:
        pair = next(iter(complete.values()))
        return pair["images"], pair["labels"]
    if len(complete) > 1:
        names = "; ".join(f"{v['images'].name} + {v['labels'].name}" for v in complete.values())
        hint = "" if split else " (pass split='train' or 'test')"
        raise DataFormatError(f"{directory}: several {what}IDX pairs: {names}; expected exactly "
                              f"one{hint}")
    half = [p for v in found.values() for p in v.values()]
    if half:
        raise IdxPairNotFoundError(f"{directory}: {half[0].name} has no matching "
                              f"{'labels' if 'images' in half[0].name.lower() else 'images'} file; "
                              f"expected an images-idx3-ubyte and labels-idx1-ubyte pair with the "
                              f"same prefix")
    stem = "t10k" if split in ("test", "t10k") else split or "train"
    raise IdxPairNotFoundError(f"{directory}: no {what}IDX files; expected a pair like "
                               f"{stem}-images-idx3-ubyte.gz and {stem}-labels-idx1-ubyte.gz "
                               f"(gzip or raw)")
