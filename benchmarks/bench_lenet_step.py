"""What makes a LeNet-5 training step faster on a small CPU? One idea at a time, side by side.

Every variant steps with ``classicnets.train.train_step``, the step ``classicnets train`` runs,
inside the loop's bookkeeping (the lr set every step, running loss/accuracy sums, their
finiteness read every 25 steps: ``common.timed_epoch``), on the same pre-made batches of real
digits from the library's loader (so the data path is out of the picture). An idea changes only
what the step is given or the process it runs in: the model (pooling, layer order, convolution
code, ``torch.compile``), its memory format and the batches', the optimiser (``make_optimizer``'s
fused SGD, or the same switched to foreach, or zeroing its gradients in place), ``amp_dtype``,
a ``loss.item()`` read after every step, mkldnn, threads, deterministic mode's NaN fill.

The reference is the model ``create_model("lenet5")`` builds, with its blocks in the textbook
conv - ReLU - pool order, stepped as a plain loop would (foreach SGD, default memory format, the
loss read every step, deterministic mode with its NaN fill of new tensors, as
``classicnets.train`` ran before). Variants run interleaved, the order rotating every round, and
we report the median images/s over the rounds.

Run: ``.venv/bin/python benchmarks/bench_lenet_step.py`` (``--compile`` adds torch.compile modes,
which take a minute each to compile). Results: ``benchmarks/results/<machine>/lenet_step_ideas.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from common import git_commit, isa, timed_epoch, write_results  # benchmarks/*.py (scripts run from this folder)
from goals import ALL_KEPT, NATIVE_ALL, NATIVE_CONV, NATIVE_FUSED, NATIVE_POOL
from torch import nn

from classicnets import native
from classicnets.data import load_dataset
from classicnets.data.pipeline import make_loader, parse_augment
from classicnets.models import create_model
from classicnets.report import machine_info
from classicnets.train import TrainConfig, make_optimizer
from classicnets.train.schedules import make_schedule

# --------------------------------------------------------------------------------------------
# Model variants
# --------------------------------------------------------------------------------------------


class AmaxPool2x2(nn.Module):
    """2x2 max pool as reshape + amax. Same forward; NOT the same backward: amax splits the
    gradient evenly between tied maxima, max_pool2d gives it all to the first one."""

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, c, h // 2, 2, w // 2, 2).amax((3, 5))


class UnfoldConv2d(nn.Module):
    """A stride-1, unpadded conv as unfold (im2col) + one matmul, same weights."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        w = self.conv.weight
        k = w.shape[-1]
        n, _, h, wd = x.shape
        cols = F.unfold(x, k)  # (n, cin*k*k, L)
        out = (w.view(w.shape[0], -1) @ cols).view(n, w.shape[0], h - k + 1, wd - k + 1)
        return out + self.conv.bias[:, None, None]


class _InputGradInDefaultLayout(torch.autograd.Function):
    """A convolution whose backward computes the input gradient in the default (NCHW) layout and
    the weight and bias gradients in the tensors' own (channels-last): measured alone, oneDNN's
    channels-last input gradient for conv2's shapes took twice as long as the NCHW one."""

    @staticmethod
    def forward(ctx, x, weight, bias, conv):
        ctx.save_for_backward(x, weight)
        ctx.conv = conv
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        c = ctx.conv
        settings = (list(c.stride), list(c.padding), list(c.dilation), False, [0, 0], c.groups)
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.convolution_backward(
                grad.contiguous(), x.contiguous(), weight.contiguous(), [weight.shape[0]], *settings,
                [True, False, False])[0].contiguous(memory_format=torch.channels_last)
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]], *settings, [False, True, True])
        return grad_input, grad_weight, grad_bias, None


class InputGradInDefaultLayout(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return _InputGradInDefaultLayout.apply(x, self.conv.weight, self.conv.bias, self.conv)


class FourPhaseConvPool(nn.Module):
    """conv1 (5x5, stride 1) and the 2x2 max pool after it as four stride-2 convolutions, one per
    position in the pooling window, and their elementwise maximum: the same outputs with no
    pooling kernel and no indices. Not the same gradient on ties (``torch.maximum`` splits it,
    ``max_pool2d`` gives it to the first), and the blank margins of an image tie."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        w, b = self.conv.weight, self.conv.bias
        size = x.shape[-1] - 1  # each phase starts 0 or 1 pixel in; stride 2 then gives the pooled size
        phases = [F.conv2d(x[..., i:i + size, j:j + size], w, b, stride=2) for i in (0, 1) for j in (0, 1)]
        return torch.maximum(torch.maximum(phases[0], phases[1]), torch.maximum(phases[2], phases[3]))


def textbook_order(model: nn.Module) -> nn.Module:
    """``lenet5`` with each block back in the usual conv - ReLU - pool order."""
    layers = dict(model.features.named_children())
    order = ["conv1", "act1", "pool1", "conv2", "act2", "pool2"]
    model.features = nn.Sequential(OrderedDict(
        [(k, layers[k]) for k in order] + [(k, m) for k, m in layers.items() if k not in order]))
    return model


def reference_model() -> nn.Module:
    return textbook_order(create_model("lenet5", num_classes=10, in_channels=1))


def pool_first_model() -> nn.Module:
    return create_model("lenet5", num_classes=10, in_channels=1)  # pools before its ReLU


def amax_model() -> nn.Module:
    model = reference_model()
    model.features.pool1, model.features.pool2 = AmaxPool2x2(), AmaxPool2x2()
    return model


def input_grad_model() -> nn.Module:
    model = pool_first_model()
    model.features.conv2 = InputGradInDefaultLayout(model.features.conv2)
    return model


def four_phase_model() -> nn.Module:
    model = pool_first_model()  # conv1, pool1, act1, ...: the first two become one module
    model.features.conv1, model.features.pool1 = FourPhaseConvPool(model.features.conv1), nn.Identity()
    return model


def unfold_model() -> nn.Module:
    model = reference_model()
    model.features.conv1 = UnfoldConv2d(model.features.conv1)
    model.features.conv2 = UnfoldConv2d(model.features.conv2)
    return model


# --------------------------------------------------------------------------------------------
# What a variant gives the step
# --------------------------------------------------------------------------------------------


def foreach(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``make_optimizer``'s optimiser stepping with its foreach implementation (a plain loop's
    default) instead of the fused kernel: the same settings, the same update formula."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = False, True
    return optimizer


def zeroing_in_place(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimiser with a ``zero_grad`` that fills the gradients with zeros and keeps them
    (``set_to_none=False``), whatever ``train_step`` asks for."""
    zero_grad = optimizer.zero_grad
    optimizer.zero_grad = lambda set_to_none=True: zero_grad(set_to_none=False)
    return optimizer


@dataclass
class Variant:
    name: str
    model: Callable[[], nn.Module] = reference_model
    channels_last: bool = False
    mkldnn: bool = True
    set_to_none: bool = True
    fused: bool = False
    item_check: bool = True  # loss.item() after every step
    threads: int | None = None  # None: the benchmark's --threads
    compile_mode: str | None = None
    fill_memory: bool = True  # deterministic mode's NaN fill of new tensors
    bf16: bool = False  # train_step's amp_dtype: bf16 autocast
    native: tuple[str, ...] = ()  # classicnets.native's kernels on (of native.KERNELS; the rest PyTorch's)
    exact: bool = True  # same math as the reference (bit-for-bit forward, same gradient rule)
    note: str = ""
    state: dict = field(default_factory=dict)

    def build(self, cfg: TrainConfig, batches: list, total_steps: int, seed: int) -> None:
        torch.manual_seed(seed)
        model = self.model()
        model.train()
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
            batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
        opt = make_optimizer(cfg, model)  # fused
        if not self.fused:
            foreach(opt)
        if not self.set_to_none:
            zeroing_in_place(opt)
        step_model = torch.compile(model, mode=self.compile_mode) if self.compile_mode else model
        schedule = make_schedule(cfg.schedule, cfg.lr, total_steps)
        self.state = dict(model=step_model, opt=opt, batches=batches, step=0, cfg=cfg,
                          lr_at=lambda step: schedule(step % total_steps))

    def run(self) -> tuple[int, float]:
        s = self.state
        mkl = contextlib.nullcontext() if self.mkldnn else torch.backends.mkldnn.flags(enabled=False)
        off = [kernel for kernel in native.KERNELS if kernel not in self.native]
        kernels = native.turned_off(*off) if off else contextlib.nullcontext()
        torch.utils.deterministic.fill_uninitialized_memory = self.fill_memory
        with mkl, kernels:
            seen, seconds, s["step"] = timed_epoch(s["model"], s["opt"], s["batches"], s["lr_at"], s["step"],
                                                   label_smoothing=s["cfg"].label_smoothing,
                                                   amp_dtype=torch.bfloat16 if self.bf16 else None,
                                                   read_loss=self.item_check)
        return seen, seconds


def variants(compile_modes: list[str]) -> list[Variant]:
    out = [
        Variant("reference (plain step)", note="the baseline every idea is compared with"),
        Variant("max pool as reshape+amax", model=amax_model, exact=False,
                note="forward identical; backward splits ties, so gradients differ on ties"),
        Variant("channels_last (model + input)", channels_last=True, exact=False,
                note="conv kernels for NHWC: same math, not bit-identical (logits within 1e-5)"),
        Variant("mkldnn off (THNN conv)", mkldnn=False),
        Variant("conv as unfold + matmul", model=unfold_model, exact=False,
                note="same math, different summation order (not bit-identical)"),
        Variant("zero_grad(set_to_none=False)", set_to_none=False),
        Variant("SGD fused=True (vs foreach)", fused=True,
                note="different kernel, same update formula"),
        Variant("no per-step loss.item()", item_check=False,
                note="the running loss read every 25 steps, as `classicnets.train` does"),
        Variant("1 thread", threads=1),
        Variant("max pool before ReLU", model=pool_first_model,
                note="relu(max) = max(relu): outputs and gradients bit-identical; ReLU on 1/4 of the values"),
        Variant("max pool before ReLU, channels_last", model=pool_first_model, channels_last=True, exact=False,
                note="against the reference; compare with the channels_last row for this idea's share"),
        Variant("no NaN fill of new tensors", fill_memory=False,
                note="deterministic mode's debugging fill (`torch.utils.deterministic`); kernels unchanged"),
        Variant(ALL_KEPT, model=pool_first_model, channels_last=True, fused=True,
                item_check=False, fill_memory=False, exact=False,
                note="with PyTorch's max pool kernel, as every row above"),
        Variant(NATIVE_POOL, model=pool_first_model, channels_last=True, fused=True, item_check=False,
                fill_memory=False, native=("pool",), exact=False,
                note="max_pool2d's outputs and gradients bit for bit; compare with 'all kept ideas together'"),
        Variant(NATIVE_CONV, model=pool_first_model, channels_last=True, fused=True, item_check=False,
                fill_memory=False, native=("pool", "gray_conv"), exact=False,
                note="conv1 (one-channel images) agrees with oneDNN to rounding; compare with the native pool's row"),
        Variant(NATIVE_ALL, model=pool_first_model, channels_last=True, fused=True, item_check=False,
                fill_memory=False, native=("pool", "gray_conv", "input_grad"), exact=False,
                note="conv2's input gradient agrees with oneDNN to rounding; compare with the row above"),
        Variant(NATIVE_FUSED, model=pool_first_model, channels_last=True, fused=True, item_check=False,
                fill_memory=False, native=native.KERNELS, exact=False,
                note="what classicnets.train runs; the same values and gradients as the row above, bit for bit, "
                     "but the convolutions' weight and bias gradients (to rounding: only the pools' winners are "
                     "summed); compare with it"),
        Variant("all kept ideas + bf16 autocast", model=pool_first_model, channels_last=True, fused=True,
                item_check=False, fill_memory=False, bf16=True, exact=False,
                note="bfloat16 convolutions and linear layers; compare with the row above"),
        Variant("all kept ideas + conv2's input gradient in the default layout", model=input_grad_model,
                channels_last=True, fused=True, item_check=False, fill_memory=False, exact=False,
                note="the rest of the step channels-last; compare with 'all kept ideas together'"),
        Variant("all kept ideas + conv1 and pool1 as four stride-2 convolutions", model=four_phase_model,
                channels_last=True, fused=True, item_check=False, fill_memory=False, exact=False,
                note="no max_pool2d; ties split their gradient; compare with 'all kept ideas together'"),
    ]
    out += [Variant(f"torch.compile mode={m}", compile_mode=m, model=reference_model, exact=False,
                    note="inductor kernels; not bit-identical") for m in compile_modes]
    return out


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    default_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)  # as classicnets.train does by default
    data = load_dataset("digits", "train", progress=False)
    if args.limit:
        data = dataclasses.replace(data, images=data.images[:args.limit], labels=data.labels[:args.limit])
    # the commit measured, recorded before the markdown is made from these results (it says whether
    # the rows predate train_step)
    results = {"machine": machine_info(), "commit": git_commit(), "threads": default_threads,
               "torch": torch.__version__, "rounds": args.rounds, "steps": args.steps, "runs": []}
    for bs in args.batch_sizes:
        cfg = TrainConfig(model="lenet5", dataset="digits", batch_size=bs).resolved()
        loader = make_loader(data, bs, mean=data.mean, std=data.std, size=(32, 32), shuffle=True,
                             augment=parse_augment("crop:2", "digits"), drop_last=True)
        batches = list(loader)[:args.steps]
        vs = variants(args.compile)
        for v in vs:
            torch.set_num_threads(v.threads or default_threads)
            v.build(cfg, batches, (args.rounds + 1) * len(batches), args.seed)
        samples = {v.name: [] for v in vs}
        for rnd in range(args.rounds + 1):  # round 0 warms up (and compiles)
            order = vs[rnd % len(vs):] + vs[:rnd % len(vs)]
            for v in order:
                torch.set_num_threads(v.threads or default_threads)
                n, sec = v.run()
                if rnd > 0:
                    samples[v.name].append(n / sec)
            torch.set_num_threads(default_threads)
            if not args.quiet and rnd % 10 == 0:
                print(f"batch {bs} round {rnd} done", file=sys.stderr)
        med = {k: statistics.median(x) for k, x in samples.items()}
        ref = med[vs[0].name]
        results["runs"].append({"batch_size": bs, "ideas": [
            {"idea": v.name, "before": ref, "after": med[v.name], "ratio": med[v.name] / ref, "exact": v.exact,
             "note": v.note, "best": max(samples[v.name]), "samples": samples[v.name]} for v in vs]})
    return results


def to_markdown(results: dict, kept: dict[str, str]) -> str:
    lines = ["# LeNet-5 training step: ideas measured side by side", "",
             (f"{results['machine']['cpu']}{isa(results['machine'])}, " if "machine" in results
              else "Machine not recorded (a run from before 2026-12-03), ")
             + f"torch {results['torch']}, {results['threads']} threads unless the idea says otherwise; "
             "images/s of the whole training step on pre-made batches (median over interleaved rounds). "
             "'before' is the reference (the plain step) measured in the same rounds.", ""]
    for r in results["runs"]:
        lines += [f"## batch {r['batch_size']}", "",
                  "| idea | img/s before | img/s after | ratio | exact math | kept? | note |",
                  "|---|---:|---:|---:|---|---|---|"]
        for i in r["ideas"]:
            lines.append(f"| {i['idea']} | {i['before']:,.0f} | {i['after']:,.0f} | {i['ratio']:.2f}x | "
                         f"{'yes' if i['exact'] else 'no'} | {kept.get(i['idea'], '')} | {i['note']} |")
        lines.append("")
    lines += [NOTES.strip()] + ([BEFORE_TRAIN_STEP.strip()] if "commit" not in results else [])
    # the rounds and steps of the run, where they were recorded and are not the defaults
    settings = "".join(f" --{key} {results[key]}" for key, default in (("rounds", 60), ("steps", 2))
                       if results.get(key, default) != default)
    lines += ["", f"Regenerate: `.venv/bin/python benchmarks/bench_lenet_step.py{settings}`", ""]
    return "\n".join(lines)


# What we did with each idea (the measurements above, and the notes below, say why).
KEPT = {
    "reference (plain step)": "-",
    "max pool as reshape+amax": "no: slower and not exact",
    "channels_last (model + input)": "**yes**: the lenet5 recipe sets `channels_last=True`",
    "mkldnn off (THNN conv)": "no",
    "conv as unfold + matmul": "no",
    "zero_grad(set_to_none=False)": "no: within noise",
    "SGD fused=True (vs foreach)": "**yes**: `make_optimizer` builds fused SGD/AdamW on CPU and CUDA",
    "no per-step loss.item()": "**yes**: `classicnets.train` reads the running loss every 25 steps",
    "1 thread": "no at 2 free cores; yes when the cores are shared (2-thread steps collapse under load)",
    "max pool before ReLU": "**yes**: `lenet5` pools before its ReLU (max pooling + ReLU only)",
    "max pool before ReLU, channels_last": "**yes** (both)",
    "no NaN fill of new tensors": "**yes**: `classicnets.train` turns the fill off (the algorithms stay "
                                  "deterministic)",
    ALL_KEPT: "-",
    NATIVE_POOL: "**yes**: `lenet5`'s `MaxPool2d` runs `classicnets.native`'s kernel on CPU (channels-last float32)",
    NATIVE_CONV: "**yes**: `lenet5`'s first `Conv2d` runs `classicnets.native`'s kernel on CPU (one-channel "
                 "float32 images, channels-last)",
    NATIVE_ALL: "**yes**: `lenet5`'s second `Conv2d` takes its input gradient from `classicnets.native` on CPU "
                "(channels-last float32)",
    NATIVE_FUSED: "**yes**: `lenet5` runs conv1, its pool and ReLU as one native kernel each way, and conv2 with "
                  "its pool and ReLU as oneDNN's forward, one pooling pass, and native kernels from the pooled "
                  "gradient back (CPU, channels-last float32; the layers stay separate modules)",
    "all kept ideas + bf16 autocast": "no: LeNet-5 stays fp32 (see the notes)",
    "all kept ideas + conv2's input gradient in the default layout": "no: inside the noise against everything kept "
                                                                     "(compare the rows), one more autograd function",
    "all kept ideas + conv1 and pool1 as four stride-2 convolutions": "no: slower than everything kept, and ties "
                                                                      "split their gradient",
}

NOTES = """
## Notes

* Two-thread steps are very sensitive to other load on a 2-core machine: an OpenMP team whose
  second thread is descheduled waits for it, so a burst of load can cut 2-thread throughput
  10-50x while a 1-thread step loses little. Short samples (2 steps) and many interleaved rounds
  keep the medians comparable; compare ratios within one table, not absolute numbers across runs.
* An exact 2x2 max pool written with `torch.maximum` over strided views and a hand-written
  backward (first maximum wins, as `max_pool2d`) was also tried: one pool's forward+backward took
  836 us instead of 1,869 (1 thread, 64x6x28x28), but the whole 2-thread step gained nothing
  measurable (0.99x), so the model keeps `nn.MaxPool2d` (~70 fewer lines to trust).
* The native 2x2 max pool (`classicnets.native`, C with AVX2 intrinsics, compiled on first
  use) exists because PyTorch's channels-last max pool vectorises over channels, 8 at a time, and
  LeNet-5's first pool has 6: every value went through its scalar remainder. Every row but
  the native rows runs PyTorch's kernels, so the rows stay comparable with earlier runs.
* The native one-channel convolution (`conv_gray.c`) runs LeNet-5's conv1 forward and its
  weight and bias gradients (the image needs no gradient). oneDNN vectorises that layer over its
  6 output channels, 6 of 8 lanes; the native kernel puts 8 positions of one row and one channel
  in a register and broadcasts one weight per multiply-add (since 2026-12-08: before, a register
  held positions x channels and each multiply-add needed a lane permutation; the forward is now
  1.6x that form), and transposes the output gradient once per row for the weight gradient. Its
  sums run in another order: values agree with PyTorch's to float32 rounding, not bit for bit.
* The native input gradient (`conv_input_grad.c`) sends conv2's gradient back onto its 6 input
  maps. oneDNN ran it at a third of its forward speed (its lanes again across the 6 channels);
  the native kernel puts 8 positions of one channel in a register, each image's output gradient
  transposed once with zeros around its rows, and broadcasts one weight per multiply-add. conv2's
  forward and weight gradient stay oneDNN's.
* The fused blocks (`classicnets.models.fused`) run conv1, its pool and its ReLU as one native
  kernel each way, and conv2's pool and ReLU as one pass after oneDNN's forward: the values and
  gradients of the layers run one by one, bit for bit, but the convolutions' weight and bias
  gradients, which agree to rounding. The step saves the work between them (autograd nodes, ReLU
  passes, full-size tensors). Since 2026-12-08 each block's backward starts from the gradient of
  its pooled output: only each pool window's winner has a gradient, so the weight gradients sum
  the winners alone (a quarter of the multiply-adds), conv2's input gradient scatters them inside
  its own transposition, and neither the full-size gradients nor the pools' backward passes are
  made (this row against the row above: 1.36x at batch 128, 1.27x at 64, in this run; 1.18x and
  1.20x in the run before).
* Max pooling before the ReLU (the order `lenet5` now builds) is the same function with the
  same gradients. It pays only with channels-last tensors, whose max pool is the slower one
  here: compare its channels_last row with the plain channels_last row.
* Deterministic mode (`torch.use_deterministic_algorithms`) also fills every new tensor with
  NaN; that costs LeNet-5 little (its tensors are few) but ResNet-20 about 6% (bf16, channels-last:
  906-929 img/s with it, 964-990 without, separate runs of `classicnets.train`), so
  `classicnets.train` keeps the deterministic algorithms and turns the fill off.
* bf16 autocast on top of everything kept, on the AVX-512 machine with native bf16 (2026-12-06):
  1.06x at batch 64 and 1.11x at batch 128 (0.87x at batch 64 before, with the textbook layer
  order); on a CPU without native bf16 it is emulated, far slower (its row in such a run).
  Test accuracy held on 3 seeds (Fashion-MNIST recipe: 90.62, 90.23, 90.78% against 90.43,
  90.61, 90.88% in fp32; digits 98.9, 98.5, 98.3% against 98.6, 98.8, 98.4%). Not the default
  yet: the gain is within that machine's run-to-run noise, and switching `precision="auto"` for LeNet-5 would change the
  recorded experiments that train it. `--precision bf16` turns it on.
* conv1 + conv2 forward+backward alone (1 thread, batch 64): mkldnn 1,273 + 1,977 us; THNN
  (mkldnn off) 3,167 + 3,964; unfold+matmul 7,120 + 8,757. mkldnn stays.
* torch.compile (default mode) was measured 2x slower before; not re-run here (compiling costs
  minutes on 2 shared cores). `--compile default max-autotune-no-cudagraphs` runs it.
* The data path is measured in `train_throughput.md`: `index_select` gathers and an
  unfold-based random crop (now in `classicnets/data/pipeline.py`) made the pieces 4-90x faster.
"""

# Said under results that do not record a commit: those runs predate the script's use of train_step.
BEFORE_TRAIN_STEP = """
* These rows were measured before this script stepped with `classicnets.train.train_step`: it
  had its own copy of the step (the same operations), and its reference took `make_optimizer`'s
  optimiser, which was already the fused one, so the "SGD fused=True (vs foreach)" row compares
  fused with fused: its ratio is noise, not what fused buys. The script now gives the reference
  that optimiser switched to foreach, and every idea goes through what `train_step` is given.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--steps", type=int, default=2,
                    help="steps per sample (short samples, many rounds: robust to bursts of load)")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", nargs="*", default=[], metavar="MODE",
                    help="also try torch.compile with these modes (e.g. default max-autotune-no-cudagraphs)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for lenet_step_ideas.{json,md} (default: benchmarks/results/<this machine>; with "
                         "--render, the folder of the json)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--render", type=Path, default=None, help="only rewrite the markdown from this results json")
    args = ap.parse_args(argv)
    if args.render:
        out = args.out or args.render.parent
        out.mkdir(parents=True, exist_ok=True)
        (out / "lenet_step_ideas.md").write_text(to_markdown(json.loads(args.render.read_text()), KEPT))
        return 0
    if args.quick:
        args.batch_sizes, args.steps, args.rounds, args.limit = [16], 3, 1, 256
    results = run(args)
    write_results(args.out, "lenet_step_ideas", results, to_markdown(results, KEPT), args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
