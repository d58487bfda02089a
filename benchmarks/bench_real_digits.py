"""Does a model of MNIST's digits read digits people write? The reading (classicnets.data.reading)
on and off, against the clean test split.

The contenders are the library's own: ``classicnets.load(CHECKPOINT)`` (the reading on, as
``classicnets predict`` runs) and ``classicnets.load(CHECKPOINT, normalize=False)`` (as before),
given the same inputs:

- the embedded test split as it is (1,000 digits, 28x28 white on black);
- the same digits enlarged 4x (112 px, white on black), so the reading does all its steps on
  clean digits: what it costs where nothing needs fixing;
- the same digits written on paper and photographed (``tests/paper_digits.py``: pages of
  160-640 px, the digit 25-90% of the page, off-centre, turned up to 10 degrees, dark ink on
  light paper, blur, uneven light, noise, PNG or JPEG, a third in colour), each read from its
  file by the predictor, as ``classicnets predict`` reads it;
- ten digits drawn on a white 280 x 280 canvas (black strokes 18 px wide, round caps);
- with Fashion-MNIST and the ``lenet5-fashion`` weights at hand: Fashion-MNIST's test items
  photographed on paper, against the items themselves.

GOAL: on the photographed digits, within 1 point of the clean test split's accuracy.

Run: ``.venv/bin/python benchmarks/bench_real_digits.py [CHECKPOINT]`` (default: the shipped
``lenet5-digits`` weights, else a LeNet-5 trained by the default recipe into a temporary folder;
~2 minutes on one core; ``--quick``: 20 pages and photos, seconds). Results:
``benchmarks/results/<machine>/real_digits.{json,md}``.
``--figure`` also draws ``docs/figures/reading.png``: pages and drawings as given, and what the
network sees of them, with its answers.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, script_parser, write_results  # benchmarks/common.py

sys.path.insert(0, str(ROOT / "tests"))
from paper_digits import (  # noqa: E402
    canvas_digit,
    embedded_test_digits,
    paper_digit,
    paper_digits,
    product_photo,
    save,
)

WEIGHTS, FASHION_WEIGHTS = "lenet5-digits", "lenet5-fashion"
FIGURE = ROOT / "docs" / "figures" / "reading.png"


def checkpoint_or_train(given: str | None, tmp: Path, threads: int) -> str:
    """The checkpoint to measure: ``given``, the shipped weights, or one trained now."""
    import classicnets
    from classicnets.train import TrainConfig, train

    if given:
        return given
    try:
        classicnets.load(WEIGHTS)
        return WEIGHTS
    except (classicnets.ClassicNetsError, OSError):
        train(TrainConfig(model="lenet5", threads=threads, quiet=True, out=str(tmp / "lenet5")))
        return str(tmp / "lenet5")


def accuracy(predictor, inputs, labels, chunk: int = 100) -> float:
    got = np.concatenate([predictor.predict(inputs[i:i + chunk]).numpy() for i in range(0, len(inputs), chunk)])
    return float((got == np.asarray(labels)).mean())


def by(files: list, predicted: np.ndarray, key) -> dict[str, float]:
    """Accuracy by a property of how the pages were made."""
    groups: dict[str, list[bool]] = {}
    for (_, label, how), p in zip(files, predicted, strict=True):
        groups.setdefault(key(how), []).append(p == label)
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


def size_bucket(how: dict) -> str:
    """The digit's size on its page, as a share of the page's shorter side: 25-50%, 50-70%, 70-90%."""
    share = how["digit"] / min(how["page"])
    return "25-50%" if share < 0.5 else "50-70%" if share < 0.7 else "70-90%"


def measure_digits(checkpoint: str, n: int, seed: int, tmp: Path) -> dict:
    from classicnets import load

    on, off = load(checkpoint), load(checkpoint, normalize=False)
    images, labels = embedded_test_digits()
    enlarged = np.kron(images[:n], np.ones((1, 4, 4), np.uint8))  # 112 px, as it is but bigger
    files = paper_digits(tmp / "pages", n, seed)
    paths, page_labels = [p for p, _, _ in files], [y for _, y, _ in files]
    start = time.perf_counter()
    predicted = np.concatenate([on.predict(paths[i:i + 100]).numpy() for i in range(0, n, 100)])
    ms = 1000 * (time.perf_counter() - start) / n
    drawn = {}
    for d in range(10):
        p_on, p_off = on.predict_proba(canvas_digit(d))[0], off.predict_proba(canvas_digit(d))[0]
        drawn[str(d)] = {"on": [int(p_on.argmax()), float(p_on.max())],
                         "off": [int(p_off.argmax()), float(p_off.max())]}
    return {
        "clean": {"on": accuracy(on, images, labels), "off": accuracy(off, images, labels), "count": len(images)},
        "enlarged_4x": {"on": accuracy(on, enlarged, labels[:n]), "off": accuracy(off, enlarged, labels[:n]),
                        "count": n},
        "paper": {"on": float((predicted == np.asarray(page_labels)).mean()), "off": accuracy(off, paths, page_labels),
                  "count": n, "seed": seed, "ms_per_image_on": ms,
                  "on_by_size": by(files, predicted, size_bucket),
                  "on_by_angle": by(files, predicted, lambda h: "turned under 5 degrees" if abs(h["angle"]) < 5
                                    else "turned 5-10 degrees"),
                  "on_by_format": by(files, predicted,
                                     lambda h: f"{h['format']}, {'colour' if h['colour'] else 'grey'}")},
        "canvas": drawn,
    }


def measure_fashion(n: int, seed: int, tmp: Path) -> dict | None:
    """Fashion-MNIST's test items photographed, with the shipped lenet5-fashion (None without them)."""
    import classicnets
    from classicnets.data.datasets import load_dataset

    try:
        on, off = classicnets.load(FASHION_WEIGHTS), classicnets.load(FASHION_WEIGHTS, normalize=False)
        test = load_dataset("fashion-mnist", "test")
    except (classicnets.ClassicNetsError, OSError):
        return None
    items, labels = test.images[:n, 0].numpy(), test.labels[:n].numpy()
    rng = np.random.default_rng(seed)
    (tmp / "products").mkdir()
    paths = []
    for i, x in enumerate(items):
        img, how = product_photo(x, rng)
        paths.append(save(img, tmp / "products", f"{i:05d}", how))
    return {"checkpoint": FASHION_WEIGHTS, "count": n, "seed": seed,
            "clean": {"on": accuracy(on, items, labels), "off": accuracy(off, items, labels)},
            "photos": {"on": accuracy(on, paths, labels), "off": accuracy(off, paths, labels)}}


def run(args) -> dict:
    import torch

    from classicnets.checkpoint import build_from_checkpoint
    from classicnets.report import machine_info

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = checkpoint_or_train(args.checkpoint, Path(tmp), args.threads)
        _, meta = build_from_checkpoint(checkpoint, "cpu")
        results = {"machine": machine_info(), "threads": args.threads, "checkpoint": checkpoint,
                   "trained": {k: meta["config"].get(k) for k in ("model", "dataset", "epochs", "seed")},
                   **measure_digits(checkpoint, args.n, args.seed, Path(tmp)),
                   "fashion": None if args.no_fashion else measure_fashion(args.n, args.seed, Path(tmp))}
        if args.figure:
            draw_figure(checkpoint, Path(tmp), args.figure)
    results["goal"] = {"paper_within_points_of_clean": 1.0,
                       "met": round(100 * (results["clean"]["on"] - results["paper"]["on"]), 6) <= 1.0}
    results["seconds"] = time.perf_counter() - start
    return results


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def to_markdown(r: dict) -> str:
    m, t = r["machine"], r["trained"]
    paper, clean = r["paper"], r["clean"]
    lines = [
        "# Real digits: the reading on and off", "",
        f"`benchmarks/bench_real_digits.py`: {r['seconds'] / 60:.1f} min on {m['cpu']}, {r['threads']} thread(s), "
        f"torch {m['torch']}. Checkpoint: `{r['checkpoint']}` ({t['model']} on {t['dataset']}, {t['epochs']} epochs, "
        f"seed {t['seed']}). Reading on: `classicnets.load(checkpoint)`; off: `normalize=False`.", "",
        "| input | reading on | reading off |", "|---|---:|---:|",
        f"| the test split as it is ({clean['count']:,} digits) | {_pct(clean['on'])} | {_pct(clean['off'])} |",
        f"| the first {r['enlarged_4x']['count']:,}, enlarged 4x (112 px, white on black) | "
        f"{_pct(r['enlarged_4x']['on'])} | {_pct(r['enlarged_4x']['off'])} |",
        f"| the first {paper['count']:,}, written on paper and photographed (seed {paper['seed']}) | "
        f"{_pct(paper['on'])} | {_pct(paper['off'])} |",
    ]
    if r.get("fashion"):
        f = r["fashion"]
        lines += [f"| Fashion-MNIST's first {f['count']:,} test items as they are (`{f['checkpoint']}`) | "
                  f"{_pct(f['clean']['on'])} | {_pct(f['clean']['off'])} |",
                  f"| the same, photographed on paper | {_pct(f['photos']['on'])} | {_pct(f['photos']['off'])} |"]
    goal = r["goal"]
    lines += ["", f"GOAL (photographed digits within {goal['paper_within_points_of_clean']:.0f} point of the clean "
              f"split, reading on): {'met' if goal['met'] else 'NOT met'} "
              f"(photographed minus clean: {100 * (paper['on'] - clean['on']):+.1f} points). Reading and predicting "
              f"a page from its file: "
              f"{paper['ms_per_image_on']:.1f} ms.", "",
              "Photographed digits, reading on, by the digit's size on the page: "
              + ", ".join(f"{k} {_pct(v)}" for k, v in paper["on_by_size"].items())
              + "; by file: " + ", ".join(f"{k} {_pct(v)}" for k, v in paper["on_by_format"].items())
              + "; by angle: " + ", ".join(f"{k} {_pct(v)}" for k, v in paper["on_by_angle"].items()) + ".", "",
              "Digits drawn on a white 280 x 280 canvas (black, 18 px, round caps): prediction and probability.", "",
              "| digit | " + " | ".join(r["canvas"]) + " |", "|---|" + "---:|" * len(r["canvas"]),
              *(f"| reading {k} | " + " | ".join(f"{v[k][0]} {_pct(v[k][1])}" for v in r["canvas"].values()) + " |"
                for k in ("on", "off")),
              ""]
    return "\n".join(lines)


def draw_figure(checkpoint: str, tmp: Path, path: Path) -> Path:
    """Pages and drawings as given (top, with the answer of the model given them as they are) and
    what the network sees of them after the reading (below, with its answer)."""
    from matplotlib.figure import Figure
    from PIL import Image

    from classicnets import load
    from classicnets.report import save_figure

    on, off = load(checkpoint), load(checkpoint, normalize=False)
    images, labels = embedded_test_digits()
    rng = np.random.default_rng(7)
    (tmp / "figure").mkdir()
    inputs = []
    for d in (2, 5, 9, 3, 6):  # the first test digit of each, on paper
        i = int(np.flatnonzero(labels == d)[0])
        img, how = paper_digit(images[i], rng)
        inputs.append((save(img, tmp / "figure", f"{i}", how), str(d)))
    inputs += [(canvas_digit(d), str(d)) for d in (1, 4, 7)]
    fig = Figure(figsize=(1.45 * len(inputs), 3.4), layout="constrained")
    axes = fig.subplots(2, len(inputs))
    for (x, truth), top, bottom in zip(inputs, axes[0], axes[1], strict=True):
        shown = Image.open(x) if isinstance(x, Path) else x
        top.imshow(np.asarray(shown.convert("RGB")), interpolation="lanczos")
        bottom.imshow(on.read(x)[0, 0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for ax, predictor in ((top, off), (bottom, on)):
            cls, p = predictor.topk(x, k=1)[0][0]
            ax.set_title(f"{cls} {p:.0%}", fontsize=9, color="green" if cls == truth else "red")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("as given", fontsize=9)
    axes[1, 0].set_ylabel("read: what\nthe network sees", fontsize=9)
    fig.suptitle(f"{checkpoint}: digits on paper and on a canvas, read as MNIST made its digits", fontsize=10)
    return save_figure(fig, path, dpi=110, facecolor="white", metadata={"Software": None})


def main(argv: list[str] | None = None) -> None:
    ap = script_parser(__doc__, "real_digits")
    ap.add_argument("checkpoint", nargs="?", help=f"a run directory or weights name (default: {WEIGHTS}, else "
                                                  f"train one)")
    ap.add_argument("--n", type=int, default=1000, help="photographed digits and Fashion-MNIST items (--quick: 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-fashion", action="store_true", help="leave out the Fashion-MNIST photos")
    ap.add_argument("--figure", nargs="?", const=FIGURE, type=Path, help=f"also draw the figure (default {FIGURE})")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 20
    results = run(args)
    write_results(args.out, "real_digits", results, to_markdown(results), quiet=args.quiet)


if __name__ == "__main__":
    main()
