"""How close to the machine's matmul peak can a LeNet-5 training step come? Its layers' own ceiling.

The suite reports a LeNet-5 training step's FLOP/s (3 x 2 x the forward multiply-adds per image) as
a fraction of the fp32 ``torch.mm`` peak, and the performance goals ask for 50%. This script asks what the
step's convolution and linear layers allow: it times each layer's forward and backward kernels
alone, at the shapes a training step gives them (channels-last, as ``classicnets.train`` runs
LeNet-5), and adds them up. Everything else in a step (pooling, activations, the loss, the
optimiser, autograd) only adds time, so the step's FLOPs over that sum bound the fraction of peak
the step can reach with these kernels.

Each layer is also timed as the plain matrix product its arithmetic amounts to (the im2col form:
output positions x (input channels x kernel taps) times (input channels x kernel taps) x output
channels; its backward as the two products for the input and weight gradients): the shapes of
LeNet-5's products, not the convolution code, are what keep them far from the peak (6 or 16
output channels and 25 or 150 taps give the vector units little to do per value loaded).

Everything runs in one process on ``--threads`` threads (2 by default), in interleaved rounds
(the whole step, each kernel and a 2048 x 2048 product for the peak timed once per round, the order
rotating), with the medians over rounds reported. Random inputs: the data path is out of the
picture. ``--quick`` is the tiny run the tests use.

Run: ``.venv/bin/python benchmarks/bench_lenet_roofline.py`` (about a minute on 2 cores).
Results: ``benchmarks/results/<machine>/lenet_roofline.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from common import isa, pool_as_run, write_results  # benchmarks/common.py (scripts run from this folder)
from torch import nn

from classicnets import create_model, native
from classicnets.device import autocast_dtype
from classicnets.memory import keep_freed_memory
from classicnets.models.conv import (
    Conv2d,
    gray_forward,
    gray_pool_relu_forward,
    gray_weight_grads,
    native_input_backward,
    pool_relu_input_grad,
    pooled_weight_grads,
)
from classicnets.models.fused import conv_pool_relu
from classicnets.models.max_pool import MaxPool2d, pool_forward
from classicnets.report import machine_info
from classicnets.train import TrainConfig, make_optimizer, train_step

CL = torch.channels_last


def layer_inputs(model: nn.Module, batch: int) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, layer, input shape) of every convolution and linear layer, in forward order."""
    found = []
    hooks = [m.register_forward_hook(lambda m, inp, out, name=name: found.append((name, m, tuple(inp[0].shape))))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(batch, 1, 32, 32).contiguous(memory_format=CL))
    for h in hooks:
        h.remove()
    return found


def layer_kernels(layer: nn.Module, in_shape: tuple[int, ...], needs_input_grad: bool) -> dict:
    """The layer's forward and backward as a training step runs them, and the same arithmetic as
    plain matrix products; with each one's multiply-adds."""
    w = layer.weight.detach().clone()
    b = layer.bias.detach().clone()
    if isinstance(layer, nn.Conv2d):
        x = torch.randn(in_shape).contiguous(memory_format=CL)
        out = F.conv2d(x, w, b, layer.stride, layer.padding)
        grad = torch.randn(out.shape).contiguous(memory_format=CL)
        n, c_out, h, wd = out.shape
        positions, taps = n * h * wd, w[0].numel()  # output positions; input channels x kernel taps
        mask = [needs_input_grad, True, True]
        pooled_grad = None  # where the step's backward starts from the gradient of the block's pooled output

        def forward():
            return F.conv2d(x, w, b, layer.stride, layer.padding)

        def backward():  # (input gradient or None, weight gradient, bias gradient)
            return torch.ops.aten.convolution_backward(grad, x, w, [c_out], list(layer.stride), list(layer.padding),
                                                list(layer.dilation), False, [0, 0], layer.groups, mask)
        shape = f"{in_shape[1]}x{in_shape[2]}x{in_shape[3]} -> {c_out}x{h}x{wd}"
        # where the step runs classicnets.native's kernels for this layer, time those
        path = layer.native_path(x.detach().requires_grad_(needs_input_grad)) if isinstance(layer, Conv2d) else None
        if path == "gray_conv":
            def forward():
                return gray_forward(x, w, b)

            def backward():
                return None, *gray_weight_grads(x, grad, w.shape, True)
            shape += f" (native kernels; the {FUSED_NOTE.format(pool='pool1')})" if FUSED else " (native kernel)"
            if FUSED:  # the backward from the pooled gradient, as the fused block runs it
                pooled = gray_pool_relu_forward(x, w, b)
                pooled_grad = torch.randn(pooled[0].shape).contiguous(memory_format=CL)

                def backward():
                    return None, *gray_weight_grads(x, pooled_grad, w.shape, True, pooled=pooled)
        elif path == "input_grad":
            def backward():  # oneDNN's weight and bias gradients, the native input gradient
                return native_input_backward(grad, x, w, has_bias=True)
            shape += " (native input gradient)"
            if FUSED:
                out2, winner2 = pool_forward(out.contiguous(memory_format=CL), relu=True)
                pooled_grad = torch.randn(out2.shape).contiguous(memory_format=CL)

                def backward():
                    return (pool_relu_input_grad(pooled_grad, out2, winner2, w, tuple(out.shape[2:])),
                            *pooled_weight_grads(x, pooled_grad, out2, winner2, w.shape, True))
                shape = shape.replace(" (native input gradient)",
                                      f" (native {FUSED_NOTE.format(pool='pool2')}; oneDNN's forward)")
    else:
        x = torch.randn(in_shape)
        grad, pooled_grad = torch.randn(in_shape[0], layer.out_features), None
        positions, taps, c_out = in_shape[0], layer.in_features, layer.out_features

        def forward():
            return torch.addmm(b, x, w.t())

        def backward():
            return (grad @ w if needs_input_grad else None), grad.t() @ x, grad.sum(0)
        shape = f"{layer.in_features} -> {layer.out_features}"
    # The im2col form: (positions, taps) @ (taps, c_out); backward (positions, c_out) @ (c_out, taps)
    # for the input gradient (before it is folded back onto the image) and (c_out, positions) @
    # (positions, taps) for the weight gradient, with the transposed operand a view, as in autograd.
    cols, weight_t = torch.randn(positions, taps), torch.randn(taps, c_out)
    grads_t = torch.randn(c_out, positions)

    def mm_forward():
        cols @ weight_t

    def mm_backward():
        if needs_input_grad:
            grads_t.t() @ weight_t.t()
        grads_t @ cols
    macs = positions * taps * c_out
    return {"shape": shape, "macs": macs, "backward_macs": macs * (2 if needs_input_grad else 1),
            "needs_input_grad": needs_input_grad, "input": x, "grad": grad, "pooled_grad": pooled_grad,
            "kernels": {"forward": forward, "backward": backward, "mm_forward": mm_forward,
                        "mm_backward": mm_backward}}


class StridedMaxPool2x2(torch.autograd.Function):
    """2x2 max pooling from elementwise maxima of the four strided views of each window, with a
    hand-written backward that sends each gradient to the first maximum in scan order, as
    ``max_pool2d`` does: the same outputs and gradients, ties included."""

    @staticmethod
    def forward(ctx, x):
        corners = [x[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]
        out = torch.maximum(torch.maximum(corners[0], corners[1]), torch.maximum(corners[2], corners[3]))
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, out = ctx.saved_tensors
        grad_input = torch.empty_like(x)
        taken = torch.zeros_like(out, dtype=torch.bool)
        for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
            hit = (x[..., i::2, j::2] == out) & ~taken
            grad_input[..., i::2, j::2] = torch.where(hit, grad, 0.0)
            taken |= hit
        return grad_input


def pool_relu(x):
    """The first LeNet-5 block after its convolution with PyTorch's kernel: max pool, then ReLU."""
    return F.relu(F.max_pool2d(x, 2))


def native_pool_relu(x):
    """The same block as ``lenet5`` runs it: its MaxPool2d (``classicnets.native``'s kernel on a
    channels-last float32 tensor, where the kernels could be built), then ReLU."""
    return F.relu(_NATIVE_POOL(x))


_NATIVE_POOL = MaxPool2d(2)
# The pooling the training step runs: inside conv1's fused kernel (models/fused.py), else the
# native kernel, else PyTorch's.
NATIVE_POOL_ROW = "native 2x2 max pool, then ReLU, channels-last"
FUSED = all(native.library(kernel) is not None for kernel in native.KERNELS)
# Each block's backward starts from the gradient of its pooled output: the pool's backward is folded
# into the convolution's, which sums the pool windows' winners alone (a quarter of the dense
# backward's multiply-adds; the table credits it with the dense count, as the suite does).
FUSED_NOTE = "backward from {pool}'s gradient, as the fused block runs it"
if FUSED:
    AS_RUN = "inside conv1's fused native kernel (what the step runs): the fused block less conv1's kernels"
elif native.library("pool") is not None:
    AS_RUN = NATIVE_POOL_ROW + " (what the step runs)"
else:
    AS_RUN = "max_pool2d, channels-last (what the step runs: the native kernel is unavailable)"


def fused_block_less_conv(batch: int) -> tuple[Callable, Callable]:
    """Forward and backward of lenet5's first block fused (conv1, pool, ReLU in one kernel), and
    conv1's kernels as the step runs them (its forward alone, its weight gradient from the pooled
    gradient): their difference is what the pool and ReLU cost inside the fused kernel (the
    pool's backward is folded into conv1's), with the block's autograd node."""
    f = create_model("lenet5").to(memory_format=CL).features
    w, b = f.conv1.weight.detach(), f.conv1.bias.detach()
    x = torch.randn(batch, 1, 32, 32).contiguous(memory_format=CL)
    grad = torch.randn(batch, 6, 14, 14).contiguous(memory_format=CL)
    pooled = gray_pool_relu_forward(x, w, b)

    def fused_block():
        conv_pool_relu(x, f.conv1, f.pool1, f.act1).backward(grad)
        f.conv1.zero_grad(set_to_none=True)

    def conv_alone():
        gray_forward(x, w, b)
        gray_weight_grads(x, grad, w.shape, True, pooled=pooled)
    return fused_block, conv_alone


def pooling_alternatives(in_shape: tuple[int, ...], compile_: bool) -> dict:
    """Forward and backward of the first pool + ReLU, as the step runs it and as it could be run."""
    grad_shape = (in_shape[0], in_shape[1], in_shape[2] // 2, in_shape[3] // 2)

    def block(fn, memory_format):
        x = torch.randn(in_shape).contiguous(memory_format=memory_format).requires_grad_()
        grad = torch.randn(grad_shape).contiguous(memory_format=memory_format)

        def run():
            fn(x).backward(grad)
            x.grad = None
        return run
    out = {
        AS_RUN if AS_RUN.startswith(NATIVE_POOL_ROW) else NATIVE_POOL_ROW: block(native_pool_relu, CL),
        "max_pool2d, channels-last (PyTorch's kernel)": block(pool_relu, CL),
        "max_pool2d, default layout": block(pool_relu, torch.contiguous_format),
        "strided maxima, hand-written backward, channels-last": block(
            lambda x: F.relu(StridedMaxPool2x2.apply(x)), CL),
    }
    if compile_:
        out["torch.compile of pool + ReLU, channels-last"] = block(torch.compile(pool_relu, dynamic=False), CL)
    return out


def training_step(model: nn.Module, batch: int):
    """``classicnets.train.train_step`` on LeNet-5 as ``classicnets train`` runs it on Fashion-MNIST
    (``make_optimizer``: fused SGD with Nesterov momentum; the recipe's label smoothing; fp32), on
    random data. The loop's bookkeeping (the lr schedule, running sums) is left out."""
    cfg = TrainConfig(model="lenet5", dataset="fashion-mnist").resolved()
    if autocast_dtype(cfg.precision, torch.device("cpu"), cfg.model) is not None:
        raise SystemExit(f"classicnets trains LeNet-5 in {cfg.precision} precision on this CPU, not fp32: "
                         "this roofline times fp32 kernels against the fp32 peak")
    x = torch.randn(batch, 1, 32, 32).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (batch,))
    opt = make_optimizer(cfg, model)

    def step():
        train_step(model, opt, x, y, label_smoothing=cfg.label_smoothing)
    return step


def time_rounds(fns: dict, rounds: int, target_s: float) -> dict[str, list[float]]:
    """Seconds per call of each function: one timing of each per round (as many calls as take about
    ``target_s``), the order rotating every round."""
    reps = {}
    for name, fn in fns.items():
        fn()
        fn()
        t0 = time.perf_counter()
        fn()
        reps[name] = max(1, round(target_s / max(time.perf_counter() - t0, 1e-6)))
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, n = fns[name], reps[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t0) / n)
    return times


def measure(batch: int, args) -> dict:
    torch.manual_seed(0)
    model = create_model("lenet5").to(memory_format=CL)
    layers = layer_inputs(model, batch)
    fns = {"step": training_step(model, batch)}
    a, b = torch.randn(args.peak_n, args.peak_n), torch.randn(args.peak_n, args.peak_n)
    fns["peak"] = lambda: a @ b
    info = {}
    for i, (name, layer, shape) in enumerate(layers):
        # The first layer's input is the image, which needs no gradient.
        info[name] = layer_kernels(layer, shape, needs_input_grad=i > 0)
        for kind, fn in info[name]["kernels"].items():
            fns[f"{name}/{kind}"] = fn
    pool_shape = (batch, 6, 28, 28)  # conv1's output
    alternatives = pooling_alternatives(pool_shape, compile_=not args.no_compile)
    for name, fn in alternatives.items():
        fns[f"pool/{name}"] = fn
    if FUSED:
        fns["pool/fused block"], fns["pool/conv1 alone"] = fused_block_less_conv(batch)
    # The layer kernels record no graph (their tensors are detached); the step and the pooling
    # alternatives do, as training does.
    times = time_rounds(fns, args.rounds, args.target_s)
    med = {k: statistics.median(v) for k, v in times.items()}

    peak = 2 * args.peak_n**3 / med["peak"] / 1e9
    forward_macs = sum(i["macs"] for i in info.values())
    step_flops = 3 * 2 * forward_macs  # the suite's definition: forward + twice as much backward
    rows, kernel_s, mm_s, done_flops = [], 0.0, 0.0, 0
    for name, i in info.items():
        f, bw = med[f"{name}/forward"], med[f"{name}/backward"]
        mf, mb = med[f"{name}/mm_forward"], med[f"{name}/mm_backward"]
        kernel_s += f + bw
        mm_s += mf + mb
        done_flops += 2 * (i["macs"] + i["backward_macs"])
        rows.append({"layer": name, "shape": i["shape"], "macs_per_image": i["macs"] // batch,
                     "needs_input_grad": i["needs_input_grad"],
                     "forward_ms": 1e3 * f, "backward_ms": 1e3 * bw,
                     "forward_gflops": 2 * i["macs"] / f / 1e9, "backward_gflops": 2 * i["backward_macs"] / bw / 1e9,
                     "mm_forward_gflops": 2 * i["macs"] / mf / 1e9,
                     "mm_backward_gflops": 2 * i["backward_macs"] / mb / 1e9})
    step_s = med["step"]
    pool_ms = {name: 1e3 * med[f"pool/{name}"] for name in alternatives}
    if FUSED:
        pool_ms = {AS_RUN: 1e3 * (med["pool/fused block"] - med["pool/conv1 alone"]), **pool_ms}
    return {
        "batch": batch,
        "peak_gflops": peak,
        "forward_macs_per_image": forward_macs // batch,
        "step": {"ms": 1e3 * step_s, "images_per_second": batch / step_s, "gflops": step_flops / step_s / 1e9,
                 "fraction_of_peak": step_flops / step_s / 1e9 / peak},
        "layers": rows,
        "kernels": {"ms": 1e3 * kernel_s, "share_of_step": kernel_s / step_s,
                    "images_per_second": batch / kernel_s,
                    "computed_gflops": done_flops / kernel_s / 1e9,
                    "ceiling_fraction_of_peak": step_flops / kernel_s / 1e9 / peak},
        "matmul_form": {"ms": 1e3 * mm_s, "ceiling_fraction_of_peak": step_flops / mm_s / 1e9 / peak},
        "pool1": {"input_shape": list(pool_shape), "as_run": AS_RUN, "alternatives_ms": pool_ms},
        "rounds": args.rounds,
        "all_seconds": {k: v for k, v in times.items() if k in ("step", "peak")},
    }


def to_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# LeNet-5 training step: the ceiling its own layers set",
        "",
        f"`benchmarks/bench_lenet_roofline.py`. Machine: {m['cpu']}{isa(m)}, torch {m['torch']}, "
        f"{results['threads']} threads. Medians of interleaved rounds, one process, random inputs, fp32, "
        "channels-last (as `classicnets.train` runs LeNet-5). Step FLOPs as in the suite: 3 x 2 x the "
        "forward multiply-adds.",
        "",
    ]
    for r in results["runs"]:
        s, k, mm = r["step"], r["kernels"], r["matmul_form"]
        lines += [
            f"## Batch {r['batch']}",
            "",
            f"Matmul peak (fp32 {results['peak_n']}x{results['peak_n']} `torch.mm`): {r['peak_gflops']:.0f} GFLOP/s. "
            f"Whole training step: {s['ms']:.2f} ms, {s['images_per_second']:,.0f} img/s, "
            f"{s['gflops']:.1f} GFLOP/s = **{100 * s['fraction_of_peak']:.0f}% of peak**.",
            "",
            "| layer | shape (C x H x W) | forward ms | forward GFLOP/s | backward ms | backward GFLOP/s "
            "| as plain matmuls: forward GFLOP/s | backward GFLOP/s |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in r["layers"]:
            note = "" if row["needs_input_grad"] else " (no input gradient)"
            lines.append(f"| {row['layer']} | {row['shape']}{note} | {row['forward_ms']:.3f} | "
                         f"{row['forward_gflops']:.0f} | {row['backward_ms']:.3f} | {row['backward_gflops']:.0f} | "
                         f"{row['mm_forward_gflops']:.0f} | {row['mm_backward_gflops']:.0f} |")
        kernels = sorted(((row[f"{kind}_ms"], row, kind) for row in r["layers"] for kind in ("forward", "backward")),
                         key=lambda t: -t[0])
        top = "; ".join(f"{row['layer']} {kind} {ms:.2f} ms at {row[f'{kind}_gflops']:.0f} GFLOP/s"
                        for ms, row, kind in kernels[:3])
        better = mm["ceiling_fraction_of_peak"] > k["ceiling_fraction_of_peak"]
        fused_caveat = (" (their backward is folded into conv1's, which reads the pooled gradient)"
                        if pool_as_run(r["pool1"])[0].startswith("inside conv1's fused") else "")
        lines += [
            "",
            f"- The convolution and linear kernels alone: {k['ms']:.2f} ms, {100 * k['share_of_step']:.0f}% of the "
            f"step ({k['computed_gflops']:.0f} GFLOP/s on the arithmetic they do). Were pooling, activations, "
            f"loss, optimiser and autograd free, the step would run at {k['images_per_second']:,.0f} img/s: "
            f"**at most {100 * k['ceiling_fraction_of_peak']:.0f}% of peak** with these kernels.",
            f"- The same arithmetic as plain matrix products: {mm['ms']:.2f} ms, at most "
            f"{100 * mm['ceiling_fraction_of_peak']:.0f}% of peak"
            + (f": {k['ms'] - mm['ms']:.2f} ms less than the convolution kernels, before the cost of gathering "
               "the columns (im2col), which this leaves out." if better else
               ": no faster than the convolution kernels, so it is the products' shapes (few output "
               "channels, few taps) that keep them from the peak, not the convolution code."),
            f"- Most of the kernel time: {top}.",
            "",
            f"The step less those kernels: {s['ms'] - k['ms']:.2f} ms. Of that, the first pool and its ReLU (on "
            f"conv1's {'x'.join(map(str, r['pool1']['input_shape']))} output), forward and backward, take "
            f"{pool_as_run(r['pool1'])[1]:.2f} ms as the step runs them{fused_caveat}; the other ways "
            "to run them, side by side:",
            "",
            "| how | ms | share of the step |",
            "|---|---:|---:|",
            *[f"| {name} | {ms:.3f} | {100 * ms / s['ms']:.0f}% |"
              for name, ms in r["pool1"]["alternatives_ms"].items()],
            "",
        ]
    lines += [
        "The suite's FLOP count charges every layer a backward twice its forward; the first convolution "
        "computes no input gradient (the image needs none), so the arithmetic a step does is a little less "
        "than the count it is credited with, and the ceilings above use the credited count, as the suite does. "
        "A convolution whose backward starts from its block's pooled gradient (fused with the pool and ReLU) "
        "sums only each pool window's winner: a quarter of its weight gradient's multiply-adds, credited in full.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--target-s", type=float, default=0.05, help="seconds per timing")
    ap.add_argument("--peak-n", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for lenet_roofline.{json,md} (default: benchmarks/results/<this machine>)")
    ap.add_argument("--no-compile", action="store_true",
                    help="leave out the torch.compile pooling (it needs a C++ compiler)")
    ap.add_argument("--quick", action="store_true", help="tiny run to check that the benchmark works")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.batch, args.rounds, args.target_s, args.peak_n, args.threads = [8], 2, 0.002, 128, 1
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as classicnets.train does: freed activations are reused, not faulted in again
    results = {"machine": machine_info(), "threads": torch.get_num_threads(), "peak_n": args.peak_n,
               "runs": [measure(batch, args) for batch in args.batch]}
    write_results(args.out, "lenet_roofline", results, to_markdown(results), args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
