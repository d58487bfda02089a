"""The command line: argument parsing only; every command is one library call."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .arguments import key_values, port_number, positive_int
from .errors import ClassicNetsError
from .memory import keep_freed_memory
from .train.config import add_train_arguments
from .version import __version__

# Exit codes, the same for every command (docs/reliability.md, "Exit codes"). A crash (a bug) is
# Python's own 1 with its traceback; everything the user can fix is 2 or above, with one line.
EXIT_OK = 0
EXIT_USAGE = 2  # a bad argument or input file: argparse's own code, and every ClassicNetsError
EXIT_SOME_FAILED = 3  # predict: some inputs could not be read, the others were predicted
EXIT_ALL_FAILED = 4  # predict: no input could be read
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_BROKEN_PIPE = 141  # the reader went away (128 + SIGPIPE)

CHECKPOINT_HELP = "a run directory, its model.safetensors, or the name of shipped weights (classicnets weights)"


# ---- commands -----------------------------------------------------------------------------

def cmd_models(args) -> int:
    from .zoo_table import models_table

    rows = models_table(args.pattern, compute=not args.fast)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    from .zoo_table import format_card, format_models_table

    print(format_models_table(rows))
    if len(rows) == 1:  # one model named: show its whole card
        print()
        print(format_card(rows[0]["name"]))
    return 0


def _checked_model(args) -> dict:
    """The builder arguments of ``--model-arg``, after checking them and ``--input-size`` against the
    model without building it for real (classicnets.models.checks): a mistake costs nothing."""
    from .models.checks import check_input_size, check_model_args

    kwargs = key_values(args.model_arg)
    check_model_args(args.model, kwargs)
    if args.input_size:
        check_input_size(args.model, args.input_size, kwargs)
    return kwargs


def cmd_summary(args) -> int:
    from .summary_table import model_summary

    kwargs = _checked_model(args)
    # Shapes and counts only: on the meta device nothing is allocated, whatever the input size
    # (the tables are identical to a real forward's; tests/test_summary_table.py).
    s = model_summary(args.model, tuple(args.input_size) if args.input_size else None, args.num_classes,
                      device="meta", **kwargs)
    print(json.dumps(s.to_dict(), indent=2) if args.format == "json" else s)
    return 0


def cmd_cost(args) -> int:
    from .costs import format_cost_table, parse_layer, stack_cost

    layers = [parse_layer(spec) for spec in args.layers]
    h, w, c = args.input
    print(format_cost_table(stack_cost((h, w, c), layers), in_shape=(h, w, c)))
    return 0


def cmd_train(args) -> int:
    from .train import config_from_args, train

    if args.resume and not args.out:
        raise ClassicNetsError("--resume needs --out DIR: the run directory to continue")
    train(config_from_args(args))
    return 0


def cmd_evaluate(args) -> int:
    from .errors import OutputError
    from .evaluate import evaluate_checkpoint, format_evaluation, save_confusion

    result = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, data_dir=args.data,
                                 split=args.split, out=args.out, device=args.device, figure=False,
                                 normalize=not args.no_normalize)
    # The numbers first, then the figure: they are the result, and a figure that cannot be
    # written (a read-only run folder) must not lose them; it is a warning, not a failure.
    print(json.dumps(result, indent=2) if args.format == "json" else format_evaluation(result), flush=True)
    try:
        png = save_confusion(result)
    except OutputError as exc:
        print(f"classicnets evaluate: warning: {exc}", file=sys.stderr)
        return EXIT_OK
    if args.format != "json":
        print(f"\nwrote {png}")
    return EXIT_OK


def cmd_predict(args) -> int:
    from .data.folder import image_files
    from .predict import load

    predictor = load(args.checkpoint, device=args.device, fast=args.fast or args.precision == "bf16",
                     precision=args.precision, normalize=not args.no_normalize)
    if predictor.fast_path is not None:  # on stderr: stdout stays the predictions (--format json)
        print(f"classicnets predict: {predictor.fast_path.summary()}", file=sys.stderr)
    paths: list[Path] = []
    for item in args.inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(image_files(p))  # the image-folder dataset's rule
        else:
            paths.append(p)
    failures = 0
    results = []
    for p in paths:
        try:
            top = predictor.topk(p, k=args.top)[0]
        except (ClassicNetsError, OSError) as exc:
            failures += 1
            print(f"{p}: error: {exc}", file=sys.stderr)
            results.append({"file": str(p), "error": str(exc)})
            continue
        results.append({"file": str(p), "top": [{"class": c, "probability": q} for c, q in top]})
        if args.format != "json":
            print(f"{p}: " + ", ".join(f"{c} {q:.1%}" for c, q in top))
    if args.format == "json":
        print(json.dumps(results, indent=2))
    if not paths:
        raise ClassicNetsError("predict: no image files given (or none found in the directories given)")
    return EXIT_ALL_FAILED if failures == len(paths) else (EXIT_SOME_FAILED if failures else EXIT_OK)


def cmd_export(args) -> int:
    from .export import export_checkpoint

    path, check = export_checkpoint(args.checkpoint, args.format, args.output, verify=not args.no_check)
    print(f"wrote {path}")
    if check:
        print(check)
    return 0


def cmd_draw(args) -> int:
    from .checkpoint import output_file
    from .drawing import draw, save

    output = output_file(args.output, Path(f"{args.model}.svg"))
    if output.suffix.lower() not in (".svg", ".png", ".pdf"):
        raise ClassicNetsError(f"-o {output}: expected a .svg, .png or .pdf file name")
    try:
        fig = draw(args.model, tuple(args.input_size) if args.input_size else None, **_checked_model(args))
    except ValueError as exc:  # an input size the model cannot take
        raise ClassicNetsError(str(exc)) from exc
    print(f"wrote {save(fig, output, hint='-o FILE')}")
    return 0


def cmd_show(args) -> int:
    from .checkpoint import home
    from .pictures import show

    out = Path(args.output) if args.output else home(args.checkpoint)
    for fig in show(args.checkpoint, args.image, out=out, channels=args.channels, device=args.device,
                    normalize=not args.no_normalize):
        print(f"wrote {out / fig.get_label()}.png")
    return 0


def cmd_explore(args) -> int:
    from .explore import serve

    return serve(args.checkpoint, host=args.host, port=args.port, open_browser=not args.no_browser)


def cmd_weights(args) -> int:
    from .weights import list_weights, weights_card

    cards = [weights_card(name) for name in list_weights()]
    if args.format == "json":
        print(json.dumps(cards, indent=2))
        return 0
    rows = [("name", "model", "trained on", "test accuracy", "params", "epochs", "seconds"),
            *[(c["name"], c["model"], c["dataset"], f"{c['test_accuracy']:.2%}", f"{c['params']:,}", str(c["epochs"]),
               f"{c['train_seconds']:,.0f}") for c in cards]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))))
    print("\nUse a name wherever a checkpoint goes: classicnets predict lenet5-digits digit.png; each card "
          "(--format json) has the command that reproduces the weights (scripts/train_weights.py) and their SHA-256.")
    return 0


def cmd_datasets(args) -> int:
    from .data import dataset_info, list_datasets

    for name in list_datasets():
        info = dataset_info(name)
        print(f"{name:<14} {info}")
    return 0


def cmd_experiment(args) -> int:
    from .experiments import describe_experiment, list_experiments, run_experiment

    if args.list or not args.name:
        for name in list_experiments():
            print(f"{name:<12} {describe_experiment(name)}")
        return 0
    out = args.out or f"runs/experiments/{args.name}"
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in key_values(args.set, "--set").items()}
    if args.data:
        settings["data_dir"] = args.data
    doc = run_experiment(args.name, protocol=args.protocol, out=out, **settings)
    print(f"{doc['title']} ({doc['protocol']} protocol, {doc['seconds']:.0f} s)")
    print(doc["conclusion"])
    print(f"wrote {out}/results.json, report.md, " + ", ".join(doc["figures"]))
    return 0


# ---- parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="classicnets", description="The landmark convolutional networks, exact to their papers: inspect, "
        "train, evaluate, predict, draw, and reproduce their case studies.")
    p.add_argument("--version", action="version", version=f"classicnets {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_model_commands(sub)
    _add_checkpoint_commands(sub)
    _add_study_commands(sub)
    return p


def _add_model_commands(sub) -> None:
    """Commands about an architecture, no weights needed: models, summary, cost, draw."""
    s = sub.add_parser("models", help="list the models: paper, input size, parameters, multiply-adds")
    s.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*'")
    s.add_argument("--fast", action="store_true", help="published figures only; do not build the models")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("summary", help="layer-by-layer table: output shape (H x W x C), parameters, multiply-adds")
    s.add_argument("model")
    s.add_argument("--input-size", nargs=3, type=positive_int, metavar=("C", "H", "W"))
    s.add_argument("--num-classes", type=positive_int)
    s.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="builder argument, e.g. shortcut=B")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("cost", help="multiply-adds of a stack of convolutions (the 1x1 bottleneck example)")
    s.add_argument("--input", nargs=3, type=positive_int, metavar=("H", "W", "C"), default=[28, 28, 192])
    s.add_argument("layers", nargs="*", default=["32x5"], metavar="OUTxK",
                   help="layers as OUT_CHANNELSxKERNEL, e.g. 16x1 32x5 (default: 32x5)")
    s.set_defaults(func=cmd_cost)

    s = sub.add_parser("draw", help="draw a network: feature-map volumes, stages and shortcuts, as SVG or PNG")
    s.add_argument("model")
    s.add_argument("--input-size", nargs=3, type=positive_int, metavar=("C", "H", "W"))
    s.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="builder argument, e.g. shortcut=B")
    s.add_argument("-o", "--output", metavar="FILE", help="a .svg, .png or .pdf file, or a folder (default: MODEL.svg)")
    s.set_defaults(func=cmd_draw)


def _add_checkpoint_commands(sub) -> None:
    """Commands that make or use a trained checkpoint: train, evaluate, predict, export, show, explore."""
    s = sub.add_parser("train", help="train a model on a dataset")
    add_train_arguments(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a checkpoint")
    s.add_argument("checkpoint", help=CHECKPOINT_HELP)
    s.add_argument("--dataset")
    s.add_argument("--data", metavar="DIR")
    s.add_argument("--split", default="test", choices=["train", "test"])
    s.add_argument("--out", metavar="DIR", help="where to write confusion.png (default: the checkpoint's directory)")
    s.add_argument("--device", default="auto")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--no-normalize", action="store_true",
                   help="--data DIR of your own images: read them as they are, not as the checkpoint's dataset was "
                        "made")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="top-k classes of images")
    s.add_argument("checkpoint", help=CHECKPOINT_HELP)
    s.add_argument("inputs", nargs="+", metavar="IMAGE|DIR")
    s.add_argument("--top", type=positive_int, default=3)
    s.add_argument("--fast", action="store_true",
                   help="serve the fastest CPU path (eager, inductor, ONNX Runtime) that agrees with the model, "
                        "found by a short probe the first time (seconds to a minute; cached) and named on stderr")
    s.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: let bfloat16 compete in the --fast probe (implies --fast; about 2x fp32 on CPUs with "
                        "native bf16, left out on others)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.add_argument("--no-normalize", action="store_true",
                   help="predict the images as they are; by default a model of MNIST's digits or Fashion-MNIST reads "
                        "them as its dataset made its images: light on black, cropped, size-normalised, centred")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript, checked against PyTorch")
    s.add_argument("checkpoint", help=CHECKPOINT_HELP)
    s.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    s.add_argument("-o", "--output", help="output file, or a folder to write the default name into "
                   "(default: next to the checkpoint)")
    s.add_argument("--no-check", action="store_true", help="skip the output comparison")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("show", help="first-layer filters and each stage's feature maps of a trained model on an image")
    s.add_argument("checkpoint", help=CHECKPOINT_HELP)
    s.add_argument("image")
    s.add_argument("-o", "--output", metavar="DIR", help="where to write the PNGs (default: the checkpoint's folder)")
    s.add_argument("--channels", type=positive_int, default=16, help="feature maps per stage (the most active)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--no-normalize", action="store_true",
                   help="show the network the image as it is, not read as its dataset made its images")
    s.set_defaults(func=cmd_show)
    _add_explore_command(sub)


def _add_explore_command(sub) -> None:
    """The local explorer: a web page served from this machine."""
    s = sub.add_parser("explore", help="the networks in a browser: draw a digit and watch every layer, "
                                       "architectures, residual blocks, the 1x1 arithmetic")
    s.add_argument("checkpoint", nargs="?", help=CHECKPOINT_HELP + " (default: lenet5-digits)")
    s.add_argument("--port", type=port_number, default=8000, help="0: any free port (default: 8000)")
    s.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default 127.0.0.1: this machine only; any other is "
                        "reachable by others, and warned about)")
    s.add_argument("--no-browser", action="store_true", help="print the address only; do not open a browser")
    s.set_defaults(func=cmd_explore)


def _add_study_commands(sub) -> None:
    """The datasets, and the case studies of the papers' claims."""
    s = sub.add_parser("weights", help="list the trained weights in the box: usable wherever a checkpoint goes")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.set_defaults(func=cmd_weights)

    s = sub.add_parser("datasets", help="list the built-in datasets")
    s.set_defaults(func=cmd_datasets)

    s = sub.add_parser("experiment", help="run a case study (results.json, figures, report.md); --list shows them")
    s.add_argument("name", nargs="?", help="experiment name (see --list)")
    s.add_argument("--list", action="store_true", help="list the experiments")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="protocol", action="store_const", const="quick",
                   help="the quick protocol (the default): seconds to minutes on a laptop CPU")
    g.add_argument("--protocol", choices=["quick", "cpu", "paper"], default="quick",
                   help="'paper': full datasets, more seeds and epochs, where the experiment defines it; "
                        "'cpu': the longer run for a laptop where the experiment defines one (degradation, bottleneck; "
                        "about an hour on 2 cores)")
    s.add_argument("--out", help="output folder (default runs/experiments/NAME)")
    s.add_argument("--data", metavar="DIR", help="where the experiment's dataset is (e.g. CIFAR-10 for degradation's "
                                                 "paper protocol), if not in the cache")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a setting of the experiment, e.g. --set depths=[20,56,110] --set seeds=[0,1]")
    # Both flags write "protocol"; argparse would take the default of the first (None), so set it here.
    s.set_defaults(func=cmd_experiment, protocol="quick")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The command owns its process: reuse freed tensor memory instead of faulting in fresh pages
    # for every step or batch (classicnets.memory; CLASSICNETS_KEEP_FREED_MEMORY=0 turns it off).
    keep_freed_memory()
    try:
        return args.func(args)
    except ClassicNetsError as exc:
        print(f"classicnets {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`classicnets models | head`): stop quietly, as Unix tools do.
        # stdout is pointed at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
