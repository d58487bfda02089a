"""Every setting of a training run, in one place: ``TrainConfig`` is the ``classicnets train``
command line.

Each field carries its flag's type and help text (:func:`setting`), so :func:`add_train_arguments`
builds the flags in one loop and :func:`config_from_args` reads them back: a new setting is one
edit, here. The same config, resolved, is saved with every checkpoint (``config.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..arguments import key_values, nonneg_float, positive_float, positive_int
from ..checkpoint import check_output
from ..data.imageset import available_memory, format_bytes
from ..errors import ClassicNetsError, InputError
from ..models import model_card
from ..models.checks import activation_bytes, check_input_size
from .recipes import recipe_for
from .schedules import SCHEDULES


def _as_tuple(value):
    return tuple(value) if value is not None else None


def setting(default=None, help: str | None = None, *, flag: str | None = None, convert=None,
            factory=None, **argparse_options):
    """A ``TrainConfig`` field and its command-line flag: ``--NAME`` (underscores become dashes)
    unless ``flag`` says otherwise, with ``argparse_options`` (``type``, ``choices``, ``nargs``,
    ``action``, ``metavar``). ``convert`` turns the parsed value into the field's value."""
    cli = dict(argparse_options, help=help)
    if flag is not None:
        cli["flag"] = flag
    if convert is not None:
        cli["convert"] = convert
    if factory is not None:
        return field(default_factory=factory, metadata={"cli": cli})
    return field(default=default, metadata={"cli": cli})


@dataclass
class TrainConfig:
    """Every setting of a run. ``None`` means: take it from the model's recipe."""

    model: str = setting("lenet5", "a model name (classicnets models)", flag="model")
    # None, not "digits": a data directory alone names no dataset (the folder says what it holds);
    # resolved() takes the embedded digits only when neither is given.
    dataset: str | None = setting(None, "digits (default), mnist, fashion-mnist, cifar10, cifar100")
    data_dir: str | None = setting(
        None, "where the dataset's files are, or a folder of images (DIR/train/CLASS/*.png, "
        "DIR/test/CLASS/*.png) or of IDX files", flag="--data", metavar="DIR")
    epochs: int | None = setting(None, "epochs (default: the recipe's)", type=positive_int)
    batch_size: int | None = setting(None, "images per step (default: the recipe's)", type=positive_int)
    lr: float | None = setting(None, "peak learning rate (default: the recipe's)", type=positive_float)
    optimizer: str | None = setting(None, "default: the recipe's", choices=["sgd", "adamw"])
    momentum: float | None = setting(None, "SGD momentum (default 0.9, or the recipe's)", type=nonneg_float)
    nesterov: bool | None = setting(None, "Nesterov momentum (default: the recipe's)",
                                    action=argparse.BooleanOptionalAction)
    weight_decay: float | None = setting(None, "default 0, or the recipe's", type=nonneg_float)
    schedule: str | None = setting(None, "learning-rate schedule (default: the recipe's)", choices=list(SCHEDULES))
    milestones: tuple[float, ...] | None = setting(
        None, "step schedule: fractions of training", nargs="+", type=positive_float, convert=_as_tuple)
    milestone_iterations: tuple[int, ...] | None = setting(
        None, "step schedule: the iterations to divide the lr at (He et al.: 32000 48000)",
        nargs="+", type=positive_int, metavar="N", convert=_as_tuple)
    iterations: int | None = setting(
        None, "stop after N iterations (He et al.: 64000); the number of epochs follows from it",
        type=positive_int, metavar="N")
    warmup_epochs: float | None = setting(None, "linear warm-up, in epochs (default 0)", type=nonneg_float)
    warmup_lr: float | None = setting(None, "the warm-up's learning rate", type=positive_float)
    warmup_until_error: float | None = setting(
        None, "hold --warmup-lr until the training error is below E (He et al., ResNet-110: 0.8)",
        type=positive_float, metavar="E")
    label_smoothing: float | None = setting(
        None, "default 0, or the recipe's (LeNet-5 on Fashion-MNIST: 0.1)", type=nonneg_float)
    grad_clip: float | None = setting(None, "clip the gradient norm to this", type=positive_float)
    augment: str | None = setting(None, "none, crop, flip or crop+flip (flips are never used on digits)")
    precision: str = setting("auto", "autocast precision: auto picks bf16 where the hardware has it and the net "
                             "is large enough", choices=["auto", "fp32", "bf16", "fp16"])
    channels_last: bool | None = setting(
        None, "channels-last memory format (default: the recipe's; on for LeNet-5)",
        action=argparse.BooleanOptionalAction)
    compile: bool = setting(False, "torch.compile the model", action="store_true")
    device: str = setting("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    threads: int | None = setting(None, "CPU threads (default: torch's)", type=positive_int)
    seed: int = setting(0, "seed of the weights, the batch order and the augmentation", type=int)
    deterministic: bool = setting(True, "allow faster non-deterministic kernels", flag="--nondeterministic",
                                  action="store_false")
    input_size: tuple[int, int] | None = setting(
        None, "train at this size instead of the model's native one", nargs=2, type=positive_int,
        metavar=("H", "W"), convert=_as_tuple)
    train_limit: int | None = setting(None, "use only the first N training images", type=positive_int)
    test_limit: int | None = setting(None, "test on only the first N test images (quicker, noisier)",
                                     type=positive_int)
    holdout: int | None = setting(
        None, "keep the last N training images out as a validation set (He et al.: 5000 of 50000)",
        type=positive_int, metavar="N")
    model_kwargs: dict = setting(help="builder argument, e.g. shortcut=B", flag="--model-arg", factory=dict,
                                 action="append", metavar="KEY=VALUE", convert=key_values)
    freeze_features: bool = setting(False, "train the head only", action="store_true")
    init_from: str | None = setting(None, "start from this checkpoint's backbone (transfer): a run directory or "
                                      "shipped weights, e.g. lenet5-digits", metavar="CHECKPOINT")
    out: str | None = setting(None, "run directory (default runs/MODEL-DATASET-TIMESTAMP)", metavar="DIR")
    resume: bool = setting(False, "continue the run in --out from its last epoch", action="store_true")
    force: bool = setting(False, "replace the run already in --out (its files go when the new run's first "
                          "epoch is saved)", action="store_true")
    quiet: bool = setting(False, "print nothing but errors", action="store_true")
    eval_every: int = setting(1, "evaluate on the test split every N epochs (and after the last)",
                              type=positive_int, metavar="N")

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` filled from the recipe."""
        values = dataclasses.asdict(self)
        if values["dataset"] is None and values["data_dir"] is None:
            values["dataset"] = "digits"
        recipe = recipe_for(self.model, values["dataset"])
        for key, value in recipe.items():
            if values.get(key) is None:
                values[key] = value
        defaults = dict(epochs=10, momentum=0.9, nesterov=False, weight_decay=0.0, milestones=(0.5, 0.75),
                        warmup_epochs=0.0, augment="none", channels_last=False, label_smoothing=0.0)
        for key, value in defaults.items():
            if values.get(key) is None:
                values[key] = value
        return TrainConfig(**values)


# The files a run directory holds: --out naming a folder with any of them names a run.
RUN_FILES = ("model.safetensors", "model.json", "train_state.safetensors", "metrics.jsonl", "config.json",
             "curves.png")
# A training step keeps every layer's output for its backward pass, and the backward pass makes a
# gradient of the same size for each: with the optimiser's and autograd's own buffers, about 3x the
# forward activations. A run that would need more memory than the machine has is refused up front.
ACTIVATION_FACTOR = 3


def check_config(cfg: TrainConfig) -> None:
    """Everything about a resolved config that can be checked without data or files: the model's
    arguments and input size, the memory a batch needs, and that --out names no other run. Called
    before anything is read or written, so a mistake costs nothing."""
    card = model_card(cfg.model)
    size = tuple(cfg.input_size) if cfg.input_size else tuple(card.input_size[1:])
    check_input_size(cfg.model, (card.input_size[0], *size), cfg.model_kwargs, channels_in_flag=False)
    needed = ACTIVATION_FACTOR * cfg.batch_size * activation_bytes(cfg.model, (card.input_size[0], *size),
                                                                   cfg.model_kwargs)
    free = available_memory()
    if free is not None and needed > free:
        raise InputError(f"--batch-size {cfg.batch_size} at {size[0]}x{size[1]}: a training step of {cfg.model} "
                         f"needs about {format_bytes(needed)} of memory, and {format_bytes(free)} is available: "
                         f"use a smaller --batch-size or --input-size")
    if cfg.out:
        check_output(Path(cfg.out) / "model.safetensors", "--out DIR")  # --out naming a file, not a folder
    if cfg.out and not cfg.resume:
        found = [name for name in RUN_FILES if (Path(cfg.out) / name).exists()]
        if found and not cfg.force:
            raise ClassicNetsError(f"--out {cfg.out} holds a run already ({', '.join(found)}): continue it with "
                                   f"--resume, write to another --out, or replace it with --force")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field, in the field order, from the field's own metadata."""
    for f in dataclasses.fields(TrainConfig):
        options = dict(f.metadata["cli"])
        flag = options.pop("flag", "--" + f.name.replace("_", "-"))
        options.pop("convert", None)
        if not flag.startswith("-"):
            parser.add_argument(flag, **options)  # positional: the model
            continue
        # Unset flags stay None (the recipe decides), but for settings whose default is no recipe's.
        has_default = f.default is not dataclasses.MISSING and f.default is not None
        default = f.default if has_default else None
        parser.add_argument(flag, dest=f.name, default=default, **options)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` that parsed ``classicnets train`` arguments describe."""
    values = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name)
        convert = f.metadata["cli"].get("convert")
        values[f.name] = convert(value) if convert else value
    return TrainConfig(**values)
