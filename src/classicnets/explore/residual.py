"""Inside the residual blocks: x, F(x) and F(x) + x of every block, for a ResNet and its plain twin.

He et al. 2015 (section 3.1) argue that if a block's best function is close to the identity, it is
easier to push the residual F(x) towards zero than to fit the identity with a stack of non-linear
layers. A trained ResNet shows it: ||F(x)|| is small beside ||x|| in most blocks (the paper's
Fig. 7 shows the same through the layers' response strengths). The plain net has no shortcut, so
each block must carry the whole signal through F alone.

The values are read with hooks on :mod:`classicnets.models.resnet`'s blocks as they run; the
model is not changed (its ``state_dict`` keys stay torchvision's).
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.resnet import PadShortcut
from .maps import BLOCKS, forward_hooked, maps_json, most_active, network_input

MAPS_PER_BLOCK = 4  # channels shown of each of x, F(x) and F(x) + x


def _last_bn(block: nn.Module) -> nn.Module:
    """The batch norm that ends the residual branch: its output is F(x) (Fig. 2 of the paper)."""
    return block.bn3 if hasattr(block, "bn3") else block.bn2


def _shortcut_kind(block: nn.Module) -> str | None:
    if not block.residual:
        return None
    if block.downsample is None:
        return "identity"
    return "padded" if isinstance(block.downsample, PadShortcut) else "projection"


def run_blocks(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """``model(x)`` with, for each block in order: its name, its input x, F(x), and what the shortcut
    adds (x itself, x strided and zero-padded, or a projection; None in a plain net)."""
    seen: dict[str, dict] = {}
    handles = []

    def keep(name: str, key: str, from_input: bool = False):
        def hook(module, args, output=None):
            value = args[0] if from_input else output
            seen.setdefault(name, {"name": name})[key] = value[0].detach().float().clone()

        return hook

    for name, block in model.named_modules():
        if not isinstance(block, BLOCKS):
            continue
        handles.append(block.register_forward_pre_hook(keep(name, "x", from_input=True)))
        handles.append(_last_bn(block).register_forward_hook(keep(name, "f")))
        if block.downsample is not None:
            handles.append(block.downsample.register_forward_hook(keep(name, "shortcut")))
    logits = forward_hooked(model, x, handles)
    blocks = list(seen.values())
    residual = {name: (m.residual, _shortcut_kind(m)) for name, m in model.named_modules() if isinstance(m, BLOCKS)}
    for b in blocks:
        b["residual"], b["shortcut_kind"] = residual[b["name"]]
        if b["residual"] and "shortcut" not in b:
            b["shortcut"] = b["x"]  # the identity
    return logits, blocks


def block_json(b: dict) -> dict:
    """One block for the page: the three pictures on one shared, signed scale (so a small F(x) looks
    small beside x) and the ratio ||F(x)|| / ||x||, x being the block's input."""
    f = b["f"]
    if b["residual"]:
        carried, out = b["shortcut"], b["f"] + b["shortcut"]
        channels = most_active(out.abs(), MAPS_PER_BLOCK)
        x_channels = channels
    else:  # a plain block: no "+ x"; its output is relu(F(x)), and x may have other channels
        carried, out = b["x"], f.relu()
        channels = most_active(out.abs(), MAPS_PER_BLOCK)
        x_channels = most_active(carried.abs(), MAPS_PER_BLOCK)
    peak = max(float(carried[x_channels].abs().max()), float(f[channels].abs().max()),
               float(out[channels].abs().max()), 1e-12)
    ratio = float(f.norm() / b["x"].norm().clamp(min=1e-12))
    return {"name": b["name"], "residual": b["residual"], "shortcut": b["shortcut_kind"],
            "in_shape": list(b["x"].shape), "out_shape": list(f.shape), "ratio": round(ratio, 4),
            "x": maps_json(carried, x_channels, peak, signed=True), "f": maps_json(f, channels, peak, signed=True),
            "out": maps_json(out, channels, peak, signed=True)}


def through_blocks(predictor, image) -> dict:
    """``image`` through ``predictor``'s network, block by block, with its top class. The caller
    holds the predictor's lock."""
    _, x = network_input(predictor, image)
    logits, blocks = run_blocks(predictor.model, x)
    p = logits.softmax(0)
    best = int(p.argmax())
    return {"top": {"class": predictor.classes[best], "probability": round(float(p[best]), 6)},
            "blocks": [block_json(b) for b in blocks]}
