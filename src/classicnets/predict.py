"""Use a trained model: ``classicnets.load(checkpoint)`` returns a :class:`Predictor`.

Inputs are preprocessed exactly as in training: converted to the model's channels, brought to
the training images' size and then to the model's input size the same way the pipeline did
(padding or resizing), and normalised with the training set's mean and std.

A model of a dataset that made its images by a recipe (MNIST's digits, Fashion-MNIST) reads
every input by that recipe first (:mod:`classicnets.data.reading`): a digit drawn black on white,
or photographed on paper, becomes a light, size-normalised, centred 28x28 digit. ``normalize=False``
turns that off.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from .checkpoint import build_from_checkpoint
from .data.pipeline import Normalize, fit_to_size
from .data.reading import reading_for
from .device import pick_device
from .errors import ClassicNetsError, DataFormatError
from .fast import PRECISIONS


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

    ``fast=True`` (CPU only) serves the fastest inference path that agrees with the plain model:
    a short probe (:func:`classicnets.fast_probe.fastest`), when the predictor is made, times
    eager, inductor and ONNX Runtime (where installed) at batch ``fast_batch``, and its choice is
    cached, so later predictors of the same architecture on this machine build only that path.
    ``precision="bf16"`` lets bfloat16 compete too, where the CPU has it natively. ``fast_model``
    is then the :class:`~classicnets.fast.FastModel` and ``fast_path`` the
    :class:`~classicnets.fast_probe.Probe` (what serves, what was measured, rejected, skipped).

    ``normalize=True`` reads inputs the way the model's dataset made its images (``reading``,
    :func:`~classicnets.data.reading.reading_for`; None for datasets without a recipe, e.g. a
    folder of images); :meth:`read` shows the result.
    """

    fast_batch = 16  # the batch size a fast predictor is probed and compiled for; larger inputs run in chunks

    def __init__(self, model: torch.nn.Module, meta: dict, device: str | torch.device = "cpu",
                 fast: bool = False, precision: str = "fp32", normalize: bool = True):
        self.model = model.eval()
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.device = torch.device(device)
        self.channels = int(meta["in_channels"])
        self.input_size = tuple(meta["input_size"][1:])
        self.data_size = tuple(meta.get("data_size", self.input_size))
        self.normalize = Normalize(meta["mean"], meta["std"], device=self.device)
        if not isinstance(normalize, bool):
            raise ClassicNetsError(f"normalize={normalize!r}: expected True or False")
        self.reading = reading_for(meta.get("dataset")) if normalize else None
        self.fast_model = self._fast_model(fast, precision)
        self.fast_path = None if self.fast_model is None else self.fast_model.probe

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
        from .fast_probe import fastest

        gen = torch.Generator().manual_seed(0)  # normalised inputs are roughly N(0, 1)
        example = torch.randn(self.fast_batch, self.channels, *self.input_size, generator=gen)
        return fastest(self.model, example, precision)

    def _image_from_file(self, path) -> torch.Tensor:
        from .data.folder import load_image

        if self.reading is not None:
            return self.reading.file(path, self.channels)
        return load_image(path, size=self.data_size, channels=self.channels)

    def to_uint8_batch(self, x) -> torch.Tensor:
        """Any supported input as a uint8 (N, C, H, W) batch at the training data's size, read by
        the dataset's recipe where it has one (:meth:`read`)."""
        from PIL import Image

        if isinstance(x, (str, os.PathLike)):
            return self._image_from_file(x)[None]
        if isinstance(x, Image.Image):
            from .data.folder import convert_image

            if self.reading is not None:
                return self.reading.picture(x, self.channels)[None]
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
        t = to_channels(t.cpu(), 1 if self.reading else self.channels)
        if self.reading is not None:  # readings are of grey pictures
            t = to_channels(self.reading.batch(t), self.channels)
        if tuple(t.shape[-2:]) != self.data_size:
            t = _resize(t, self.data_size)
        return t

    def read(self, x) -> torch.Tensor:
        """What the model is given to look at, before normalisation: uint8 (N, C, H, W) at the
        training data's size (28x28 for the digits), after the dataset's reading if it has one.
        For people: ``Image.fromarray(predictor.read("seven.png")[0, 0].numpy())``."""
        return self.to_uint8_batch(x)

    def preprocess(self, x) -> torch.Tensor:
        """The model's input: :meth:`read`, brought to the input size, normalised."""
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
         precision: str = "fp32", normalize: bool = True) -> Predictor:
    """A :class:`Predictor` for a checkpoint written by ``classicnets train``; ``fast``,
    ``precision`` and ``normalize`` as for :class:`Predictor`."""
    device = pick_device(device)
    model, meta = build_from_checkpoint(path, device)
    return Predictor(model, meta, device, fast=fast, precision=precision, normalize=normalize)
