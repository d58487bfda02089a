"""Use a trained model: ``classicnets.load(checkpoint)`` returns a :class:`Predictor`.

Inputs are preprocessed exactly as in training: converted to the model's channels, brought to
the training images' size and then to the model's input size the same way the pipeline did
(padding or resizing), and normalised with the training set's mean and std.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .data.pipeline import Normalize, fit_to_size
from .errors import CheckpointError, ClassicNetsError, DataFormatError
from .fast import PRECISIONS
from .models import create_model
from .train import checkpoint as ckpt

LEGACY_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, metadata) of a classicnets checkpoint: a run directory, its ``model.safetensors``
    or its ``train_state.safetensors``."""
    path = ckpt.resolve(path)
    tensors, meta = ckpt.read_tensors(path)
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


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) to ``channels``: gray repeated to RGB, RGB to luminance (ITU-R 601)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.expand(-1, channels, -1, -1).contiguous()
    if channels == 1 and have in (3, 4):
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images[:, :3].float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if have == 4 and channels == 3:
        return images[:, :3].contiguous()
    raise DataFormatError(f"cannot convert {have}-channel images to the model's {channels} channels")


class Predictor:
    """A trained model with its preprocessing. ``predict`` gives class indices, ``predict_proba``
    class probabilities, ``classes`` the class names.

    ``fast=True`` runs the model through :func:`classicnets.fast.optimize_for_inference` (CPU
    only): compiled when the predictor is made, for batches of up to ``fast_batch`` (each
    smaller power-of-two chunk size compiles once, when first needed); ``precision="bf16"`` with
    it computes in bfloat16. ``fast_model`` is then the :class:`~classicnets.fast.FastModel`.
    """

    fast_batch = 16  # the batch size a fast predictor is compiled for; larger inputs run in chunks

    def __init__(self, model: torch.nn.Module, meta: dict, device: str | torch.device = "cpu",
                 fast: bool = False, precision: str = "fp32"):
        self.model = model.eval()
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.device = torch.device(device)
        self.channels = int(meta["in_channels"])
        self.input_size = tuple(meta["input_size"][1:])
        self.data_size = tuple(meta.get("data_size", self.input_size))
        self.normalize = Normalize(meta["mean"], meta["std"], device=self.device)
        self.fast_model = self._fast_model(fast, precision)

    def _fast_model(self, fast: bool, precision: str):
        """The FastModel for ``fast=True``, else None (after checking both arguments)."""
        if not isinstance(fast, bool):
            raise ClassicNetsError(f"fast={fast!r}: expected True or False")
        if precision not in PRECISIONS:
            raise ClassicNetsError(f"precision={precision!r}: expected 'fp32' or 'bf16'")
        if not fast:
            if precision != "fp32":
                raise ClassicNetsError(f"precision={precision!r} needs fast=True (the plain model runs in fp32)")
            return None
        if self.device.type != "cpu":
            raise ClassicNetsError(f"fast=True prepares CPU inference; got device {str(self.device)!r}")
        from .fast import optimize_for_inference

        gen = torch.Generator().manual_seed(0)  # normalised inputs are roughly N(0, 1)
        example = torch.randn(self.fast_batch, self.channels, *self.input_size, generator=gen)
        return optimize_for_inference(self.model, example, precision)

    def _image_from_file(self, path) -> torch.Tensor:
        from .data.folder import load_image

        return load_image(path, size=self.data_size, channels=self.channels)

    def to_uint8_batch(self, x) -> torch.Tensor:
        """Any supported input as a uint8 (N, C, H, W) batch at the training data's size."""
        from PIL import Image

        if isinstance(x, (str, os.PathLike)):
            return self._image_from_file(x)[None]
        if isinstance(x, Image.Image):
            from .data.folder import convert_image

            return convert_image(x, size=self.data_size, channels=self.channels)[None]
        if isinstance(x, Sequence) and not isinstance(x, (np.ndarray, torch.Tensor)):
            if not x:
                raise ClassicNetsError("predict: got an empty list")
            return torch.cat([self.to_uint8_batch(item) for item in x])
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if t.dtype != torch.uint8:
            raise DataFormatError(f"predict: expected uint8 pixel values 0-255, got dtype {t.dtype}")
        if t.dim() == 2:
            t = t[None, None]
        elif t.dim() == 3:
            t = t[:, None] if t.shape[0] != self.channels or self.channels == 1 else t[None]
        elif t.dim() != 4:
            raise DataFormatError(f"predict: expected images shaped (N, H, W) or (N, C, H, W), got {tuple(t.shape)}")
        t = to_channels(t.cpu(), self.channels)
        if tuple(t.shape[-2:]) != self.data_size:
            t = _resize(t, self.data_size)
        return t

    def preprocess(self, x) -> torch.Tensor:
        batch = self.to_uint8_batch(x)
        return self.normalize(fit_to_size(batch, self.input_size).to(self.device))

    @torch.no_grad()
    def logits(self, x) -> torch.Tensor:
        model = self.model if self.fast_model is None else self.fast_model
        return model(self.preprocess(x)).float()

    def predict_proba(self, x) -> torch.Tensor:
        return self.logits(x).softmax(1).cpu()

    def predict(self, x) -> torch.Tensor:
        return self.logits(x).argmax(1).cpu()

    def topk(self, x, k: int = 3) -> list[list[tuple[str, float]]]:
        proba = self.predict_proba(x)
        p, i = proba.topk(min(k, proba.shape[1]), dim=1)
        return [[(self.classes[j], float(q)) for q, j in zip(pr.tolist(), ix.tolist(), strict=True)]
                for pr, ix in zip(p, i, strict=True)]


def _resize(t: torch.Tensor, size) -> torch.Tensor:
    """Arrays of another size go through :func:`convert_image` like image files do (cover, then
    centre-crop), so an array and the same picture as a file give the same prediction."""
    from PIL import Image

    from .data.folder import convert_image

    channels = t.shape[1]
    pixels = t.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C): Pillow's layout
    if channels == 1:
        pixels = pixels[..., 0]
    return torch.stack([convert_image(Image.fromarray(a), size=size, channels=channels) for a in pixels])


def load(path: str | os.PathLike, device: str | torch.device = "cpu", fast: bool = False,
         precision: str = "fp32") -> Predictor:
    """A :class:`Predictor` for a checkpoint written by ``classicnets train``; ``fast`` and
    ``precision`` as for :class:`Predictor`."""
    model, meta = build_from_checkpoint(path, device)
    return Predictor(model, meta, device, fast=fast, precision=precision)
