"""One forward pass with every layer's output kept, turned into what the page draws.

A *layer* here is what a learner calls one: a convolution, pooling, fully connected layer or
residual block, together with the modules after it that keep its shape (batch norm, the
activation, dropout), so that a convolution's maps are shown after its ReLU. A residual block
is one layer: what happens inside it is the residual view's business (:mod:`.residual`).

Maps are sent as bytes, not numbers: each layer's shown maps scaled together to 0-255 (one
scale per layer, so a quiet map looks quiet beside a busy one), base64-encoded; a 28x28 map is
784 bytes instead of several kilobytes of JSON.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data.pipeline import fit_to_size
from ..models.lenet import EuclideanRBF, SparseConv2d, Subsampling
from ..models.resnet import BasicBlock, Bottleneck

MOST_MAPS = 16  # a layer with more maps than this shows its 16 most active (highest mean activation)
LARGEST_SIDE = 64  # maps larger than this are shrunk (averaged) for the page: no screen needs more
MOST_BARS = 1024  # a vector longer than this shows its first 1,024 values
BLOCKS = (BasicBlock, Bottleneck)
# Modules that begin a layer; any other module that keeps the shape joins the layer before it.
_STARTS = (nn.Conv2d, SparseConv2d, nn.Linear, EuclideanRBF, Subsampling, nn.MaxPool2d, nn.AvgPool2d,
           nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, *BLOCKS)


@dataclass
class Layer:
    name: str  # the module that begins it, e.g. "features.conv1" or "layer2.0"
    types: list[str] = field(default_factory=list)  # its modules' classes: ["Conv2d", "BatchNorm2d", "ReLU"]
    output: torch.Tensor | None = None  # the last module's output, one image, no batch dimension


def watched_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs make the layers: every leaf module, except that a residual block
    counts as one (its insides are not watched)."""
    watched, blocks = [], []
    for name, module in model.named_modules():
        if any(name.startswith(b + ".") for b in blocks):
            continue
        if isinstance(module, BLOCKS):
            blocks.append(name)
            watched.append((name, module))
        elif name and not list(module.children()):
            watched.append((name, module))
    return watched


def run_recorded(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[Layer]]:
    """``model(x)`` for one image, and its layers in the order they ran. The caller holds the
    model's lock: hooks are added and removed around this one call."""
    layers: list[Layer] = []

    def hook(name: str):
        def record(module, args, output):
            if isinstance(module, nn.Flatten) or not isinstance(output, torch.Tensor):
                return  # flattening changes the shape, not the values: nothing new to see
            value = output[0].detach().float().clone()  # clone: a later in-place ReLU must not change it
            starts = isinstance(module, _STARTS) or not layers or value.shape != layers[-1].output.shape
            if starts:
                layers.append(Layer(name))
            layers[-1].types.append(type(module).__name__)
            layers[-1].output = value

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in watched_modules(model)]
    return forward_hooked(model, x, handles), layers


def forward_hooked(model: nn.Module, x: torch.Tensor, handles: list) -> torch.Tensor:
    """The logits of ``model(x)`` for one image, run with the hooks of ``handles`` in place; they are
    removed afterwards, whatever happens."""
    try:
        with torch.inference_mode():
            return model(x).float()[0]
    finally:
        for h in handles:
            h.remove()


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.to(torch.uint8).contiguous().numpy().tobytes()).decode("ascii")


def to_bytes(t: torch.Tensor, peak: float | None = None, signed: bool | None = None) -> tuple[str, str, float]:
    """Values as 0-255 bytes: non-negative ones from 0 to their largest, signed ones symmetric about 0
    (128 is zero, so the page can colour the sign). Returns (base64, "positive" or "signed", the value
    that 255 stands for). ``peak`` and ``signed`` share one scale between several tensors."""
    signed = bool((t < 0).any()) if signed is None else signed
    top = float(t.abs().max()) if peak is None else peak
    top = top if top > 0 else 1.0
    scaled = (t / top * 127.5 + 127.5) if signed else (t / top * 255)
    return _b64(scaled.round().clamp(0, 255)), "signed" if signed else "positive", top


def shrink(maps: torch.Tensor) -> torch.Tensor:
    """(K, H, W) averaged down so that neither side exceeds :data:`LARGEST_SIDE`."""
    h, w = maps.shape[-2:]
    if max(h, w) <= LARGEST_SIDE:
        return maps
    factor = -(-max(h, w) // LARGEST_SIDE)  # ceil
    return F.avg_pool2d(maps[None], factor, ceil_mode=True)[0]


def most_active(maps: torch.Tensor, most: int = MOST_MAPS) -> list[int]:
    """Every channel of a layer with at most ``most``; else the ``most`` of highest mean activation,
    most active first."""
    if maps.shape[0] <= most:
        return list(range(maps.shape[0]))
    return maps.mean((1, 2)).topk(most).indices.tolist()


def maps_json(maps: torch.Tensor, channels: list[int], peak: float | None = None,
              signed: bool | None = None) -> dict:
    """Some channels of a (C, H, W) output, as the page draws them (``peak``, ``signed``: see
    :func:`to_bytes`)."""
    shown = shrink(maps[channels])
    data, scale, top = to_bytes(shown, peak, signed)
    return {"kind": "maps", "channels": channels, "count": len(channels), "height": shown.shape[1],
            "width": shown.shape[2], "data": data, "scale": scale, "peak": top}


def bars_json(values: torch.Tensor) -> dict:
    """A vector (a fully connected layer's output, or 1x1 maps) as bars."""
    flat = values.flatten()
    return {"kind": "bars", "values": [round(v, 4) for v in flat[:MOST_BARS].tolist()], "total": flat.numel()}


def layer_json(layer: Layer) -> dict:
    out = layer.output
    spatial = out.dim() == 3 and out.shape[1] * out.shape[2] > 1
    shown = maps_json(out, most_active(out)) if spatial else bars_json(out)
    return {"name": layer.name, "types": layer.types, "shape": list(out.shape), **shown}


def image_json(read: torch.Tensor) -> dict:
    """What the network is given, before normalisation: uint8 (C, H, W), as height x width x C bytes."""
    return {"height": read.shape[1], "width": read.shape[2], "channels": read.shape[0],
            "data": _b64(read.permute(1, 2, 0))}


def rbf_json(model: nn.Module, logits: torch.Tensor, layers: list[Layer]) -> dict | None:
    """lenet5_1998's output layer: the squared distance from F6's 84 outputs to each class's fixed
    7x12 prototype (the model's logits are minus these), with the prototypes and F6 as 12x7 pictures."""
    rbf = next((m for m in model.modules() if isinstance(m, EuclideanRBF)), None)
    if rbf is None or len(layers) < 2:
        return None
    f6 = layers[-2].output.flatten()  # the layer before the RBF: F6 after its squashing function
    return {"distances": [round(v, 3) for v in (-logits).tolist()], "height": 12, "width": 7,
            "prototypes": [[int(v) for v in row] for row in rbf.centers[:10].tolist()],
            "f6": [round(v, 4) for v in f6.tolist()]}


def network_input(predictor, image) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the network is given to look at: uint8 (1, C, H, W) after the dataset's reading, the
    normalised input at the model's size): as :meth:`~classicnets.predict.Predictor.preprocess`
    makes it, keeping the first half for the page."""
    read = predictor.read(image)  # the dataset's reading: a drawn digit made like MNIST's
    return read, predictor.normalize(fit_to_size(read, predictor.input_size).to(predictor.device))


def look(predictor, image) -> dict:
    """Everything the draw view shows of ``image`` (a PIL image) in ``predictor``'s network: what the
    network sees, every layer, the class probabilities, and the RBF distances where there are some.
    The caller holds the predictor's lock."""
    read, x = network_input(predictor, image)
    logits, layers = run_recorded(predictor.model, x)
    probabilities = logits.softmax(0)
    top = probabilities.topk(min(10, probabilities.numel()))
    classes = predictor.classes
    return {
        "top": [{"class": classes[i], "probability": round(p, 6)}
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)],
        "input": image_json(read[0]),
        "layers": [layer_json(layer) for layer in layers],
        "rbf": rbf_json(predictor.model, logits, layers),
    }
