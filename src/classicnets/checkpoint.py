"""The run directory: writing, reading, checking and rebuilding a checkpoint, all in one place.
The trainer and the predictor both use it; neither uses the other.

Safetensors for tensors, JSON for everything else, written atomically. A run directory holds
- ``model.safetensors``: the weights, with the metadata needed to rebuild and use the model
  (model name and arguments, classes, input size, normalisation, metrics) in its header;
- ``model.json``: the same metadata, for people;
- ``train_state.safetensors``: weights, optimizer state and RNG state, for ``--resume``.

Every file is written to a temporary name in the same directory, flushed to disk, then renamed
over the old one: a kill at any moment leaves either the old file or the new one, never half of
one. Nothing here unpickles: loading a checkpoint cannot run code.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import (
    CheckpointError,
    CheckpointWriteError,
    ClassicNetsError,
    OutputError,
    file_in_the_way,
    output_error,
)
from .models import create_model
from .weights import looks_like_a_name, weights_file

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


def atomic_write(path: str | os.PathLike, write, *, hint: str | None = None,
                 kind: type[OutputError] = OutputError) -> None:
    """Call ``write(tmp_path)``, then move the finished file over ``path`` (creating its folder).

    If writing fails (disk full, read-only folder, kill, error), ``path`` keeps its previous
    content and the temporary file is removed; an ``OSError`` becomes ``kind`` (an
    :class:`OutputError`) naming ``path``, suggesting ``hint`` (the option that writes elsewhere).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # never hide the error that matters
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise output_error(path, exc, hint, kind) from exc
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, *, hint: str | None = None) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), hint=hint)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, hint: str | None = None) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), hint=hint)


def output_file(given: str | os.PathLike | None, default: Path) -> Path:
    """Where an ``-o FILE`` option writes: ``default`` when it is not given; inside ``given``, under
    the default's name, when ``given`` is a folder (one that exists, or any name ending in /)."""
    if not given:
        return Path(default)
    if Path(given).is_dir() or str(given).endswith(("/", os.sep)):
        return Path(given) / Path(default).name
    return Path(given)


def check_output(path: str | os.PathLike, hint: str | None = None) -> Path:
    """Refuse ``path`` now, before any work, if a file stands where its folder should be (``--out``
    naming a file); any other problem is reported when the file is written."""
    path = Path(path)
    if file_in_the_way(path.parent) is not None:
        raise output_error(path, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)),
                           hint)
    return path


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

    atomic_write(path, write, kind=CheckpointWriteError)


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
    """Accept a run directory, a file inside one, or the name of shipped weights
    (:mod:`classicnets.weights`; an existing path wins over a name)."""
    if is_shipped(path):
        return weights_file(os.fspath(path))
    path = Path(path)
    return path / name if path.is_dir() else path


def is_shipped(path: str | os.PathLike) -> bool:
    """Whether ``path`` names shipped weights rather than a checkpoint file or run directory (an
    unknown bare name raises, listing the weights: a typo should not read as a missing file). A
    folder of the same name that holds no checkpoint, such as the one :func:`home` makes for the
    outputs about shipped weights, does not hide them."""
    p = Path(path)
    if p.is_file() or (p / MODEL_FILE).is_file() or not looks_like_a_name(path):
        return False
    weights_file(os.fspath(path))  # raises UnknownWeightsError with the names
    return True


def home(checkpoint: str | os.PathLike) -> Path:
    """Where outputs about a checkpoint go by default: its run directory; for shipped weights, a
    folder of their name in the current directory (the installed package is not for writing)."""
    return Path(os.fspath(checkpoint)) if is_shipped(checkpoint) else resolve(checkpoint).parent


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


# ---- reading a checkpoint back, checked before a model is built --------------------------------

LEGACY_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, metadata) of a classicnets checkpoint: a run directory, its ``model.safetensors``
    or its ``train_state.safetensors``."""
    path = resolve(path)
    tensors, meta = read_tensors(path)
    if any(k.startswith("model.") for k in tensors) and "optimizer" in meta:
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for key in ("model", "num_classes", "in_channels", "classes", "input_size", "mean", "std"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks {key!r}; cannot rebuild the model")
    _check_meta(path, meta)
    return tensors, meta


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_meta(path: Path, meta: dict) -> None:
    """The metadata's types and sizes, before a model is built from them: the model is built
    before its weights are compared, and ``num_classes: 10**9`` would allocate 300 GB."""
    def bad(key: str, expected: str):
        raise CheckpointError(f"{path}: metadata {key!r} is {meta.get(key)!r}; expected {expected}")

    classes, channels = meta["classes"], meta["in_channels"]
    if not isinstance(meta["model"], str):
        bad("model", "a model name")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        bad("classes", "a list of class names")
    if not _is_int(meta["num_classes"]) or meta["num_classes"] != len(classes):
        bad("num_classes", f"the number of classes, {len(classes)}")
    if not _is_int(channels) or not 1 <= channels <= 4:
        bad("in_channels", "1 to 4")
    for key, n in (("input_size", 3), ("data_size", 2)):
        size = meta.get(key, [1] * n)  # data_size is optional
        if not isinstance(size, list) or len(size) != n or not all(_is_int(v) and 0 < v <= 65536 for v in size):
            bad(key, f"{n} positive integers")
    if meta["input_size"][0] != channels:
        bad("input_size", f"{channels} channels first, as in_channels says")
    for key in ("mean", "std"):
        v = meta[key]
        if not isinstance(v, list) or len(v) != channels or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in v):
            bad(key, f"{channels} numbers")
    if not isinstance(meta.get("model_kwargs", {}), dict):
        bad("model_kwargs", "a mapping of argument names to values")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights from a plain ``.safetensors`` file or a legacy PyTorch ``.pt``/``.pth`` file
    (e.g. torchvision's released weights).

    Legacy files are pickles; they are read with ``torch.load(weights_only=True)``, which only
    rebuilds tensors and plain containers and refuses anything that would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    if path.suffix not in LEGACY_SUFFIXES:
        raise CheckpointError(f"{path}: expected a .safetensors file or a PyTorch {sorted(LEGACY_SUFFIXES)} file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling refusal, a zip error, a truncated file...
        raise CheckpointError(f"{path} was refused: it is not a plain weights file that loads "
                              f"without running code ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return obj


def build_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, metadata) rebuilt from a checkpoint."""
    weights, meta = read_checkpoint(path)
    try:
        model = create_model(meta["model"], num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                             **meta.get("model_kwargs", {}))
    except (ClassicNetsError, TypeError, ValueError) as exc:  # an unknown model, an unknown argument
        raise CheckpointError(f"{path}: cannot rebuild its model from the metadata: {exc}") from exc
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit a {meta['model']!r} model: {str(exc)[:400]}") from exc
    return model.to(device).eval(), meta


# ---- what the trainer writes after each epoch, and reads back to resume ------------------------

def save_epoch(out: Path, model: nn.Module, optimizer, meta: dict, history: list[dict]) -> None:
    """Write the training state, the model and the metrics of the epoch just finished.

    Order matters for resuming after a kill: the training state goes first, then the metrics
    are rewritten to match it exactly (so no epoch is lost or duplicated), then the model.
    """
    weights = model.state_dict()
    meta = {**meta, "epoch": history[-1]["epoch"], "step": history[-1]["step"], "metrics": history[-1]}
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    state = {f"model.{k}": v for k, v in weights.items()}
    state.update(opt_tensors)
    state["rng.torch"] = torch.get_rng_state()
    state_meta = {**meta, "optimizer": opt_meta, "history": history}
    save_tensors(out / STATE_FILE, state, state_meta)
    lines = "".join(json.dumps(h) + "\n" for h in history)
    atomic_write_text(out / "metrics.jsonl", lines)
    save_tensors(out / MODEL_FILE, weights, meta)
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2))


def files_behind(out: Path, epoch: int) -> bool:
    """Whether the files :func:`save_epoch` writes after the training state lag it: model.json
    is written last, so it is up to date only if all of them are."""
    try:
        return json.loads((out / META_FILE).read_text()).get("epoch") != epoch
    except (OSError, ValueError, AttributeError):
        return True



def resume(out: Path, model: nn.Module, optimizer, cfg) -> tuple[int, list[dict]]:
    """Load the last finished epoch of the run in ``out`` into ``model`` and ``optimizer`` (and the
    RNG); ``cfg`` is the resolved ``TrainConfig`` of the run that continues it. Returns the epoch
    and the history so far."""
    path = out / STATE_FILE
    if not path.exists():
        raise CheckpointError(f"--resume: {path} does not exist (no finished epoch to resume from)")
    tensors, meta = read_tensors(path)
    if meta.get("model") != cfg.model:
        raise CheckpointError(f"--resume: {path} holds a {meta.get('model')!r} run, not {cfg.model!r}")
    # Settings that decide which batches come next and where the schedule stands: a resumed run
    # must share them to continue the same run (the learning rate itself may change).
    before = meta.get("config", {})
    changed = [f"--{k.replace('_', '-')} {before.get(k)!r} -> {getattr(cfg, k)!r}"
               for k in ("dataset", "batch_size", "train_limit", "holdout", "seed")
               if k in before and _plain(before[k]) != _plain(getattr(cfg, k))]
    if changed:
        raise CheckpointError(f"--resume: {path} was trained with other settings ({'; '.join(changed)}); "
                              f"resume with the same ones, or start a new run in another --out")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(optimizer_from_flat(tensors, meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"--resume: {path} does not match this model/optimizer: {exc}") from exc
    _match_param_layout(optimizer)
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["epoch"]), list(meta["history"])


def _match_param_layout(optimizer) -> None:
    """Give restored optimizer state (saved contiguous) its parameter's memory layout again:
    with channels-last weights, a fused update over mismatched layouts rounds differently, and
    a resumed run would no longer equal the uninterrupted one bit for bit."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p).copy_(value)



def _plain(value):
    return list(value) if isinstance(value, tuple) else value



def load_backbone(model: nn.Module, path: str) -> None:
    """Start from another checkpoint's weights, except its head (transfer learning)."""
    weights, _ = read_checkpoint(path)
    own = model.state_dict()
    head = model.head_name + "."
    usable = {k: v for k, v in weights.items() if not k.startswith(head) and k in own and own[k].shape == v.shape}
    missing = [k for k in own if not k.startswith(head) and k not in usable]
    if missing:
        raise CheckpointError(f"--init-from {path}: its backbone does not fit this model (e.g. {missing[0]})")
    model.load_state_dict(usable, strict=False)
