"""Where splits come from: image folders (in memory or streamed) and IDX directories."""

import shutil
import unicodedata

import numpy as np
import pytest
import torch
from PIL import Image

from classicnets.data import sources
from classicnets.data.sources import StreamedSet, load_split
from classicnets.errors import DataFormatError
from classicnets.train.loop import TrainConfig, train


def _folder(root, n_per_class=12, size=(20, 24)):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(["circle", "square"]):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n_per_class):
                arr = rng.integers(0, 80, size=(*size, 3), dtype=np.uint8)
                arr[4:16, 6:18, label] = 255  # a class-specific colour patch
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def test_folder_split_in_memory(tmp_path):
    root = _folder(tmp_path)
    train = load_split(None, root, "train", size=(32, 32), channels=1, stream=False)
    test = load_split(None, root, "test", size=(32, 32), channels=1, stream=False)
    assert train.images.shape == (24, 1, 32, 32) and train.classes == ["circle", "square"]
    assert test.mean == train.mean  # the test split is normalised with the training statistics


def test_folder_split_streamed_matches_in_memory(tmp_path):
    root = _folder(tmp_path)
    mem = load_split(None, root, "train", size=(32, 32), channels=3, stream=False)
    streamed = load_split(None, root, "train", size=(32, 32), channels=3, stream=True)
    assert isinstance(streamed, StreamedSet)
    assert torch.equal(streamed.labels, mem.labels)
    for i in (0, 5, 23):
        image, label = streamed.stream[i]
        assert torch.equal(image, mem.images[i]) and label == mem.labels[i]


@pytest.mark.slow
def test_training_from_a_streamed_folder_equals_training_in_memory(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data")
    cfg = dict(model="lenet5", dataset=None, data_dir=str(root), epochs=1, batch_size=8, quiet=True)
    in_memory = train(TrainConfig(**cfg, out=str(tmp_path / "a")))
    monkeypatch.setattr(sources, "STREAM_ABOVE_MEMORY_FRACTION", 0.0)  # every folder "too large"
    streamed = train(TrainConfig(**cfg, out=str(tmp_path / "b")))
    for (name, a), (_, b) in zip(in_memory.model.state_dict().items(), streamed.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert in_memory.history[-1]["test_accuracy"] == streamed.history[-1]["test_accuracy"]


def test_idx_directory_under_any_names(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 9], dtype=np.uint8)
    (tmp_path / "foo-images-idx3-ubyte").write_bytes(
        b"\x00\x00\x08\x03" + np.array([6, 28, 28], ">u4").tobytes() + images.tobytes())
    (tmp_path / "foo-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + np.array([6], ">u4").tobytes()
                                                     + labels.tobytes())
    with pytest.raises(DataFormatError, match="t10k-images"):  # training needs a named test split
        load_split(None, tmp_path, "test", size=(32, 32), channels=1)
    data = load_split(None, tmp_path, "test", size=(32, 32), channels=1, any_idx_pair=True)
    assert data.images.shape == (6, 1, 28, 28) and data.labels.tolist() == labels.tolist()
    assert data.classes == [str(i) for i in range(10)]


def test_unrecognised_directory_says_what_was_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataFormatError, match="found no data"):
        load_split(None, tmp_path, "train", size=(32, 32), channels=1)
    with pytest.raises(DataFormatError, match="does not exist"):
        load_split(None, tmp_path / "missing", "train", size=(32, 32), channels=1)


def test_a_test_split_alone_with_the_statistics_given(tmp_path):
    root = _folder(tmp_path)
    for f in (root / "train" / "circle").iterdir():
        f.write_bytes(b"broken: never read when the statistics are given")
    for stream in (False, True):
        data = load_split(None, root, "test", size=(32, 32), channels=1, stats=([0.5], [0.25]), stream=stream)
        assert data.mean == (0.5,) and data.std == (0.25,) and len(data) == 24
    shutil.rmtree(root / "train")
    assert len(load_split(None, root, "test", size=(32, 32), channels=1, stats=([0.5], [0.25]))) == 24
    with pytest.raises(DataFormatError, match="no train/ folder for the train split"):
        load_split(None, root, "train", size=(32, 32), channels=1)


def test_class_names_compare_in_nfc(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    for name in (nfc, "thé"):
        (tmp_path / "test" / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "test" / name / "1.png")
    data = load_split(None, tmp_path, "test", size=(8, 8), channels=1, classes=[nfd, "thé"])  # a macOS checkpoint
    assert data.classes == [nfc, "thé"]
    with pytest.raises(DataFormatError, match="differ from the model's"):
        load_split(None, tmp_path, "test", size=(8, 8), channels=1, classes=["cafe", "thé"])
