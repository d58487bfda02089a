"""CIFAR-10 and CIFAR-100, "python version" (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html).

Each batch file is a Python 2 pickle of a dict: ``b"data"`` a (N, 3072) uint8 array (1024 red,
then 1024 green, then 1024 blue values, each plane row-major, so a reshape gives (N, 3, 32, 32)),
``b"labels"`` (CIFAR-10) or ``b"fine_labels"``/``b"coarse_labels"`` (CIFAR-100) lists of ints.

A pickle can run any code it names, so these files are never given to plain :func:`pickle.load`:
:class:`_BatchUnpickler` resolves only the few globals a genuine batch uses (numpy array
reconstruction and ``_codecs.encode``) and refuses everything else before it can run.

Reads the extracted folder (``cifar-10-batches-py/``, ``cifar-100-python/``) or the official
tarball directly, member by member in memory, without extracting it to disk.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFormatError
from .imageset import ImageSet, channel_stats, check_memory

try:  # numpy >= 2 moved the array internals to numpy._core; old pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
import _codecs


def _empty_array(subtype, shape, dtype):
    """``_reconstruct`` as numpy's pickles use it: an empty array that ``__setstate__`` then fills
    from the pickle's own bytes. Any other shape would allocate memory the file does not hold
    (a 60-byte pickle could ask for terabytes), so it is refused."""
    if subtype is not np.ndarray or shape not in ((0,), [0], 0):
        raise pickle.UnpicklingError(f"_reconstruct({getattr(subtype, '__name__', subtype)!r}, {shape!r}) "
                                     f"is not how numpy pickles an array")
    return _reconstruct(subtype, (0,), dtype)


# (module, name) -> object: all a genuine CIFAR batch pickle may refer to.
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,  # how protocol-2 pickles from Python 3 store bytes
}

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_TARBALL = "cifar-10-python.tar.gz"
CIFAR100_TARBALL = "cifar-100-python.tar.gz"
_CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
_PIXELS = 3 * 32 * 32
# Peak memory while loading, as a multiple of the batch files' bytes (datasets._LOAD_OVERHEAD).
_LOAD_OVERHEAD = 2.5


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts, lists, strings and numbers, and nothing else."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes, as the keys are
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataFormatError(
                f"{self._source}: refused to unpickle: the pickle asks for {module}.{name}, which "
                f"a CIFAR batch never contains (only numpy arrays, dicts, lists, strings, numbers); "
                f"the file is not a genuine CIFAR batch and may be malicious"
            ) from None

    def persistent_load(self, pid):
        raise DataFormatError(f"{self._source}: refused to unpickle a persistent id; not a CIFAR batch")


def read_batch(data: bytes, source: str) -> dict:
    """Unpickle one batch or meta file (its bytes) with the restricted unpickler."""
    try:
        # The C unpickler allocates a counted bytes/str opcode's declared length before reading
        # it: 14 bytes can ask for 8 GiB. pickletools reads the opcodes without doing that, so a
        # length beyond the end of the data is refused first.
        for _ in pickletools.genops(data):
            pass
        obj = _BatchUnpickler(io.BytesIO(data), source).load()
    except DataFormatError:
        raise
    except Exception as e:  # a malformed pickle can raise almost anything; none of it is ours
        raise DataFormatError(f"{source}: not a CIFAR python batch: the pickle is unreadable "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _batch_arrays(batch: dict, label_key: bytes, num_classes: int, source: str):
    """Validate a batch dict; return (images (N, 3, 32, 32) uint8, labels (N,) int64)."""
    for key in (b"data", label_key):
        if key not in batch:
            keys = ", ".join(repr(k) for k in batch)
            raise DataFormatError(f"{source}: no {key!r} entry; expected a CIFAR batch with b'data' "
                                  f"and {label_key!r}, found {keys}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
            data.shape[1] != _PIXELS):
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else (
            type(data).__name__)
        raise DataFormatError(f"{source}: b'data' is a {desc}; expected a uint8 array of shape "
                              f"(N, {_PIXELS})")
    try:
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError):
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise DataFormatError(f"{source}: {label_key!r} must be {len(data)} integers, one per row "
                              f"of b'data'; got {labels.dtype} of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DataFormatError(f"{source}: label {int(bad)} out of range; expected 0 to "
                              f"{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _class_names(meta: dict, key: bytes, source: str) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list) or not names or not all(isinstance(n, bytes | str) for n in names):
        raise DataFormatError(f"{source}: no list of class names under {key!r}")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


# --------------------------------------------------------------------------------------------
# Where the files are: a folder, or members of the tarball


class _Source:
    """The batch files of a CIFAR copy, read with :meth:`read_all`.

    ``path`` may be the extracted folder, a directory holding it (or the tarball), or the
    tarball itself; a tarball is read in memory, never extracted.
    """

    def __init__(self, path: Path, folder: str, tarball: str):
        self.folder, self.tarball = folder, tarball
        self.dir: Path | None = None
        if path.is_dir():
            for d in (path, path / folder):
                if (d / "meta").is_file() or (d / "batches.meta").is_file():
                    self.dir = d
                    return
            if not (path / tarball).is_file():
                raise DataFormatError(f"{path}: no CIFAR files; expected the extracted {folder}/ "
                                      f"folder or the {tarball} tarball")
            path = path / tarball
        if not path.exists():
            raise DataFormatError(f"{path}: no such file or directory (expected {folder}/ or {tarball})")
        self.path = path

    def describe(self, name: str) -> str:
        return str(self.dir / name) if self.dir else f"{self.path} (member {self.folder}/{name})"

    def read_all(self, names: list[str]):
        """Yield (name, bytes) for each of ``names``, in the order cheapest to read."""
        if self.dir is not None:
            sizes = [(self.dir / n).stat().st_size for n in names if (self.dir / n).is_file()]
            check_memory(int(_LOAD_OVERHEAD * sum(sizes)),
                         f"{len(sizes)} CIFAR files of {sum(sizes)} bytes from {self.dir}")
            for name in names:
                path = self.dir / name
                try:
                    yield name, path.read_bytes()
                except FileNotFoundError:
                    raise DataFormatError(f"{path}: no such file (expected a CIFAR batch file)") from None
                except OSError as e:
                    raise DataFormatError(f"{path}: cannot read ({e.strerror})") from None
            return
        # One forward pass through the compressed stream, in archive order: going back for a
        # member would decompress the archive again from the start.
        wanted = set(names)
        try:
            with tarfile.open(self.path, "r:*") as tar:
                for m in tar:
                    name = Path(m.name).name
                    if name in wanted and m.isfile() and Path(m.name).parent.name == self.folder:
                        check_memory(int(_LOAD_OVERHEAD * m.size),
                                     f"{self.describe(name)}, {m.size} bytes")
                        wanted.discard(name)
                        yield name, tar.extractfile(m).read()
                        if not wanted:
                            return
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataFormatError(f"{self.path}: not a readable tar archive, or corrupt or truncated "
                                  f"({e}); expected the official {self.tarball}") from None
        if wanted:
            missing = ", ".join(f"{self.folder}/{n}" for n in names if n in wanted)
            raise DataFormatError(f"{self.path}: no member {missing}; expected the official "
                                  f"{self.tarball} layout")


def _load(source, split, *, folder, tarball, files, meta_name, names_key, label_key, display,
          mean, std) -> ImageSet:
    if split not in files:
        raise DataFormatError(f"unknown split {split!r} for {display}; expected 'train' or 'test'")
    src = _Source(Path(source), folder, tarball)
    batches = {name: read_batch(data, src.describe(name))
               for name, data in src.read_all([meta_name, *files[split]])}
    classes = _class_names(batches.pop(meta_name), names_key, src.describe(meta_name))
    parts = [_batch_arrays(batches.pop(f), label_key, len(classes), src.describe(f))
             for f in files[split]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    del parts
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if mean is None or std is None:
        mean, std = channel_stats(tensor)
    return ImageSet(tensor, torch.from_numpy(labels), classes, f"{display}/{split}",
                    tuple(mean), tuple(std))


def load_cifar10(source: str | os.PathLike, split: str = "train", *,
                 mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None) -> ImageSet:
    """CIFAR-10 from ``cifar-10-batches-py/`` (or a directory holding it) or ``cifar-10-python.tar.gz``.

    train: ``data_batch_1`` .. ``data_batch_5`` (50,000 images); test: ``test_batch`` (10,000).
    Class names come from ``batches.meta``. ``mean``/``std`` should be the training split's;
    when omitted they are computed from the images loaded.
    """
    return _load(source, split, folder=CIFAR10_FOLDER, tarball=CIFAR10_TARBALL, files=_CIFAR10_FILES,
                 meta_name="batches.meta", names_key=b"label_names", label_key=b"labels",
                 display="cifar10", mean=mean, std=std)


def load_cifar100(source: str | os.PathLike, split: str = "train", *, label_mode: str = "fine",
                  mean: tuple[float, ...] | None = None,
                  std: tuple[float, ...] | None = None) -> ImageSet:
    """CIFAR-100 from ``cifar-100-python/`` (or a directory holding it) or ``cifar-100-python.tar.gz``.

    ``label_mode="fine"`` gives the 100 classes, ``"coarse"`` the 20 superclasses.
    """
    if label_mode not in ("fine", "coarse"):
        raise DataFormatError(f"unknown CIFAR-100 label_mode {label_mode!r}; expected 'fine' or 'coarse'")
    return _load(source, split, folder=CIFAR100_FOLDER, tarball=CIFAR100_TARBALL, files=_CIFAR100_FILES,
                 meta_name="meta", names_key=f"{label_mode}_label_names".encode(),
                 label_key=f"{label_mode}_labels".encode(),
                 display="cifar100" if label_mode == "fine" else "cifar100-coarse", mean=mean, std=std)


def load_cifar(source: str | os.PathLike, split: str = "train", *, label_mode: str = "fine",
               mean: tuple[float, ...] | None = None,
               std: tuple[float, ...] | None = None) -> ImageSet:
    """CIFAR-10 or CIFAR-100, whichever ``source`` (folder, parent folder or tarball) holds."""
    source = Path(source)
    if _is_cifar100(source):
        return load_cifar100(source, split, label_mode=label_mode, mean=mean, std=std)
    return load_cifar10(source, split, mean=mean, std=std)


def _is_cifar100(source: Path) -> bool:
    if source.is_dir():
        has10 = any((d / "batches.meta").is_file() for d in (source, source / CIFAR10_FOLDER)) or (
            source / CIFAR10_TARBALL).is_file()
        has100 = any((d / "meta").is_file() for d in (source, source / CIFAR100_FOLDER)) or (
            source / CIFAR100_TARBALL).is_file()
        if has10 and has100:
            raise DataFormatError(f"{source}: holds both CIFAR-10 and CIFAR-100; expected one (name "
                                  f"the dataset, or point at its folder or tarball)")
        return has100
    if "cifar-100" in source.name.lower():
        return True
    if "cifar-10" in source.name.lower():
        return False
    try:
        with tarfile.open(source, "r:*") as tar:
            return any(Path(m.name).parts[:1] == (CIFAR100_FOLDER,) for m in tar)
    except (tarfile.TarError, OSError, EOFError):
        return False  # load_cifar10 will say what is wrong with it
