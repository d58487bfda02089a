"""One training step, and the optimiser it updates. The trainer's loop and every benchmark of
training speed call :func:`train_step`, so what the benchmarks time is what ``classicnets train``
runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..device import autocast
from ..errors import ClassicNetsError


def make_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters, with the settings of a resolved ``TrainConfig``
    (``optimizer``, ``lr``, ``momentum``, ``nesterov``, ``weight_decay``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    # One fused kernel for the whole update: 1.03-1.11x faster LeNet-5 steps than foreach on CPU
    # (benchmarks/results/avx512-bf16/lenet_step_ideas.md); foreach elsewhere (MPS lacks fused SGD).
    on_cpu_or_cuda = all(p.device.type in ("cpu", "cuda") for p in params)
    fused = {"fused": True} if on_cpu_or_cuda else {"foreach": True}
    if cfg.optimizer == "sgd":
        nesterov = bool(cfg.nesterov) and cfg.momentum > 0
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov,
                               weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    raise ClassicNetsError(f"--optimizer {cfg.optimizer!r}: expected sgd or adamw")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
               label_smoothing: float = 0.0, amp_dtype: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None, grad_clip: float | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (under autocast to ``amp_dtype``), cross-entropy, backward, clip, update.

    The loss is computed in float32 whatever the autocast dtype. With fp16 a ``scaler`` scales the
    loss before backward and unscales the gradients before they are clipped, so ``grad_clip``
    bounds the true gradient norm. Returns the logits and the loss, neither read: reading a value
    would make the CPU wait for the device every step. The caller sets the learning rate.
    """
    with autocast(x.device, amp_dtype):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return logits, loss
