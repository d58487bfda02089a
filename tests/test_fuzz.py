"""Fuzzing every reader and loader with malformed files (Hypothesis, derandomized).

Each generated file must either be read (a mutation can leave a valid file) or be refused with
the package's own error (a :class:`ClassicNetsError`) whose message names the file: no other
exception type, no hang (a 10 s alarm per example), and no large allocation (tracemalloc's
peak, where the reader allocates through Python or numpy; the process's peak RSS elsewhere).

The examples actually run are counted per reader; the last test checks the total is at least
1,000 and prints the counts (``pytest -s tests/test_fuzz.py``). About 40 s on 2 cores.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import io
import json
import os
import pickle
import re
import resource
import shutil
import signal
import struct
import tarfile
import tracemalloc
from datetime import timedelta
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

import classicnets
from classicnets import checkpoint as ckpt
from classicnets.checkpoint import load_state_dict_file, read_checkpoint
from classicnets.data.cifar import load_cifar10, read_batch
from classicnets.data.download import safe_extract
from classicnets.data.folder import load_image
from classicnets.data.idx import IDX_DTYPES, read_idx, read_idx_pair
from classicnets.errors import ClassicNetsError

RUN: collections.Counter = collections.Counter()  # reader -> examples run
REFUSED: collections.Counter = collections.Counter()  # reader -> examples refused (the rest were read)
FINISHED: set[str] = set()  # the fuzz tests that ran to the end in this session
MIN_TOTAL = 1000
ALARM_S = 10  # no example may take longer: a hang fails the test instead of stalling it
SMALL = 16 * 1024 * 1024  # what a reader may allocate for a file of a few KB (gzip reads 4 MiB chunks)


def fuzz(n: int):
    return settings(max_examples=n, deadline=timedelta(seconds=5), derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


class Hang(Exception):
    """An example ran past :data:`ALARM_S`."""


@contextlib.contextmanager
def alarm(seconds: float = ALARM_S):
    def ring(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def attempt(reader: str, path, read, *, names=None, max_bytes: int | None = SMALL):
    """``read()`` must return or raise a ClassicNetsError naming ``path`` (or one of ``names``);
    with ``max_bytes``, its traced allocations must peak below that."""
    RUN[reader] += 1
    names = [str(p) for p in (names or [path])]
    if max_bytes is not None:
        tracemalloc.start()
    try:
        with alarm():
            result = read()
    except ClassicNetsError as exc:
        message = str(exc)
        assert any(n in message for n in names), f"{reader}: the message does not name the file: {message}"
        REFUSED[reader] += 1
        result = exc
    finally:
        if max_bytes is not None:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    if max_bytes is not None:
        assert peak < max_bytes, f"{reader}: allocated {peak:,} bytes reading {path}"
    return result


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def mutate(data: bytes, draw_ops) -> bytes:
    """Apply ``(kind, position, value)`` edits: flip a byte, cut the file, insert or delete bytes."""
    b = bytearray(data)
    for kind, pos, value in draw_ops:
        pos = pos % (len(b) + 1)
        if kind == "flip" and pos < len(b):
            b[pos] ^= value or 1
        elif kind == "cut":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = bytes([value]) * (1 + value % 8)
        elif kind == "delete":
            del b[pos:pos + 1 + value % 8]
    return bytes(b)


edits = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 1 << 16),
                           st.integers(0, 255)), min_size=1, max_size=4)


# ---- IDX -------------------------------------------------------------------------------------

dims = st.one_of(st.integers(0, 5), st.integers(0, 2**32 - 1), st.sampled_from([2**31, 2**32 - 1, 60000, 65536]))


@st.composite
def idx_files(draw) -> bytes:
    """An IDX header (plausible or not) with some data, raw or gzip, maybe cut short."""
    head = draw(st.sampled_from([b"\0\0", b"\0\1", b"\x1f\x8b", b"PK"]) | st.binary(min_size=0, max_size=2))
    code = draw(st.sampled_from(sorted(IDX_DTYPES)) | st.integers(0, 255))
    ndim = draw(st.integers(0, 4) | st.just(255))
    sizes = draw(st.lists(dims, max_size=6))  # may disagree with ndim
    payload = draw(st.binary(max_size=200))
    raw = head + bytes([code, ndim]) + b"".join(struct.pack(">I", d) for d in sizes) + payload
    raw = raw[:draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw
    if draw(st.booleans()):
        raw = gzip.compress(raw, mtime=0)
        if draw(st.booleans()):
            raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


def idx_bytes(a: np.ndarray, code: int) -> bytes:
    return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(IDX_DTYPES[code]).tobytes()


@pytest.mark.slow
@fuzz(250)
@given(data=idx_files())
def test_idx_headers(scratch, data):
    path = scratch / "fuzz-images-idx3-ubyte"
    path.write_bytes(data)
    result = attempt("idx", path, lambda: read_idx(path))
    if isinstance(result, np.ndarray):  # a valid file after all: its header told the truth
        assert result.nbytes <= len(data) * 1100


GOOD_IDX = idx_bytes(np.arange(2 * 5 * 5, dtype=np.uint8).reshape(2, 5, 5), 0x08)


@fuzz(150)
@given(ops=edits, gz=st.booleans())
def test_idx_mutations(scratch, ops, gz):
    data = gzip.compress(GOOD_IDX, mtime=0) if gz else GOOD_IDX
    path = scratch / "mutated-idx"
    path.write_bytes(mutate(data, ops))
    attempt("idx", path, lambda: read_idx(path))


@fuzz(100)
@given(n_images=st.integers(0, 4), n_labels=st.integers(0, 5), h=st.integers(0, 3),
       image_code=st.sampled_from(sorted(IDX_DTYPES)), label_code=st.sampled_from(sorted(IDX_DTYPES)),
       image_ndim=st.integers(1, 4), label_ndim=st.integers(1, 2), low=st.integers(-2, 0), high=st.integers(1, 12))
def test_idx_pairs(scratch, n_images, n_labels, h, image_code, label_code, image_ndim, label_ndim, low, high):
    """Counts that disagree, labels out of range, wrong element types and dimensions."""
    rng = np.random.default_rng(n_images * 31 + n_labels)
    images = rng.integers(0, 256, (n_images, h, h, 1)[:image_ndim])
    labels = rng.integers(low, high, (n_labels, 1)[:label_ndim])
    ip, lp = scratch / "p-images-idx3-ubyte", scratch / "p-labels-idx1-ubyte"
    ip.write_bytes(idx_bytes(images, image_code))
    lp.write_bytes(idx_bytes(labels, label_code))
    attempt("idx pair", ip, lambda: read_idx_pair(ip, lp, list("0123456789"), "fuzz"), names=[ip, lp])


# ---- CIFAR -----------------------------------------------------------------------------------

C10 = [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck")]


def cifar_folder(root: Path, batch: bytes, meta: bytes | None = None) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    (d / "batches.meta").write_bytes(meta or pickle.dumps({b"label_names": C10}, protocol=2))
    (d / "test_batch").write_bytes(batch)
    return d


GOOD_BATCH = pickle.dumps({b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251,
                           b"labels": [3, 7], b"filenames": [b"a.png", b"b.png"]}, protocol=2)


@fuzz(100)
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"\x80\x05", b"(d"]))
def test_cifar_random_bytes(scratch, data, prefix):
    source = str(scratch / "random_batch")
    attempt("cifar", source, lambda: read_batch(prefix + data, source))


@fuzz(120)
@given(ops=edits)
def test_cifar_mutated_batches(scratch, ops):
    d = cifar_folder(scratch / "mutated", mutate(GOOD_BATCH, ops))
    attempt("cifar", d / "test_batch", lambda: load_cifar10(d, "test"))


arrays = st.builds(
    lambda shape, dtype: np.zeros(shape, dtype=dtype),
    st.sampled_from([(2, 3072), (2, 3071), (3072,), (2, 3, 32, 32), (0, 3072), (1, 1, 3072), ()]),
    st.sampled_from(["u1", "i2", "f4", "O", "S1"]))
values = st.one_of(arrays, st.none(), st.integers(-3, 12), st.text(max_size=4), st.binary(max_size=4),
                   st.lists(st.integers(-2, 11), max_size=4), st.lists(st.text(max_size=2), max_size=3))


@fuzz(120)
@given(batch=st.dictionaries(st.sampled_from([b"data", b"labels", "data", "labels", b"fine_labels", 0]), values,
                             max_size=4),
       meta=st.dictionaries(st.sampled_from([b"label_names", "label_names"]),
                            st.one_of(st.just(C10), st.lists(st.binary(max_size=3), max_size=3), values), max_size=1),
       protocol=st.integers(0, 5), as_list=st.booleans())
@pytest.mark.slow
def test_cifar_wrong_contents(scratch, batch, meta, protocol, as_list):
    """Missing keys, arrays of the wrong shape or type, labels that are not integers..."""
    obj = list(batch.items()) if as_list else batch
    d = cifar_folder(scratch / "contents", pickle.dumps(obj, protocol=protocol), pickle.dumps(meta, protocol=protocol))
    attempt("cifar", d / "test_batch", lambda: load_cifar10(d, "test"), names=[d / "test_batch", d / "batches.meta"])


DANGEROUS = [("os", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "Popen"),
             ("posix", "system"), ("builtins", "getattr"), ("numpy", "load"), ("torch", "load"),
             ("numpy.core.multiarray", "scalar"), ("numpy", "frombuffer"), ("io", "open"), ("shutil", "rmtree")]
identifier = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12)


@fuzz(60)
@given(target=st.sampled_from(DANGEROUS) | st.tuples(identifier, identifier), stack=st.booleans())
def test_cifar_disallowed_globals(scratch, target, stack):
    """A pickle that names any other global is refused before the global is even imported."""
    module, name = target
    assume((module, name) not in {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})
    if stack:  # protocol 4: STACK_GLOBAL
        ref = b"".join(b"\x8c" + bytes([len(s)]) + s.encode() for s in (module, name)) + b"\x93"
        data = b"\x80\x04" + ref + b"\x8c\x02id\x85R."
    else:  # protocols 0-2: GLOBAL
        data = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nX\x02\x00\x00\x00id\x85R."
    source = str(scratch / "evil_batch")
    result = attempt("cifar", source, lambda: read_batch(data, source))
    assert isinstance(result, ClassicNetsError)
    if (module, name) not in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}:
        assert f"refused to unpickle: the pickle asks for {module}.{name}" in str(result)


@fuzz(40)
@given(opcode=st.sampled_from([(b"\x8e", "<Q"), (b"\x96", "<Q"), (b"\x8d", "<Q"), (b"B", "<I"), (b"T", "<I"),
                               (b"X", "<I")]),
       size=st.integers(1 << 20, 1 << 40), shape=st.integers(1 << 20, 1 << 36))
def test_cifar_declared_sizes_are_not_allocated(scratch, opcode, size, shape):
    """A 14-byte pickle may declare 8 GiB of bytes, or ask numpy for an array of 2**36 bytes:
    refused without allocating either (the C unpickler would allocate first)."""
    op, fmt = opcode
    declared = b"\x80\x05" + op + struct.pack(fmt, min(size, (1 << 31) - 1) if fmt == "<I" else size) + b"abc"
    array = (b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + b"\x8a\x05"
             + shape.to_bytes(5, "little") + b"\x85C\x01b\x87R.")
    source = str(scratch / "huge_batch")
    for data in (declared, array):
        assert isinstance(attempt("cifar", source, lambda d=data: read_batch(d, source), max_bytes=SMALL),
                          ClassicNetsError)


# ---- images ----------------------------------------------------------------------------------


def _image_bytes() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), "RGB")
    out = {}

    def save(key, img, fmt, **kw):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out[key] = buf.getvalue()

    save("png-rgb", rgb, "PNG")
    save("png-l", rgb.convert("L"), "PNG")
    save("png-rgba", rgb.convert("RGBA"), "PNG")
    save("png-p", rgb.convert("P"), "PNG")
    save("png-16bit", Image.fromarray((rng.integers(0, 65535, (9, 7))).astype(np.uint16)), "PNG")
    save("jpeg-rgb", rgb, "JPEG")
    save("jpeg-l", rgb.convert("L"), "JPEG")
    save("jpeg-cmyk", rgb.convert("CMYK"), "JPEG")
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P")]
    save("gif-animated", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    save("bmp", rgb, "BMP")
    save("webp", rgb, "WEBP")
    return out


IMAGES = _image_bytes()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@st.composite
def image_files(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated", "cut", "empty", "png header + random", "random"]))
    base = IMAGES[draw(st.sampled_from(sorted(IMAGES)))]
    if kind == "mutated":
        return mutate(base, draw(edits))
    if kind == "cut":
        return base[:draw(st.integers(0, len(base) - 1))]
    if kind == "empty":
        return b""
    if kind == "png header + random":
        return PNG_SIGNATURE + draw(st.binary(max_size=300))
    return draw(st.binary(max_size=300))


@pytest.mark.slow
@fuzz(400)
@given(data=image_files(), channels=st.sampled_from([1, 3]), size=st.sampled_from([(8, 8), (5, 9), None]))
def test_images(scratch, data, channels, size):
    path = scratch / "fuzz.png"
    path.write_bytes(data)
    result = attempt("image", path, lambda: load_image(path, size=size, channels=channels), max_bytes=None)
    if isinstance(result, torch.Tensor):
        assert result.dtype == torch.uint8 and result.shape[0] == channels


def test_every_image_kind_reads_when_intact(scratch):
    """The fuzzed originals are valid: 16-bit, CMYK and animated files are read, not refused."""
    for key, data in IMAGES.items():
        path = scratch / f"intact-{key}"
        path.write_bytes(data)
        assert load_image(path, size=(8, 8), channels=3).shape == (3, 8, 8), key


# ---- checkpoints -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(trained_run) -> dict:
    tensors, meta = ckpt.read_tensors(trained_run / ckpt.MODEL_FILE)
    return {"model": (trained_run / ckpt.MODEL_FILE).read_bytes(),
            "state": (trained_run / ckpt.STATE_FILE).read_bytes(), "tensors": tensors, "meta": meta}


def load_any(path: Path):
    """Every way in: the Predictor (which builds the model), then the plain weights readers."""
    classicnets.load(path)
    read_checkpoint(path)
    return load_state_dict_file(path)


@fuzz(60)
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".safetensors", ".pt", ".pth"]))
def test_checkpoint_random_bytes(scratch, data, suffix):
    path = scratch / f"random{suffix}"
    path.write_bytes(data)
    reader = load_state_dict_file if suffix != ".safetensors" else load_any
    result = attempt("checkpoint", path, lambda: reader(path), max_bytes=None)
    assert isinstance(result, ClassicNetsError)


@fuzz(120)
@given(which=st.sampled_from(["model", "state"]), ops=edits, header_only=st.booleans())
def test_checkpoint_mutations(scratch, good_checkpoint, which, ops, header_only):
    """Cut or edited files (edits aimed at the header half the time, where they do most harm)."""
    data = good_checkpoint[which]
    if header_only:
        n = 8 + int.from_bytes(data[:8], "little")
        ops = [(kind, pos % n, value) for kind, pos, value in ops]
    path = scratch / f"mutated-{which}.safetensors"
    path.write_bytes(mutate(data, ops))
    attempt("checkpoint", path, lambda: load_any(path), max_bytes=None)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**62) | st.floats() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=6)


@st.composite
def safetensors_headers(draw) -> bytes:
    """A header that lies: huge shapes, offsets past the end, unknown dtypes, garbage metadata."""
    tensors = {}
    for i in range(draw(st.integers(0, 3))):
        tensors[f"t{i}"] = {
            "dtype": draw(st.sampled_from(["F32", "F64", "U8", "I64", "BF16", "XX", ""]) | json_values),
            "shape": draw(st.lists(st.integers(0, 2**40) | st.integers(0, 4), max_size=4) | json_values),
            "data_offsets": draw(st.tuples(st.integers(0, 2**40) | st.integers(0, 64),
                                           st.integers(0, 2**40) | st.integers(0, 64)).map(list) | json_values),
        }
    meta = draw(st.sampled_from(["{not json", "[]", "null", json.dumps({"format": ckpt.FORMAT}), "1e999999"])
                | json_values.map(json.dumps))
    header = {**tensors, "__metadata__": {ckpt.META_KEY: meta}}
    if draw(st.booleans()):
        header["__metadata__"] = draw(json_values)
    raw = json.dumps(header).encode()
    length = draw(st.just(len(raw)) | st.integers(0, 2**64 - 1))
    return struct.pack("<Q", length) + raw + draw(st.binary(max_size=64))


@pytest.mark.slow
@fuzz(100)
@given(data=safetensors_headers())
def test_checkpoint_lying_headers(scratch, data):
    path = scratch / "lying.safetensors"
    path.write_bytes(data)
    rss = peak_rss()
    result = attempt("checkpoint", path, lambda: load_any(path), max_bytes=None)
    assert isinstance(result, ClassicNetsError)
    assert peak_rss() - rss < 256 * 1024 * 1024


MODELS = ["lenet5", "lenet5_1998", "resnet20", "nin", "no-such-model", "", "LeNet5"]


@fuzz(200)
@example(key="num_classes", value=10**9, delete=False)  # once built a 336 GB model before looking at weights
@example(key="in_channels", value=10**6, delete=False)
@example(key="model", value="no-such-model", delete=False)  # once an UnknownModelError not naming the file
@example(key="model", value="resnet20", delete=False)
@example(key="model_kwargs", value={"bogus": 1}, delete=False)  # once a raw TypeError
@given(key=st.sampled_from(["model", "num_classes", "in_channels", "classes", "input_size", "data_size", "mean",
                            "std", "model_kwargs", "format"]),
       value=st.sampled_from(MODELS) | json_values | st.just(10**9) | st.just([1, 10**6, 10**6]), delete=st.booleans())
@pytest.mark.slow
def test_checkpoint_metadata(scratch, good_checkpoint, key, value, delete):
    """One metadata entry deleted or replaced: an unknown model, another architecture's name,
    a billion classes (which must not build a 300 GB model), wrong types..."""
    meta = dict(good_checkpoint["meta"])
    if delete:
        meta.pop(key, None)
    else:
        meta[key] = value
    path = scratch / "meta.safetensors"
    try:
        save_file(good_checkpoint["tensors"], str(path), metadata={ckpt.META_KEY: json.dumps(meta)})
    except ValueError:  # a float json cannot write (nan): nothing to test
        assume(False)
    rss = peak_rss()
    attempt("checkpoint", path, lambda: classicnets.load(path), max_bytes=None)
    assert peak_rss() - rss < 256 * 1024 * 1024


@fuzz(60)
@given(victim=st.integers(0, 100), shape=st.lists(st.integers(1, 7), min_size=0, max_size=4),
       drop=st.booleans(), extra=st.booleans(), other=st.sampled_from([None, "resnet20", "nin"]))
@pytest.mark.slow
def test_checkpoint_wrong_weights(scratch, good_checkpoint, victim, shape, drop, extra, other):
    """A tensor of the wrong shape, a missing or extra tensor, or another architecture's weights."""
    tensors = dict(good_checkpoint["tensors"])
    if other is not None:
        tensors = classicnets.create_model(other, num_classes=10, in_channels=1).state_dict()
    else:
        name = sorted(tensors)[victim % len(tensors)]
        assume(drop or extra or list(tensors[name].shape) != shape)
        if drop:
            del tensors[name]
        else:
            tensors[name] = torch.zeros(shape)
    if extra:
        tensors["extra.weight"] = torch.zeros(2)
    path = scratch / "weights.safetensors"
    ckpt.save_tensors(path, {k: v.contiguous() for k, v in tensors.items()}, good_checkpoint["meta"])
    result = attempt("checkpoint", path, lambda: classicnets.load(path), max_bytes=None)
    assert isinstance(result, ClassicNetsError)
    assert "do not fit" in str(result)


# ---- tar archives ----------------------------------------------------------------------------

member_names = st.lists(st.sampled_from(["..", ".", "a", "b", "", "/", "c:", "..."]), min_size=1, max_size=4).map(
    "/".join)


@fuzz(150)
@example(members=[("a", tarfile.LNKTYPE, "missing")])  # once a KeyError from tarfile
@example(members=[(".", tarfile.SYMTYPE, "a/./..")])  # once a RecursionError from tarfile
@example(members=[("a", tarfile.SYMTYPE, "")])
@example(members=[("a", tarfile.LNKTYPE, "a")])
@given(members=st.lists(st.tuples(member_names, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                                                                  tarfile.LNKTYPE, tarfile.FIFOTYPE]),
                                  member_names), min_size=1, max_size=4))
def test_tar_members_never_escape(scratch, members):
    """Whatever the names and links, extraction writes inside the target folder or nothing."""
    root = scratch / "tar"
    root.mkdir(exist_ok=True)
    archive = root / "fuzz.tar"
    with tarfile.open(archive, "w") as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name or "x")
            info.type, info.linkname = kind, link
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    target = root / "out"
    before = sorted(p.name for p in root.iterdir())
    attempt("tar", archive, lambda: safe_extract(archive, target), max_bytes=None)
    assert sorted(p.name for p in root.iterdir() if p.name != "out") == [n for n in before if n != "out"]
    if target.exists():
        for p in target.rglob("*"):
            rel = PurePosixPath(os.path.relpath(os.path.realpath(p), os.path.realpath(target)))
            assert ".." not in rel.parts, f"{p} escaped to {os.path.realpath(p)}"
        shutil.rmtree(target)


# ---- resources: a dataset larger than memory is refused up front, with its size ---------------


@pytest.fixture
def little_memory(monkeypatch):
    """Pretend 1000 bytes of memory are available."""
    from classicnets.data import imageset, sources

    monkeypatch.setattr(imageset, "available_memory", lambda: 1000)
    monkeypatch.setattr(sources, "available_memory", lambda: 1000)


def write_idx_pair(d: Path, prefix: str, n: int, gz: bool) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    ip, lp = d / f"{prefix}-images-idx3-ubyte{suffix}", d / f"{prefix}-labels-idx1-ubyte{suffix}"
    for path, a in ((ip, np.zeros((n, 28, 28), np.uint8)), (lp, np.arange(n, dtype=np.uint8) % 10)):
        data = idx_bytes(a, 0x08)
        path.write_bytes(gzip.compress(data) if gz else data)
    return ip, lp


@pytest.mark.parametrize("gz", [False, True])
def test_idx_larger_than_memory_is_refused_with_its_size(tmp_path, little_memory, gz):
    from classicnets.data.imageset import InsufficientMemoryError
    from classicnets.data.sources import load_split

    ip, _ = write_idx_pair(tmp_path, "train", 100, gz)
    write_idx_pair(tmp_path, "t10k", 10, gz)
    size = rf"{re.escape(str(ip))} \(IDX array of shape \(100, 28, 28\), 78400 bytes\) needs about 76\.6 KiB"
    with pytest.raises(InsufficientMemoryError, match=size + r" of memory but only 1000 bytes available"):
        read_idx(ip)
    with pytest.raises(InsufficientMemoryError, match=size):  # a data directory, as `train --data` reads it
        load_split(None, tmp_path, "train", size=(28, 28), channels=1)


@pytest.mark.parametrize("tarball", [False, True])
def test_cifar_larger_than_memory_is_refused_with_its_size(tmp_path, little_memory, tarball):
    from classicnets.data.imageset import InsufficientMemoryError

    d = cifar_folder(tmp_path / "c", GOOD_BATCH)
    source = d
    if tarball:
        source = tmp_path / "cifar-10-python.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(d, arcname=d.name)
        shutil.rmtree(d)
    where = rf"{re.escape(str(source))} \(member cifar-10-batches-py/\w+\), \d+ bytes" if tarball else \
        rf"2 CIFAR files of \d+ bytes from {re.escape(str(d))}"
    with pytest.raises(InsufficientMemoryError, match=rf"loading {where}.* needs about .* but only 1000 bytes"):
        load_cifar10(source, "test")


def test_image_folder_larger_than_memory_is_streamed_or_refused(tmp_path, little_memory):
    """``train --data DIR`` streams a folder too large for memory; loading it whole is refused."""
    from classicnets.data.folder import load_image_folder
    from classicnets.data.imageset import InsufficientMemoryError
    from classicnets.data.sources import StreamedSet, load_split

    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            (tmp_path / split / cls / "1.png").write_bytes(IMAGES["png-rgb"])
    assert isinstance(load_split(None, tmp_path, "train", size=(32, 32), channels=3), StreamedSet)
    with pytest.raises(InsufficientMemoryError, match=rf"2 images of 3x32x32 from {re.escape(str(tmp_path))}"):
        load_image_folder(tmp_path / "train", size=(32, 32))


# ---- the total -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _mark_finished(request):
    yield
    FINISHED.add(request.node.originalname)


def test_zz_at_least_1000_malformed_inputs():
    fuzzers = {name for name, f in globals().items() if name.startswith("test_") and hasattr(f, "hypothesis")}
    if not fuzzers <= FINISHED:
        pytest.skip("counts only when every fuzz test of this file ran")
    total = sum(RUN.values())
    print(f"\nfuzzed {total} inputs: " + ", ".join(f"{k} {RUN[k]} ({REFUSED[k]} refused)" for k in sorted(RUN)))
    assert total >= MIN_TOTAL
