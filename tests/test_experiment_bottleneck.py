"""The bottleneck experiment's part (b): per-epoch curves, the convergence verdict and its words,
the same numbers whether the (net, seed) runs go side by side or one after another, and the
protocols' budgets. (The end-to-end shape of its files is in test_experiments.py.)"""

from __future__ import annotations

import pytest

from classicnets import experiments
from classicnets.experiments import bottleneck, bottleneck_report
from classicnets.experiments.bottleneck import PROTOCOLS
from classicnets.experiments.bottleneck_report import convergence, convergence_text
from classicnets.experiments.common import warmup_cosine
from test_experiments import check_outputs, needs_fashion

TINY = dict(train_limit=64, test_limit=64, epochs=3, reps=1, batch=2, seeds=(0, 1), width=0.25, batch_size=32,
            threads=1)


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    out = tmp_path_factory.mktemp("bottleneck")
    return out, experiments.run_experiment("bottleneck", out=out, workers=2, **TINY)


@needs_fashion
def test_each_run_has_a_curve_with_one_point_per_epoch(side_by_side):
    out, doc = side_by_side
    check_outputs(out, "bottleneck")
    for net in doc["results"]["nin_vs_plain"].values():
        assert len(net["test_accuracy_curves"]) == len(net["train_loss_curves"]) == 2  # one per seed
        assert all(len(c) == 3 for c in net["test_accuracy_curves"] + net["train_loss_curves"])
        assert [c[-1] for c in net["test_accuracy_curves"]] == net["test_accuracies"]
        assert len(net["convergence"]["mean_curve"]) == 3 and net["convergence"]["window"] == 3
        assert len(net["dead_classes"]) == 2 and all(set(c) <= set(range(10)) for c in net["dead_classes"])
        assert net["convergence"]["dead_classes"] == [sorted(c) for c in net["dead_classes"]]
    s = doc["settings"]
    assert (s["workers"], s["threads"], s["epochs"], s["batch_size"]) == (2, 1, 3, 32)
    assert (s["train_images"], s["test_images"]) == (64, 64) and "last third" in s["convergence"]
    assert "converged" in doc["tables"][1]["headers"] and "converged" in doc["conclusion"].lower()
    assert "2 runs side by side, each with 1 torch thread" in (out / "report.md").read_text()


@needs_fashion
def test_runs_side_by_side_give_the_numbers_of_runs_in_turn(side_by_side, tmp_path):
    _, doc = side_by_side
    in_turn = experiments.run_experiment("bottleneck", out=tmp_path, workers=1, **TINY)
    assert in_turn["settings"]["workers"] == 1
    for name, net in doc["results"]["nin_vs_plain"].items():
        other = in_turn["results"]["nin_vs_plain"][name]
        for key in ("test_accuracy_curves", "train_loss_curves", "params", "macs"):
            assert net[key] == other[key], (name, key)


def _curves(*tails: float, start=(0.5, 0.6, 0.7)) -> list[float]:
    return [*start, *tails]


def test_convergence_by_the_trend_of_the_last_third_of_the_seed_mean():
    # 9 epochs: the window is the last 3; two seeds whose mean is flat there (within 1 point).
    flat = convergence([_curves(0.80, 0.84, 0.82, 0.83, 0.835, 0.83), _curves(0.80, 0.82, 0.84, 0.83, 0.825, 0.834)])
    assert flat["converged"] and flat["window"] == 3 and flat["span_points"] == pytest.approx(0.2)
    assert flat["trend_points"] == pytest.approx(0.2)  # 83.0 -> 83.0 -> 83.2: the line through them
    # Still rising 3 points over the last third: not converged, whatever the seeds do one by one.
    rising = convergence([_curves(0.70, 0.72, 0.74, 0.77, 0.78, 0.80)] * 3)
    assert not rising["converged"] and rising["trend_points"] == pytest.approx(3.0)
    assert rising["rise_points"] == pytest.approx(3.0) and rising["span_points"] == pytest.approx(3.0)
    # 12 epochs: the window is the last 4; an early climb does not count, a late one does.
    assert convergence([[0.1] * 4 + [0.5, 0.7, 0.8, 0.85] + [0.86, 0.865, 0.86, 0.868]])["converged"]
    late = convergence([[0.1] * 8 + [0.80, 0.81, 0.815, 0.822]])
    assert not late["converged"] and late["window"] == 4
    # A drop counts as much as a rise; fewer than 3 epochs cannot tell.
    drop = convergence([[0.5, 0.6, 0.87, 0.86, 0.84]])
    assert not drop["converged"] and drop["trend_points"] == pytest.approx(-3.0)
    # Flat at chance is a net that has not started (NiN can sit there for an epoch or more).
    stuck = convergence([[0.5, 0.1, 0.1, 0.1]] * 2)
    assert stuck["trend_points"] == 0 and stuck["at_chance"] and not stuck["converged"]
    short = convergence([[0.5, 0.6]])
    assert not short["converged"] and short["trend_points"] is None and short["span_points"] is None


def test_a_flat_but_jittery_curve_has_converged_and_a_steady_climb_has_not():
    # The test accuracy jitters from epoch to epoch; over a 16-epoch window the span of the jitter
    # alone passes 1 point. The cpu protocol's plain net, seed-mean, its last 16 of 48 epochs:
    plain = [0.839, 0.840, 0.843, 0.838, 0.841, 0.847, 0.850, 0.846, 0.847, 0.849, 0.847, 0.847, 0.845, 0.845,
             0.846, 0.845]
    c = convergence([[0.5] * 32 + plain])
    assert c["window"] == 16 and c["span_points"] == pytest.approx(1.2) and c["converged"]
    assert 0.5 < c["trend_points"] < 0.8
    jitter = [0.84 + (0.006 if e % 2 else -0.006) for e in range(16)]
    assert convergence([[0.5] * 32 + jitter])["converged"]
    # The same jitter on a climb of 1.5 points across the window: the trend sees the climb.
    climbing = [a + 0.015 * e / 15 for e, a in enumerate(jitter)]
    assert not convergence([[0.5] * 32 + climbing])["converged"]


def test_a_net_with_a_dead_class_has_not_converged():
    # Flat and well above chance, but seed 1's outputs for classes 3 and 7 were 0 on every test
    # image: dead class maps (the quarter-width NiN sat flat at 37% like this), not a plateau.
    flat = [_curves(0.80, 0.84, 0.82, 0.83, 0.835, 0.83)] * 2
    assert convergence(flat, dead=[[], []])["converged"]
    dead = convergence(flat, dead=[[], [7, 3]])
    assert not dead["converged"] and dead["dead_classes"] == [[], [3, 7]] and abs(dead["trend_points"]) < 1
    flat = [_curves(0.84, 0.85, 0.85, 0.853, 0.855, 0.854)] * 3
    nets = _nets(flat, flat)
    nets["nin"]["convergence"] = convergence(flat, dead=[[2], [], [5]])
    text = convergence_text(nets, SETTINGS)
    assert text.startswith("NOT converged (nin): ") and "nin had a dead class on 2 of 3 seeds." in text
    assert "gets no gradient through its own map" in text and "still learning" not in text
    table = bottleneck_report.nets_table({name: dict(net, train_seconds=1.0) for name, net in nets.items()}, "")
    assert table["rows"][0][5].startswith("NO (a dead class on 2 of 3 seeds")
    assert table["rows"][1][5].startswith("yes")


def test_the_learning_rate_warms_up_then_falls_on_a_cosine():
    factor = warmup_cosine(total=100, warmup=10)
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert factor(10) == 1.0 and factor(55) == pytest.approx(0.5) and factor(99) < 0.001
    plain = warmup_cosine(total=100, warmup=0)
    assert plain(0) == 1.0 and plain(50) == pytest.approx(0.5)


def _nets(nin_curves, plain_curves) -> dict:
    def net(curves, macs, params):
        accs = [c[-1] for c in curves]
        return {"conv_layers": 9 if macs < 10 else 4, "macs": macs * 1e6, "params": params,
                "test_accuracy": sum(accs) / len(accs), "test_accuracy_sd": 0.004, "convergence": convergence(curves)}

    return {"nin": net(nin_curves, 3.4, 60_000), "plain (no 1x1)": net(plain_curves, 16.8, 80_000)}


SETTINGS = dict(epochs=9, train_images=7_000, batch_size=32, width=0.25)


def test_the_conclusion_says_whether_both_nets_converged():
    flat = [_curves(0.84, 0.85, 0.85, 0.853, 0.855, 0.854)] * 3
    still = [_curves(0.70, 0.72, 0.74, 0.77, 0.78, 0.80)] * 3
    text = bottleneck_report.conclusion(100, 10, {1: 7.0}, _nets(flat, flat), (0, 1, 2), SETTINGS)
    assert "Both nets converged: over the last 3 of the 9 epochs" in text
    assert "trend (least squares, points across the window) was nin +0.1, plain (no 1x1) +0.1 (its span, max - min: " \
           "nin 0.2, plain (no 1x1) 0.2); each trend within 1 point as required" in text
    assert "NOT" not in text and "may change" not in text and "undertrained" not in text
    assert "9 epochs on 7,000 images, batch 32, at 0.25x the paper's width" in text
    one = convergence_text(_nets(flat, still), SETTINGS)
    assert one.startswith("NOT converged (plain (no 1x1)): ")
    assert "was nin +0.1, plain (no 1x1) +3.0 (its span" in one and "; more than 1 point for plain (no 1x1)." in one
    assert "may change the numbers and the order" in one and "width) plain (no 1x1) is still learning" in one
    both = convergence_text(_nets(still, still), SETTINGS)
    assert both.startswith("NOT converged (nin and plain (no 1x1)): ")
    chance = convergence_text(_nets([[0.1, 0.1, 0.1]] * 3, still), SETTINGS)
    assert "was nin +0.0, plain (no 1x1) +3.0 (its span" in chance
    assert "; more than 1 point for plain (no 1x1), and nin ended at chance." in chance
    assert chance.startswith("NOT converged (nin and plain (no 1x1)): ") and "nin and plain (no 1x1) are" in chance
    short = convergence_text(_nets([[0.5]] * 3, [[0.6]] * 3), dict(SETTINGS, epochs=1))
    assert short.startswith("NOT converged: 1 epoch on 7,000 images") and "too few epochs" in short


def test_protocols_have_several_seeds_and_their_own_budget():
    for p in PROTOCOLS.values():
        assert len(p["seeds"]) >= 2 and {"batch_size", "lr", "epochs", "width"} <= set(p)
    assert len(PROTOCOLS["paper"]["seeds"]) >= 3 and len(PROTOCOLS["quick"]["seeds"]) >= 3  # issue 18
    paper = PROTOCOLS["paper"]
    assert (paper["train_limit"], paper["test_limit"], paper["width"]) == (None, None, 1.0)
    # Settings given win over the protocol's; the unset markers (-1, None, 0) do not.
    s = bottleneck._resolve(PROTOCOLS["quick"], dict(train_limit=-1, test_limit=None, epochs=0, lr=None,
                                                     batch_size=16, dropout=0.0, seeds=[4]))
    assert (s["train_limit"], s["test_limit"], s["epochs"], s["lr"]) == (3_000, None, 24, 1e-3)
    assert (s["warmup"], s["class_bias"]) == (1, 1.0)
    assert (s["batch_size"], s["dropout"], s["seeds"]) == (16, 0.0, (4,))


def test_the_cpu_protocol_is_the_quick_one_on_fewer_images_for_more_steps():
    quick, cpu = PROTOCOLS["quick"], PROTOCOLS["cpu"]
    rest = {k: v for k, v in quick.items() if k not in ("train_limit", "epochs")}
    assert {k: v for k, v in cpu.items() if k not in ("train_limit", "epochs")} == rest
    assert (cpu["train_limit"], cpu["epochs"]) == (2_000, 48) and len(cpu["seeds"]) >= 3  # issue 18: converged
    steps = {name: p["train_limit"] // p["batch_size"] * p["epochs"] for name, p in (("quick", quick), ("cpu", cpu))}
    assert steps["cpu"] > steps["quick"]
    assert "cpu" in experiments._lookup("bottleneck")[2] and "cpu" not in experiments._lookup("identity")[2]


@needs_fashion
def test_the_cpu_protocol_runs_and_says_so(tmp_path):
    doc = experiments.run_experiment("bottleneck", out=tmp_path, protocol="cpu", workers=1,
                                     **{**TINY, "seeds": (0,), "epochs": 1})
    assert doc["protocol"] == "cpu" and doc["settings"]["lr"] == PROTOCOLS["cpu"]["lr"]
    assert "Protocol `cpu`" in (tmp_path / "report.md").read_text()


def test_a_class_whose_output_is_always_zero_is_dead_and_the_class_bias_starts_every_map_alive():
    import torch

    from classicnets.data.imageset import ImageSet

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=g)
    data = ImageSet(images, torch.arange(40) % 10, [str(c) for c in range(10)], "random", (0.3,), (0.3,))
    args = dict(mean=data.mean, std=data.std, size=(32, 32))
    for name in bottleneck.NETS:
        torch.manual_seed(0)
        model = bottleneck._make_net(name, 0.25, 0.5, class_bias=1.0)
        classes = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        assert torch.equal(classes.bias, torch.ones(10))
        assert bottleneck._test(model, data, args)[1] == []  # every map starts positive somewhere
        with torch.no_grad():
            classes.bias[[2, 7]] = -1e3  # two class maps negative everywhere: their outputs are 0
        accuracy, dead = bottleneck._test(model, data, args)
        assert dead == [2, 7] and 0 <= accuracy <= 1
