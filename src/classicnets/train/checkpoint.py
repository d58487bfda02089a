"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A run directory holds
- ``model.safetensors``: the weights, with the metadata needed to rebuild and use the model
  (model name and arguments, classes, input size, normalisation, metrics) in its header;
- ``model.json``: the same metadata, for people;
- ``train_state.safetensors``: weights, optimizer state and RNG state, for ``--resume``.

Every file is written to a temporary name in the same directory, flushed to disk, then renamed
over the old one: a kill at any moment leaves either the old file or the new one, never half of
one. Nothing here unpickles: loading a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError

FORMAT = "classicnets-checkpoint"
META_KEY = "classicnets"
MODEL_FILE = "model.safetensors"
META_FILE = "model.json"
STATE_FILE = "train_state.safetensors"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# safetensors writes through a private temporary file (mode 0600); files are given the mode
# ``open()`` would have given them, so people who may read model.json may read the weights too.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, then move the finished file over ``path``.

    If writing fails (disk full, kill, error), ``path`` keeps its previous content and the
    temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointError(
                f"could not write {path}: {exc.strerror or exc}; "
                f"the previous {path.name} (if any) is intact"
            ) from exc
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _cpu_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write tensors plus a JSON metadata dict into one safetensors file, atomically."""
    header = {META_KEY: json.dumps(meta, sort_keys=True)}
    tensors = _cpu_tensors(tensors)

    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=header)
        except SafetensorError as exc:  # how safetensors reports I/O errors, e.g. a full disk
            raise OSError(str(exc)) from exc

    atomic_write(path, write)


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_tensors`: (tensors, metadata)."""
    return _read(path, tensors=True)


def read_meta(path: Path) -> dict:
    """The metadata of a file written by :func:`save_tensors`, without reading its tensors."""
    return _read(path, tensors=False)[1]


def _read(path: Path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a .safetensors file or a run directory)")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            loaded = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {exc}") from exc
    if META_KEY not in header:
        raise CheckpointError(f"{path} has no classicnets metadata: not a checkpoint written by classicnets")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata does not describe a {FORMAT}")
    return loaded, meta


def resolve(path: str | os.PathLike, name: str = MODEL_FILE) -> Path:
    """Accept a run directory or a file inside one."""
    path = Path(path)
    return path / name if path.is_dir() else path


# Optimizer state: safetensors holds tensors only, so tensors go in the file and the rest
# (hyper-parameters, step counters that are plain numbers) into the JSON metadata.

def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, plain = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                plain[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "plain_state": plain}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["plain_state"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}
