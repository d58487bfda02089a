"""Why ResNets work: a residual block starts next to the identity, a plain block must learn it.

(a) With ``zero_init_residual=True`` (gamma = 0 on each block's last BN, Goyal et al. 2017) every
CIFAR block outputs relu(shortcut(x)) = shortcut(x) at initialisation (its input is already
>= 0), so a 56-layer ResNet computes exactly what a 20-layer one does when they share the stem
and the head. We copy resnet20's ``conv1``/``bn1``/``fc`` into resnet56 and compare the stage
outputs and the logits in eval mode; the same comparison with the default init (gamma = 1) shows
that the equality is the init's doing, not an accident of the architecture.

(b) He et al. 2015, section 3.1: "if identity mappings are optimal, it is easier to push the
residual to zero than to fit an identity mapping by a stack of nonlinear layers". One residual
and one plain ``BasicBlock`` (16 maps, 8x8) are trained, from the same default init, to
reproduce their non-negative random input; we count the steps to reach an MSE threshold.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models import create_model
from ..models.resnet import BasicBlock
from ..report import save_figure
from . import register_experiment
from .common import finish, pyplot, torch_threads


def _stage_outputs(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    acts = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o.detach()))
             for n in ("layer1", "layer2", "layer3")]
    with torch.no_grad():
        acts["logits"] = model(x)
    for h in hooks:
        h.remove()
    return acts


def compare_depths(deep: str = "resnet56", shallow: str = "resnet20", zero_init: bool = True,
                   batch: int = 8, seed: int = 0) -> dict[str, float]:
    """Max |deep - shallow| of each stage's output and of the logits, at init, eval mode."""
    torch.manual_seed(seed)
    a = create_model(shallow, zero_init_residual=zero_init).eval()
    b = create_model(deep, zero_init_residual=zero_init).eval()
    shared = {k: v for k, v in a.state_dict().items() if k.split(".")[0] in ("conv1", "bn1", "fc")}
    b.load_state_dict(shared, strict=False)
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    oa, ob = _stage_outputs(a, x), _stage_outputs(b, x)
    return {k: float((oa[k] - ob[k]).abs().max()) for k in oa} | {
        "shallow_logits_max": float(oa["logits"].abs().max()), "deep_logits_max": float(ob["logits"].abs().max())}


def fit_identity(residual: bool, steps: int, threshold: float, seed: int, lr: float = 1e-3,
                 batch: int = 32, channels: int = 16, size: int = 8) -> list[float]:
    """Train one BasicBlock (default init) to output its input; the per-step MSE.

    Stops early once the loss has stayed below ``threshold / 10`` for 20 steps (the curve is
    flat from there)."""
    torch.manual_seed(seed)
    block = BasicBlock(channels, channels, residual=residual)
    for m in block.modules():  # the ResNet init (He et al. 2015, section 3.4)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    opt = torch.optim.Adam(block.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    losses, low = [], 0
    for _ in range(steps):
        # Non-negative inputs: a block's input is a ReLU's output, and its own output is >= 0.
        x = torch.randn(batch, channels, size, size, generator=g).relu()
        loss = F.mse_loss(block(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        low = low + 1 if losses[-1] < threshold / 10 else 0
        if low >= 20:
            break
    return losses


def _steps_to(losses: list[float], threshold: float) -> int | None:
    return next((i + 1 for i, v in enumerate(losses) if v < threshold), None)


@register_experiment("why ResNets work: deep = shallow at zero-init; a residual block fits the identity "
                     "faster than a plain one", paper_protocol=False)
def run_identity(out: Path, protocol: str = "quick", *, deep: str = "resnet56", shallow: str = "resnet20",
                 steps: int = 3000, threshold: float = 1e-3, seeds: tuple[int, ...] = (0, 1, 2),
                 lr: float = 1e-3) -> dict:
    """(a) ``deep`` against ``shallow`` at initialisation, zero-init and default; (b) a residual
    and a plain block fitting the identity for up to ``steps`` Adam steps at ``lr``, once per seed."""
    started = time.perf_counter()
    zero = compare_depths(deep, shallow, zero_init=True)
    default = compare_depths(deep, shallow, zero_init=False)
    curves = _fit_both(seeds, steps, threshold, lr)
    reached = {k: [_steps_to(c, threshold) for c in v] for k, v in curves.items()}
    _plot(out / "identity_fit.png", curves, threshold, len(seeds))
    tables = [_depth_table(zero, default, deep, shallow), _fit_table(curves, reached, seeds, steps, threshold, lr)]
    text = [_depth_conclusion(zero, default, deep, shallow), _fit_conclusion(reached, seeds, steps, threshold)]
    results = {"depth_comparison": {"zero_init_residual": zero, "default_init": default},
               "identity_fit": {"steps_to_threshold": reached,
                                "final_loss": {k: [c[-1] for c in v] for k, v in curves.items()},
                                # every 10th step, 4 significant digits: the figure has them all
                                "curves_every": 10,
                                "curves": {k: [[float(f"{x:.4g}") for x in c[::10]] for c in v]
                                           for k, v in curves.items()}}}
    return finish(out, name="identity", title="Why ResNets work: the identity is easy for a residual block",
                  protocol=protocol, started=started,
                  settings={"deep": deep, "shallow": shallow, "steps": steps, "threshold": threshold, "lr": lr,
                            "optimizer": "adam", "batch": 32, "threads_for_fit": 1,
                            "block": "BasicBlock(16, 16), 8x8 inputs"},
                  seeds=seeds, results=results, tables=tables, figures=["identity_fit.png"],
                  conclusion=" ".join(text))


_STAGES = ("layer1", "layer2", "layer3", "logits")


def _fit_both(seeds: tuple[int, ...], steps: int, threshold: float, lr: float) -> dict[str, list[list[float]]]:
    """(b)'s loss curves: a residual and a plain block per seed."""
    curves = {"residual": [], "plain": []}
    # One thread: the ops are tiny (16 maps of 8x8), and on a busy machine a second OpenMP thread
    # that has to wait for a core makes every step many times slower.
    with torch_threads(1):
        for seed in seeds:
            for kind in curves:
                curves[kind].append(fit_identity(kind == "residual", steps, threshold, seed, lr=lr))
    return curves


def _plot(path: Path, curves: dict[str, list[list[float]]], threshold: float, n_seeds: int) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for kind, color in (("residual", "tab:blue"), ("plain", "tab:red")):
        for i, c in enumerate(curves[kind]):
            ax.plot(range(1, len(c) + 1), c, color=color, alpha=0.8, lw=1,
                    label=f"{kind} block" if i == 0 else None)
    ax.axhline(threshold, color="gray", ls="--", lw=1, label=f"MSE {threshold:g}")
    ax.set(yscale="log", xlabel="step", ylabel="MSE to the input",
           title=f"One BasicBlock (16 maps, 8x8) learning the identity, {n_seeds} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, hint="--out DIR", dpi=110)
    plt.close(fig)


def _depth_table(zero: dict, default: dict, deep: str, shallow: str) -> dict:
    def fmt(v: float) -> str:
        return "0 (exact)" if v == 0 else f"{v:.3g}"

    return {"caption": f"(a) max |{deep} - {shallow}| at initialisation, same stem and head, eval mode",
            "headers": ["init", *_STAGES],
            "rows": [["zero_init_residual=True", *(fmt(zero[s]) for s in _STAGES)],
                     ["default (gamma = 1)", *(fmt(default[s]) for s in _STAGES)]]}


def _fit_table(curves: dict, reached: dict, seeds: tuple[int, ...], steps: int, threshold: float,
               lr: float) -> dict:
    def med(xs: list[int | None]) -> str:
        done = [x for x in xs if x is not None]
        if len(done) < len(xs):
            return f"not reached in {steps} steps ({len(done)}/{len(xs)} seeds did)"
        return f"{statistics.median(done):,.0f}"

    return {"caption": f"(b) Adam lr {lr:g}, batch 32: steps until the MSE first falls below {threshold:g}",
            "headers": ["block", "median steps", *(f"seed {s}" for s in seeds), "final MSE (median)"],
            "rows": [[k, med(reached[k]), *(f"{r:,}" if r is not None else "-" for r in reached[k]),
                      f"{statistics.median(c[-1] for c in curves[k]):.2g}"] for k in curves]}


# The paragraph: what the numbers say, whatever they turn out to be.


def _depth_conclusion(zero: dict, default: dict, deep: str, shallow: str) -> str:
    exact = all(zero[s] == 0 for s in _STAGES)
    return (f"(a) With zero_init_residual=True, {deep} and {shallow} "
            + ("give bit-identical stage outputs and logits at initialisation: every extra block is the "
               "identity, so the deep net starts as the shallow one." if exact else
               f"differ by at most {max(zero[s] for s in _STAGES):.3g} (not exactly equal).")
            + f" With the default init they differ by up to {default['logits']:.3g} in the logits "
              f"({shallow}'s largest logit {default['shallow_logits_max']:.3g}, {deep}'s "
              f"{default['deep_logits_max']:.3g}: untrained BN statistics let the signal grow with depth).")


def _fit_conclusion(reached: dict, seeds: tuple[int, ...], steps: int, threshold: float) -> str:
    r, p = reached["residual"], reached["plain"]
    inf = float("inf")
    first = sum((a if a is not None else inf) < (b if b is not None else inf) for a, b in zip(r, p, strict=True))
    r_done, p_done = [x for x in r if x is not None], [x for x in p if x is not None]
    if first == len(seeds):
        how = (f"the plain block needed {statistics.median(p_done) / statistics.median(r_done):.1f}x as many "
               f"steps (median {statistics.median(p_done):,.0f} against {statistics.median(r_done):,.0f})"
               if len(p_done) == len(p) else f"the plain block did not get there within {steps:,} steps on "
                                               f"{len(p) - len(p_done)} of {len(p)} seeds")
        return (f"(b) As He et al. argue, the residual block reached MSE {threshold:g} before the plain "
                f"block on every seed, and {how}.")
    return (f"(b) The expected ordering held on only {first} of {len(seeds)} seeds: residual block "
            f"steps {r}, plain block steps {p} (None = not reached in {steps:,} steps).")
