"""Checkpoint files: atomic writes, refusing broken or foreign files, and loading without unpickling."""

from __future__ import annotations

import errno
import json
import os
import pickle
import resource
import signal

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from classicnets import checkpoint as ckpt
from classicnets import create_model
from classicnets.checkpoint import load_state_dict_file, read_checkpoint
from classicnets.errors import CheckpointError
from conftest import temp_files

META = {"format": ckpt.FORMAT, "model": "x"}


def test_save_and_read_round_trip(tmp_path):
    tensors = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    meta = {**META, "nested": {"classes": ["cat", "dog"]}, "lr": 0.1}
    ckpt.save_tensors(tmp_path / "x.safetensors", tensors, meta)
    got, got_meta = ckpt.read_tensors(tmp_path / "x.safetensors")
    assert got_meta == meta
    assert got.keys() == tensors.keys() and all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert not temp_files(tmp_path)


def test_files_get_the_usual_permissions(tmp_path):
    """safetensors writes through a 0600 temporary file; a checkpoint is as readable as model.json."""
    ckpt.save_tensors(tmp_path / "x.safetensors", {"a": torch.zeros(1)}, META)
    ckpt.atomic_write_text(tmp_path / "x.json", "{}")
    (tmp_path / "plain.txt").write_text("")
    mode = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == mode
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == mode


# ---- a write that fails leaves the old file -----------------------------------------------

@pytest.fixture
def old_checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    ckpt.save_tensors(path, {"w": torch.ones(3)}, META)
    return path, path.read_bytes()


def assert_old_file_kept(path, content):
    assert path.read_bytes() == content
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def half_then_fail(error):
    """A ``save_file`` that writes half the file, then fails as a full disk would."""

    def save(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise error

    return save


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    # What safetensors itself raises on an I/O error: not an OSError.
    SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
], ids=["oserror", "safetensors-error"])
def test_failed_write_keeps_old_file_and_names_it(old_checkpoint, monkeypatch, error):
    path, content = old_checkpoint
    monkeypatch.setattr(ckpt, "save_file", half_then_fail(error))
    with pytest.raises(CheckpointError, match=r"could not write .*model\.safetensors.*No space left") as info:
        ckpt.save_tensors(path, {"w": torch.zeros(1000)}, META)
    assert "intact" in str(info.value)
    assert_old_file_kept(path, content)


def test_real_io_error_keeps_old_file(old_checkpoint):
    """A real failing write: the file-size limit makes the kernel refuse it (EFBIG)."""
    path, content = old_checkpoint
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(CheckpointError, match=r"could not write .*model\.safetensors.*too large"):
            ckpt.save_tensors(path, {"w": torch.zeros(100_000)}, META)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert_old_file_kept(path, content)


def test_interrupted_write_keeps_old_file(old_checkpoint):
    path, content = old_checkpoint

    def write(tmp):
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_write(path, write)
    assert_old_file_kept(path, content)


def test_text_write_replaces_whole_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    ckpt.atomic_write_text(path, "a\n" * 100)
    ckpt.atomic_write_text(path, "b\n")
    assert path.read_text() == "b\n" and os.listdir(tmp_path) == ["metrics.jsonl"]


# ---- reading refuses what is not a classicnets checkpoint ---------------------------------

@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "m.safetensors"
    ckpt.save_tensors(path, {"w": torch.randn(64, 64)}, META)
    return path.read_bytes()


@pytest.mark.parametrize("cut", ["empty", "8 bytes", "header only", "half", "all but one byte", "garbage"])
def test_truncated_or_garbage_file_is_refused(tmp_path, good_bytes, cut):
    data = {"empty": b"", "8 bytes": good_bytes[:8], "header only": good_bytes[:100],
            "half": good_bytes[:len(good_bytes) // 2], "all but one byte": good_bytes[:-1],
            "garbage": b"not a checkpoint at all\n" * 20}[cut]
    path = tmp_path / "broken.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        ckpt.read_tensors(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.safetensors.*does not exist"):
        ckpt.read_tensors(tmp_path / "nothing.safetensors")


@pytest.mark.parametrize("metadata, message", [
    (None, "no classicnets metadata"),
    ({"other": "x"}, "no classicnets metadata"),
    ({ckpt.META_KEY: "{not json"}, "not valid JSON"),
    ({ckpt.META_KEY: json.dumps({"format": "something-else"})}, "does not describe"),
    ({ckpt.META_KEY: json.dumps([1, 2])}, "does not describe"),
])
def test_foreign_safetensors_file_is_refused(tmp_path, metadata, message):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=f"foreign.safetensors.*{message}"):
        ckpt.read_tensors(path)


def test_checkpoint_without_model_description_is_refused(tmp_path):
    ckpt.save_tensors(tmp_path / "model.safetensors", {"w": torch.zeros(2)}, {"format": ckpt.FORMAT})
    with pytest.raises(CheckpointError, match="lacks 'model'"):
        read_checkpoint(tmp_path)


def test_read_checkpoint_accepts_run_dir_model_file_and_train_state(trained_run):
    weights, meta = read_checkpoint(trained_run)
    assert meta["model"] == "lenet5" and "fc3.weight" in weights
    for path in (trained_run / ckpt.MODEL_FILE, trained_run / ckpt.STATE_FILE):
        other, _ = read_checkpoint(path)
        assert other.keys() == weights.keys()
        assert all(torch.equal(other[k], weights[k]) for k in weights)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_state_survives_the_flat_format(optimizer):
    model = torch.nn.Linear(3, 2)
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=0.1))
    for _ in range(2):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    tensors, meta = ckpt.optimizer_to_flat(opt)
    meta = json.loads(json.dumps(meta))  # it travels as JSON
    fresh = (torch.optim.SGD(model.parameters(), lr=0.5) if optimizer == "sgd"
             else torch.optim.AdamW(model.parameters(), lr=0.5))
    fresh.load_state_dict(ckpt.optimizer_from_flat(tensors, meta))
    want, got = opt.state_dict(), fresh.state_dict()
    assert got["param_groups"] == json.loads(json.dumps(want["param_groups"]))  # (betas become a list)
    for pid, state in want["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(got["state"][pid][key]), torch.as_tensor(value)), key


# ---- legacy PyTorch weight files: tensors only, never code ---------------------------------

class Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["torch.save", "torch.save-legacy", "pickle"])
def test_pickle_with_a_payload_is_refused_without_running_it(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pt"
    obj = {"fc.weight": torch.zeros(2), "evil": Payload(marker)}
    if how == "pickle":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=how == "torch.save")
    with pytest.raises(CheckpointError, match="weights.pt.*refused"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match="model.pth"):
        load_state_dict_file(path)


@pytest.mark.parametrize("wrapped", [False, True])
def test_plain_state_dict_is_accepted(tmp_path, wrapped):
    model = create_model("lenet5")
    sd = model.state_dict()
    path = tmp_path / "lenet.pth"
    torch.save({"state_dict": sd, "epoch": 3} if wrapped else sd, path)
    got = load_state_dict_file(path)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    create_model("lenet5").load_state_dict(got)


def test_plain_safetensors_file_is_accepted(tmp_path):
    sd = create_model("lenet5").state_dict()
    save_file(sd, str(tmp_path / "w.safetensors"))
    got = load_state_dict_file(tmp_path / "w.safetensors")
    assert all(torch.equal(got[k], sd[k]) for k in sd)


@pytest.mark.parametrize("name, content, message", [
    ("weights.pt", None, "does not exist"),
    ("weights.npz", b"x", "expected a .safetensors file"),
    ("weights.pt", b"\x00garbage", "refused"),
    ("weights.safetensors", b"garbage", "not a readable safetensors"),
])
def test_bad_weights_files_are_refused(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict_file(path)


def test_non_tensor_values_are_refused(tmp_path):
    torch.save({"w": torch.zeros(1), "note": "hello"}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load_state_dict_file(tmp_path / "w.pt")
