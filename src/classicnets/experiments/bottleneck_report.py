"""The bottleneck experiment's verdicts and words: whether part (b)'s nets converged
(:func:`convergence`), the report's paragraph (:func:`conclusion`) and part (b)'s table. Plain
values in, text out; the runs themselves are in :mod:`.bottleneck`."""

from __future__ import annotations

import math
import statistics

from .common import warmup_cosine

# Converged: over the last third of the epochs (at least the last 3), the test accuracy, averaged
# over the seeds epoch by epoch, gained or lost at most this many percentage points by its
# least-squares trend across that window, and ended above twice chance (20% on Fashion-MNIST's 10
# classes): NiN can sit flat at chance before it starts. And no seed's net has a dead class
# (output 0 for every test image, see _test): its flat curve is a broken net's, not a plateau
# (seen at a quarter of NiN's widths).
#
# The trend, not the span (max - min): each epoch's accuracy on 2,000 test images jitters by a few
# tenths of a point, and the span of a longer window grows with that jitter alone. The cpu
# protocol's plain net gained 0.6 points by its trend over its last 16 epochs while its curve
# spanned 1.1 (one epoch at 85.0% among 84.5s); its seeds, one by one, spanned 1.4-2.1 with trends
# of 0.6-0.7. Runs that were still climbing fail either way: the quick protocol's nets trended
# 1.3 and 1.5 points over their last 8 epochs (docs/experiments.md, "Bottleneck (b)").
CONVERGED_POINTS = 1.0
CONVERGENCE = (f"the seed-mean test accuracy's least-squares trend over the last third of the epochs (at least the "
               f"last 3) within {CONVERGED_POINTS:g} point across that window, above twice chance, and no dead class "
               "(output 0 for every test image) in any seed's net")


def trend(values: list[float]) -> float:
    """What the least-squares line through ``values`` (one per epoch) gains from the first epoch to
    the last: its slope times (len - 1)."""
    return statistics.linear_regression(range(len(values)), values).slope * (len(values) - 1)


def convergence(curves: list[list[float]], points: float = CONVERGED_POINTS, chance: float = 0.1,
                dead: list[list[int]] | None = None) -> dict:
    """Whether a net's per-epoch test accuracies (one curve per seed, fractions) reached a
    plateau: the seed-mean curve's least-squares trend over its last ``window`` epochs (a third of
    them, at least 3) gains or loses at most ``points`` percentage points across the window, its
    last point is above twice ``chance`` (flat at chance is a net that has not started), and no
    seed's net has a dead class (``dead``: per seed, the classes whose output was 0 for every test
    image). Also reported: the window's span (max - min) and rise (last - first). Fewer than 3
    epochs cannot tell: not converged."""
    mean = [statistics.mean(epoch) for epoch in zip(*curves, strict=True)]
    window = max(3, math.ceil(len(mean) / 3))
    dead = [sorted(classes) for classes in dead] if dead else [[] for _ in curves]
    common = {"at_chance": mean[-1] <= 2 * chance, "threshold_points": points, "mean_curve": mean,
              "dead_classes": dead}
    if len(mean) < window:
        return {"converged": False, "window": len(mean), "trend_points": None, "span_points": None,
                "rise_points": None, **common}
    tail = mean[-window:]
    moved = 100 * trend(tail)
    return {"converged": abs(moved) <= points and not common["at_chance"] and not any(dead), "window": window,
            "trend_points": moved, "span_points": 100 * (max(tail) - min(tail)),
            "rise_points": 100 * (tail[-1] - tail[0]), **common}


def conclusion(direct: int, reduced: int, ratio: dict, nets: dict, seeds, s: dict) -> str:
    """The report's paragraph, from (a)'s counts and speed-ups (threads -> ratio), (b)'s nets and
    the settings ``s`` they trained with (epochs, train_images, width, batch_size)."""
    mac_ratio = direct / reduced
    thread_counts = sorted(ratio)
    slowest = min(ratio.values())
    text = [f"(a) The bottleneck needs {mac_ratio:.1f}x fewer multiply-adds ({reduced:,} against {direct:,})"
            + "; on this CPU it ran " + " and ".join(
                f"{ratio[t]:.1f}x faster than the direct convolution with {t} thread{'s' * (t > 1)}"
                for t in thread_counts)
            + (". That falls well short of the arithmetic: the small 1x1 and 16-channel convolutions use the "
               "hardware far less efficiently than one large one." if slowest < 0.5 * mac_ratio else
               ": most of what the arithmetic promises, not all, since the small 1x1 and 16-channel "
               "convolutions use the hardware less efficiently than one large one." if slowest < 0.9 * mac_ratio
               else ", what the arithmetic promises.")]
    return " ".join([*text, _nets_text(nets, seeds), convergence_text(nets, s)])


def _nets_text(nets: dict, seeds) -> str:
    nin, plain = nets["nin"], nets["plain (no 1x1)"]
    cheaper = nin["macs"] < plain["macs"]
    gap = nin["test_accuracy"] - plain["test_accuracy"]
    noise = max(nin["test_accuracy_sd"], plain["test_accuracy_sd"])
    clear = len(seeds) > 1 and abs(gap) > 2 * noise
    return (
        f"(b) NiN has {nin['conv_layers']} convolutions to the plain net's {plain['conv_layers']} yet "
        + ("fewer" if cheaper else "more") + f" multiply-adds ({nin['macs'] / 1e6:.1f} M against "
        f"{plain['macs'] / 1e6:.1f} M" + ("; its cccp2 1x1 layer cuts the maps before the second 5x5 "
                                          "convolution)" if cheaper else ")")
        + f" and {nin['params']:,} parameters against {plain['params']:,}. "
        + f"NiN reached {100 * nin['test_accuracy']:.1f}% test accuracy against {100 * plain['test_accuracy']:.1f}% "
          f"(mean of {len(seeds)} seed{'s' * (len(seeds) > 1)}): "
        + (("the 1x1 layers helped" if gap > 0 else "the 1x1 layers did not help")
           + (f", by more than twice the seed-to-seed s.d. ({100 * noise:.1f} points)." if clear else
              f", but by no more than twice the seed-to-seed s.d. ({100 * noise:.1f} points), so the gap is "
              "unresolved." if len(seeds) > 1 else "; one seed cannot tell a real gap from noise.")))


def convergence_text(nets: dict, s: dict) -> str:
    """The verdict on the budget: both nets converged (see :func:`convergence`), or which did not."""
    epochs = s["epochs"]
    budget = (f"{epochs} epoch{'s' * (epochs != 1)} on {s['train_images']:,} images, batch {s['batch_size']}, at "
              f"{s['width']:g}x the paper's width")
    checks = {name: v["convergence"] for name, v in nets.items()}
    window = next(iter(checks.values()))["window"]
    if any(c["trend_points"] is None for c in checks.values()):
        return (f"NOT converged: {budget} is too few epochs to tell (the check needs at least 3), so these "
                "numbers describe the start of training, and a longer run may change the numbers and the order.")
    bar = next(iter(checks.values()))["threshold_points"]
    warmup = s.get("warmup", 0)
    lr_left = warmup_cosine(epochs, warmup)(epochs - window) if epochs - window >= warmup else 1.0
    trends = ", ".join(f"{name} {c['trend_points']:+.1f}" for name, c in checks.items())
    spans = ", ".join(f"{name} {c['span_points']:.1f}" for name, c in checks.items())
    over = (f"over the last {window} of the {epochs} epochs (the cosine learning rate falling from "
            f"{100 * lr_left:.0f}% of its peak to 0) the seed-mean test accuracy's trend (least squares, points "
            f"across the window) was {trends} (its span, max - min: {spans})")
    stuck = " and ".join(name for name, c in checks.items() if not c["converged"])
    if not stuck:
        return (f"Both nets converged: {over}; each trend within {bar:g} point as required, above twice chance. "
                f"So this compares the two nets trained to a plateau with this budget ({budget}), not their start.")
    moved = " and ".join(name for name, c in checks.items() if abs(c["trend_points"]) > bar)
    flat = " and ".join(name for name, c in checks.items() if c["at_chance"])
    broken = {name: sum(map(bool, c["dead_classes"])) for name, c in checks.items() if any(c["dead_classes"])}
    learning = " and ".join(name for name, c in checks.items() if not c["converged"] and name not in broken)
    why = ([f"more than {bar:g} point for {moved}"] * bool(moved) + [f"{flat} ended at chance"] * bool(flat)
           + [f"{name} had a dead class on {k} of {len(checks[name]['dead_classes'])} seeds"
              for name, k in broken.items()])
    text = f"NOT converged ({stuck}): {over}; {', and '.join(why)}."
    if learning:
        text += (f" With this budget ({budget}) {learning} {'are' if ' and ' in learning else 'is'} still "
                 "learning; a longer run (more epochs, or `--protocol paper`) may change the numbers and the order.")
    if broken:
        text += (" A dead class (output 0 for every test image) gets no gradient through its own map: it went "
                 "negative everywhere, and the ReLU before the average pool passes nothing back. Only changes made "
                 "for the other classes can revive it, so more epochs seldom help; a lower peak learning rate or a "
                 "longer warm-up may keep it alive.")
    return text


def nets_table(nets: dict[str, dict], caption: str) -> dict:
    def converged(c: dict) -> str:
        if c["trend_points"] is None:
            return f"cannot tell ({c['window']} epochs)"
        moved = f"trend {c['trend_points']:+.1f} points over {c['window']} epochs, span {c['span_points']:.1f}"
        if c["at_chance"]:
            return f"NO (at chance; {moved})"
        if any(c["dead_classes"]):
            dead = sum(map(bool, c["dead_classes"]))
            return f"NO (a dead class on {dead} of {len(c['dead_classes'])} seeds; {moved})"
        return f"{'yes' if c['converged'] else 'NO'} ({moved})"

    return {"caption": caption,
            "headers": ["net", "conv layers", "params", "multiply-adds", "test accuracy", "converged",
                        "train s (per seed)"],
            "rows": [[k, v["conv_layers"], v["params"], v["macs"],
                      f"{100 * v['test_accuracy']:.1f}% +- {100 * v['test_accuracy_sd']:.1f}",
                      converged(v["convergence"]), f"{v['train_seconds']:.0f}"] for k, v in nets.items()]}
