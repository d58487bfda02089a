"""The degradation experiment's report: the Figure-6 plot and the paragraph computed from the
numbers (did the deeper plain net train worse, and the deeper ResNet not, on every seed?).
``degradation.py`` trains the nets; this module only reads what they left."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ..report import save_figure
from .common import pyplot

# Table 6 of the paper: CIFAR-10 test error (%) of the residual nets (best of 5 runs for 110).
PAPER_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}



def budget_text(s: dict) -> str:
    length = f"{s['iterations']:,} iterations" if s.get("iterations") else f"{s['epochs']} epochs"
    return f"{length} of batch {s['batch_size']}, {s['schedule']} lr {s['lr']:g}"



def schedule_text(s: dict) -> str:
    if s["schedule"] == "onecycle":
        return "one-cycle: a linear rise over the first 25% of the steps, then a linear fall to 0"
    return "lr/10 at 50% and 75% of training" if s["schedule"] == "step" else s["schedule"]



def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"



def _mean_curve(runs: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """Iterations and the error (%) averaged over seeds, at each evaluation where every seed has one."""
    n = min(len(run) for run in runs)
    points = [(runs[0][i]["step"], [100 * (1 - run[i][key]) for run in runs])
              for i in range(n) if all(key in run[i] for run in runs)]
    return [x for x, _ in points], [sum(ys) / len(ys) for _, ys in points]



def plot_figure6(path: Path, curves: dict, final: dict, depths, title: str) -> None:
    """The paper's Figure 6 layout: plain nets left, ResNets right; training error thin dashed,
    test error bold, against iterations; one colour per depth (the same in both panels)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind, label, panel in ((axes[0], "plain", "plain", "plain nets"), (axes[1], "resnet", "ResNet", "ResNets")):
        for i, depth in enumerate(depths):
            color, runs = colors[i % len(colors)], curves[f"{kind}{depth}"]
            xs, ys = _mean_curve(runs, "train_accuracy")
            ax.plot(xs, ys, linestyle="--", linewidth=0.9, color=color)
            # The honest figure, where the run ended: it sits below the dashed line's end when
            # augmentation (or the weights moving within the epoch) inflate the running error.
            ax.plot([runs[0][-1]["step"]], [100 * final[f"{kind}{depth}"]["train_error"]], marker="o",
                    markerfacecolor="none", color=color)
            xs, ys = _mean_curve(runs, "test_accuracy")
            ax.plot(xs, ys, linestyle="-", linewidth=2.2, color=color, label=f"{label}-{depth}")
        ax.set(xlabel="iterations", ylabel="error (%)", title=panel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(textwrap.fill(title, 140), fontsize=9)  # two lines rather than one cut off
    save_figure(fig, path, hint="--out DIR", dpi=110)
    plt.close(fig)



def conclusion(final: dict, depths, protocol: str, s: dict, per_seed: dict | None = None) -> str:
    """The report's paragraph: did deeper plain nets train worse, and residual ones not, on every seed?"""
    lo, hi = min(depths), max(depths)
    if lo == hi:
        return (f"Only depth {lo} was run, so no comparison of depths is possible; plain-{lo} ended at "
                f"{pct(final[f'plain{lo}']['train_error'])}% training error, ResNet-{lo} at "
                f"{pct(final[f'resnet{lo}']['train_error'])}%.")
    parts = [*_mean_verdict(final, lo, hi)]
    if len(depths) > 2:
        parts.append("Training error by depth: " + "; ".join(
            f"{label} " + ", ".join(f"{d} layers {pct(final[f'{kind}{d}']['train_error'])}%" for d in depths)
            for kind, label in (("plain", "plain"), ("resnet", "ResNet"))) + ".")
    if per_seed is not None:
        parts.append(_seed_verdict(per_seed, depths))
    t = {n: final[n].get("test_error") for n in final}
    parts.append("Test errors: " + ", ".join(f"{n} {pct(t[n])}%" for n in final) + ".")
    if protocol == "paper" and s.get("iterations") == 64_000:
        ref = [f"ResNet-{d} {PAPER_TEST_ERROR[d]}% (ours {pct(t[f'resnet{d}'])}%)" for d in depths
               if d in PAPER_TEST_ERROR]
        parts.append("The paper's Table 6 gives " + ", ".join(ref) + ".")
    else:
        parts.append(f"This is a short budget ({budget_text(s)}) on {s['dataset']}"
                     + (f" at width {s['width']} (the paper's is 16)" if s["width"] != 16 else "")
                     + "; the paper trains 64k iterations on CIFAR-10 (`--protocol paper`), and only there are the "
                       "errors comparable with its Figure 6 and Table 6.")
    return " ".join(parts)



def _mean_verdict(final: dict, lo: int, hi: int) -> list[str]:
    """The two halves of the claim, on the mean over seeds of the final-pass training error."""
    p_lo, p_hi = final[f"plain{lo}"]["train_error"], final[f"plain{hi}"]["train_error"]
    r_lo, r_hi = final[f"resnet{lo}"]["train_error"], final[f"resnet{hi}"]["train_error"]
    tolerance = 0.005  # "or close": half a point of training error
    degraded = p_hi > p_lo
    resnet_ok = r_hi <= r_lo + tolerance
    parts = [f"Plain-{hi} ended at {pct(p_hi)}% training error (un-augmented final pass) against plain-{lo}'s "
             f"{pct(p_lo)}%: "
             + ("the deeper plain net trains worse, the degradation problem, as in the paper's Figure 6."
                if degraded else "the deeper plain net did NOT train worse here, unlike the paper's Figure 6."),
             f"ResNet-{hi} ended at {pct(r_hi)}% against ResNet-{lo}'s {pct(r_lo)}%: "
             + (("the deeper residual net trains better, as the paper reports." if r_hi < r_lo else
                 "the deeper residual net is within half a point of the shallower one, so depth did not hurt it.")
                if resnet_ok else "the deeper residual net trained worse here too, unlike the paper.")]
    if degraded:
        parts.append(f"Going from {lo} to {hi} layers cost the plain nets {100 * (p_hi - p_lo):.1f} points of training "
                     f"error and the residual nets {100 * (r_hi - r_lo):+.1f}: "
                     + ("the shortcuts removed most of the degradation." if r_hi - r_lo < 0.5 * (p_hi - p_lo)
                        else "the shortcuts did not remove most of it."))
    return parts



def seed_differences(per_seed: dict, depths) -> dict[tuple[str, int], dict[int, float]]:
    """Each deeper net's training error minus the shallowest net of its kind's, by seed, in points:
    ``{(kind, depth): {seed: points}}``, kinds in KINDS order, depths ascending."""
    lo = min(depths)
    return {(kind, hi): {b["seed"]: 100 * (b["train_error"] - a["train_error"])
                         for a, b in zip(per_seed[f"{kind}{lo}"], per_seed[f"{kind}{hi}"], strict=True)}
            for hi in sorted(depths) if hi != lo for kind in ("plain", "resnet")}


def _seed_verdict(per_seed: dict, depths) -> str:
    """Does every seed go the same way? Each deeper net's training error minus the shallowest's, by seed."""
    lo = min(depths)
    seeds = [r["seed"] for r in per_seed[f"plain{lo}"]]
    if len(seeds) < 2:
        return f"One seed only ({seeds[0]}), so whether every seed goes the same way is not measured."
    parts = []
    for (kind, hi), by_seed in seed_differences(per_seed, depths).items():
        label = "plain" if kind == "plain" else "ResNet"
        worse = [s for s, d in by_seed.items() if d > 0]
        each = ", ".join(f"seed {s} {d:+.2f}" for s, d in by_seed.items())
        if len(worse) in (0, len(seeds)):
            verdict = f"the same direction on every seed ({'worse' if worse else 'not worse'})"
        else:
            better = [s for s in seeds if s not in worse]
            verdict = (f"the seeds differ: worse on seed{'s' * (len(worse) > 1)} {', '.join(map(str, worse))}, "
                       f"not worse on seed{'s' * (len(better) > 1)} {', '.join(map(str, better))}")
        parts.append(f"{label}-{hi} minus {label}-{lo} training error, in points: {each}: {verdict}.")
    return "By seed: " + " ".join(parts)
