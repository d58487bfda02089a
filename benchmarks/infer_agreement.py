"""Top-1 agreement of the bf16 fast path with fp32 (``bench_infer.py``): on smooth random images,
and on a model briefly trained on real digits with classicnets' own training step."""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from classicnets.data import load_dataset
from classicnets.fast import optimize_for_inference
from classicnets.models import create_model, model_card
from classicnets.train import TrainConfig, make_optimizer, train_step
from classicnets.train.schedules import make_schedule


def smooth_images(n: int, size: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Standardised low-frequency noise: a crude stand-in for natural images."""
    c, h, w = size
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, c, max(2, h // 16), max(2, w // 16), generator=gen)
    x = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True)


def run_in_chunks(fn, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([torch.as_tensor(fn(chunk)).float() for chunk in x.split(batch)])


def compare_logits(ref: torch.Tensor, other: torch.Tensor) -> dict:
    """Top-1 agreement of ``other`` with ``ref`` and what explains the disagreements."""
    top2 = ref.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    diff = (other - ref).abs().amax(1)
    return {
        "inputs": len(ref),
        "top1_agreement": float((other.argmax(1) == ref.argmax(1)).double().mean()),
        "max_abs_diff": float(diff.max()),
        "logit_std": float(ref.std()),
        "median_margin": float(margin.median()),
        # an input whose top-1 lead is under twice its own bf16 error could flip either way
        "near_tie_fraction": float((margin < 2 * diff).double().mean()),
        "median_top1_probability": float(ref.softmax(1).amax(1).median()),
    }


def digits_as(images: torch.Tensor, channels: int, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) digits as normalised (N, channels, 32, 32) float inputs: zero-padded
    by 2 pixels as LeNet-5's paper does, the gray channel repeated."""
    x = F.pad((images.float() / 255 - mean) / std, (2, 2, 2, 2), value=-mean / std)
    return x.expand(-1, channels, -1, -1).contiguous()


def probe(name: str, steps: int, n_test: int, batch: int, backend: str, seed: int, quiet: bool) -> dict:
    """bf16 against fp32 top-1 agreement on ``name`` trained for ``steps`` steps on real digits."""
    start = time.perf_counter()
    train, test = (load_dataset("digits", split, progress=False) for split in ("train", "test"))
    mean, std = float(train.mean[0]), float(train.std[0])
    channels = model_card(name).input_size[0]
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, in_channels=channels)
    model.to(memory_format=torch.channels_last).train()
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train.labels), generator=gen)
    # classicnets' step and optimiser (fused AdamW) with its one-cycle schedule, the lr set every step.
    train_batch = 64
    cfg = TrainConfig(model=name, dataset="digits", batch_size=train_batch, optimizer="adamw", lr=3e-3,
                      weight_decay=0.01, schedule="onecycle").resolved()
    opt = make_optimizer(cfg, model)
    schedule = make_schedule(cfg.schedule, cfg.lr, steps)
    for step in range(steps):
        idx = order[(step * train_batch + torch.arange(train_batch)) % len(order)]
        x = digits_as(train.images[idx], channels, mean, std).contiguous(memory_format=torch.channels_last)
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        _, loss = train_step(model, opt, x, train.labels[idx].long())
    model.eval().requires_grad_(False)
    train_seconds = time.perf_counter() - start

    test_x, test_y = digits_as(test.images[:n_test], channels, mean, std), test.labels[:n_test].long()
    example = test_x[:batch]
    fast32 = optimize_for_inference(model, example, "fp32", backend=backend)
    fast16 = optimize_for_inference(model, example, "bf16", backend=backend)
    ref, got = run_in_chunks(fast32, test_x, batch), run_in_chunks(fast16, test_x, batch)
    result = compare_logits(ref, got)
    result.update({
        "model": name, "input_size": [channels, 32, 32], "train_steps": steps, "train_batch": train_batch,
        "train_images": steps * train_batch, "test_digits": len(test_x), "final_train_loss": float(loss.detach()),
        "accuracy_fp32": float((ref.argmax(1) == test_y).double().mean()),
        "accuracy_bf16": float((got.argmax(1) == test_y).double().mean()),
        "fast_fp32_max_diff_vs_eager": fast32.max_diff, "backends": [fast32.backend, fast16.backend],
        "train_seconds": train_seconds, "seconds": time.perf_counter() - start,
    })
    if not quiet:
        print(f"probe {name}: agreement {result['top1_agreement']:.4f}, accuracy fp32 {result['accuracy_fp32']:.3f} "
              f"bf16 {result['accuracy_bf16']:.3f}, {result['seconds']:.0f} s", file=sys.stderr)
    return result
