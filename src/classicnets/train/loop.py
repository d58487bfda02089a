"""The training loop: data -> model -> optimiser -> metrics, checkpoints and curves.

``train(TrainConfig(...))`` is what ``classicnets train`` calls. Everything that is not set in
the config comes from the model's recipe (``recipes.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..data.pipeline import make_loader, parse_augment
from ..data.sources import head, hold_out, load_split
from ..device import autocast_dtype, pick_device, process_settings
from ..distributed import DistInfo, all_reduce_sum, barrier, init_from_env, shutdown
from ..errors import ClassicNetsError, TrainingError
from ..evaluate import evaluate_model
from ..memory import keep_freed_memory
from ..models import create_model, model_card
from ..report import plot_curves
from ..version import __version__
from .config import RUN_FILES, TrainConfig, check_config
from .progress import Progress
from .schedules import ErrorWarmup, make_schedule
from .step import make_optimizer, train_step


@dataclass
class TrainResult:
    out_dir: Path
    history: list[dict]
    test_accuracy: float
    train_seconds: float
    model: nn.Module
    split_sizes: dict[str, int] = field(default_factory=dict)  # images trained on / validated / tested


def _default_out(cfg: TrainConfig) -> Path:
    data = cfg.dataset or Path(cfg.data_dir).name
    return Path("runs") / f"{cfg.model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset`` (or ``cfg.data_dir``); see docs/training.md."""
    if cfg.resume and cfg.out:
        cfg = _with_run_settings(cfg)
    cfg = cfg.resolved()
    device = pick_device(cfg.device)
    check_config(cfg)
    dist_info = init_from_env(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    # Reuse freed activation buffers rather than fault in fresh pages every step (classicnets.memory:
    # ResNet-20 takes tens of thousands of page faults a step without it). It stays set: glibc
    # cannot be put back, and it changes only when memory returns to the OS.
    keep_freed_memory()
    clean = False
    try:
        with process_settings(device, threads=cfg.threads, deterministic=cfg.deterministic):
            result = _train(cfg, device, dist_info)
        clean = True
        return result
    except RuntimeError as exc:
        if dist_info.enabled and _lost_peer(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(
                f"rank {dist_info.rank} lost contact with the other processes ({first[:300]}): another rank "
                f"died or stopped answering. The last finished epoch's checkpoint in {cfg.out or 'the run directory'} "
                f"is kept: restart all ranks with --resume to continue the run"
            ) from None
        raise
    finally:
        shutdown(dist_info, clean=clean)


# Settings of the machine or the invocation, not of the run: a resumed run never takes them from it.
_INVOCATION = ("out", "resume", "force", "threads", "device", "quiet", "init_from")


def _with_run_settings(cfg: TrainConfig) -> TrainConfig:
    """``--resume`` continues the run in ``cfg.out``: every setting left unset comes from that run,
    not from today's recipe (which may have changed since: LeNet-5's Fashion-MNIST recipe did).
    Settings given explicitly still win, and ``_resume`` refuses those that would make it another run."""
    path = Path(cfg.out) / ckpt.STATE_FILE
    if not path.is_file():
        return cfg  # _resume says so, clearly
    saved = ckpt.read_meta(path).get("config", {})
    values = dataclasses.asdict(cfg)
    for key, value in values.items():
        if value is None and key not in _INVOCATION and saved.get(key) is not None:
            values[key] = tuple(saved[key]) if isinstance(saved[key], list) else saved[key]
    return TrainConfig(**values)


def _lost_peer(exc: RuntimeError) -> bool:
    """Whether an error from a collective says a peer is gone (gloo: connection reset or closed;
    any backend: the process group's timeout)."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        s in text for s in ("gloo", "NCCL", "Connection reset", "Connection closed", "timed out", "Timed out"))


@dataclass
class Run:
    """Everything one run is made of, built once by :func:`_setup`; the epochs advance ``step``,
    ``history`` and ``train_seconds``."""

    cfg: TrainConfig
    device: torch.device
    dist_info: DistInfo
    log: Callable[..., None]
    splits: dict  # "train", "test" and, with --holdout, "validation": ImageSet or StreamedSet
    classes: list[str]
    model: nn.Module  # the model itself: its state_dict is what is saved
    step_model: nn.Module  # what the step runs: the model, wrapped by DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    schedule: Callable[[int], float]
    warmup: ErrorWarmup
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    loaders: dict  # split name -> BatchLoader
    out: Path
    meta: dict
    history: list[dict]
    start_epoch: int
    step: int = 0
    lr: float = 0.0
    train_seconds: float = 0.0


def _train(cfg: TrainConfig, device: torch.device, dist_info: DistInfo) -> TrainResult:
    run = _setup(cfg, device, dist_info)
    for epoch in range(run.start_epoch, run.cfg.epochs):
        record = _train_epoch(run, epoch)
        _end_epoch(run, epoch, record)
    return _finish(run)


def _setup(cfg: TrainConfig, device: torch.device, dist_info: DistInfo) -> Run:
    """Data, model, optimiser, schedule and run directory, in the order that fixes the random
    numbers each one draws (a run is bit-identical to itself, and a resumed run to an uninterrupted one)."""
    log = print if (dist_info.is_main and not cfg.quiet) else (lambda *a, **k: None)
    torch.manual_seed(cfg.seed)
    splits, size = _load_splits(cfg)
    classes = list(splits["train"].classes)
    model = _build_model(cfg, splits["train"].image_size[0], len(classes), device, dist_info)
    loaders = _make_loaders(cfg, splits, size, device, dist_info)
    optimizer = make_optimizer(cfg, model)
    cfg, schedule, warmup = _make_schedule(cfg, len(loaders["train"]))
    amp_dtype = autocast_dtype(cfg.precision, device, cfg.model)
    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    meta = _run_meta(cfg, splits["train"], classes, size)
    start_epoch, history = 0, []
    if cfg.resume:
        start_epoch, history = ckpt.resume(out, model, optimizer, cfg)
        log(f"resuming {out} after epoch {start_epoch}")
        warmup.restore(history)
    if dist_info.is_main and cfg.resume:
        _open_run_dir(out, meta, start_epoch, model, optimizer, history)
    step_model = model
    if dist_info.enabled:
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    step_model = torch.compile(step_model) if cfg.compile else step_model
    run = Run(cfg, device, dist_info, log, splits, classes, model, step_model, optimizer, schedule, warmup, amp_dtype,
              torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None, loaders, out, meta, history,
              start_epoch, step=start_epoch * len(loaders["train"]),
              train_seconds=sum(h.get("epoch_seconds", 0.0) for h in history))
    run.lr = schedule(run.step)
    log(_describe(run))
    return run


def _load_splits(cfg: TrainConfig) -> tuple[dict, tuple[int, int]]:
    """The train and test splits at the model's input size (or ``--input-size``), the validation
    split held out of the training images, and the size."""
    card = model_card(cfg.model)
    size = tuple(cfg.input_size) if cfg.input_size else tuple(card.input_size[1:])
    train_set = load_split(cfg.dataset, cfg.data_dir, "train", size=size, channels=card.input_size[0])
    test_set = load_split(cfg.dataset, cfg.data_dir, "test", size=size, channels=card.input_size[0])
    if train_set.classes != test_set.classes:
        raise ClassicNetsError(
            f"train and test splits disagree on the classes: {train_set.classes} vs {test_set.classes}")
    splits = {"test": head(test_set, cfg.test_limit) if cfg.test_limit else test_set}
    if cfg.holdout:
        train_set, splits["validation"] = hold_out(train_set, cfg.holdout)
    splits["train"] = head(train_set, cfg.train_limit) if cfg.train_limit else train_set
    return splits, size


def _build_model(cfg: TrainConfig, in_channels: int, num_classes: int, device: torch.device,
                 dist_info: DistInfo) -> nn.Module:
    model = create_model(cfg.model, num_classes=num_classes, in_channels=in_channels, **cfg.model_kwargs)
    if dist_info.rank > 0:
        # Same initial weights on every rank (DDP also broadcasts rank 0's), but each rank its
        # own dropout masks from here on.
        torch.manual_seed(cfg.seed + 1_000_003 * dist_info.rank)
    if cfg.init_from:
        ckpt.load_backbone(model, cfg.init_from)
    if cfg.freeze_features:
        model.freeze_features()
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _make_loaders(cfg: TrainConfig, splits: dict, size, device: torch.device, dist_info: DistInfo) -> dict:
    """Every split normalised with the training images' mean and std; each rank its share."""
    train_set = splits["train"]
    common = dict(mean=train_set.mean, std=train_set.std, size=size, device=device,
                  channels_last=cfg.channels_last, rank=dist_info.rank, world_size=dist_info.world_size)
    loaders = {"train": make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                    augment=parse_augment(cfg.augment, cfg.dataset), drop_last=dist_info.enabled,
                                    **common)}
    eval_batch = max(256, cfg.batch_size) // dist_info.world_size * dist_info.world_size
    for name in ("test", "validation"):
        if name in splits:
            loaders[name] = make_loader(splits[name], eval_batch, **common)
    return loaders


def _make_schedule(cfg: TrainConfig, steps_per_epoch: int) -> tuple[TrainConfig, Callable, ErrorWarmup]:
    """The learning rate of every step, and He et al.'s warm-up by training error where asked for.
    An iteration-based protocol (He et al. 2015: stop at 64k) gets as many epochs as it takes, the
    last one cut short: the returned config says how many."""
    if cfg.iterations:
        cfg = dataclasses.replace(cfg, epochs=math.ceil(cfg.iterations / steps_per_epoch))
    total_steps = cfg.iterations or steps_per_epoch * cfg.epochs
    milestones = (list(cfg.milestone_iterations) if cfg.milestone_iterations
                  else [int(round(m * total_steps)) for m in cfg.milestones])
    if cfg.warmup_until_error is not None and not 0 < cfg.warmup_until_error <= 1:
        raise ClassicNetsError(f"--warmup-until-error {cfg.warmup_until_error}: expected a training error "
                               f"in (0, 1], e.g. 0.8 (He et al. 2015 for ResNet-110)")
    warmup_steps = 0 if cfg.warmup_until_error is not None else int(round(cfg.warmup_epochs * steps_per_epoch))
    schedule = make_schedule(cfg.schedule, cfg.lr, total_steps, warmup_steps=warmup_steps,
                             warmup_lr=cfg.warmup_lr, milestones=milestones)
    warmup = ErrorWarmup(cfg.warmup_until_error, cfg.warmup_lr if cfg.warmup_lr is not None else cfg.lr / 10)
    return cfg, schedule, warmup


def _run_meta(cfg: TrainConfig, train_set, classes: list[str], size) -> dict:
    """What a checkpoint says about itself: enough to rebuild the model and read inputs as in training."""
    in_channels = train_set.image_size[0]
    return {
        "format": ckpt.FORMAT, "package_version": __version__, "model": cfg.model,
        "model_kwargs": cfg.model_kwargs, "num_classes": len(classes), "in_channels": in_channels,
        "classes": classes, "input_size": [in_channels, *size],
        "data_size": list(train_set.image_size[1:]), "mean": list(train_set.mean),
        "std": list(train_set.std), "dataset": cfg.dataset,
        "data_dir": str(Path(cfg.data_dir).resolve()) if cfg.data_dir else None,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()},
    }


def _open_run_dir(out: Path, meta: dict, start_epoch: int, model: nn.Module, optimizer, history: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Left by a run killed in the middle of a write: ours (.NAME.tmp-PID) and the one
    # safetensors writes through before renaming it to ours (.tmpXXXXXX).
    for stale in [*out.glob(".*.tmp-*"), *out.glob(".tmp*")]:
        if stale.is_file():
            stale.unlink(missing_ok=True)
    ckpt.atomic_write_text(out / "config.json", json.dumps(meta["config"], indent=2))
    if start_epoch and ckpt.files_behind(out, start_epoch):
        # A kill after the training state was written but before metrics.jsonl or the model
        # caught up leaves them one epoch behind; after the last epoch nothing would rewrite them.
        ckpt.save_epoch(out, model, optimizer, meta, history)


def _describe(run: Run) -> str:
    cfg, splits, dist_info = run.cfg, run.splits, run.dist_info
    val = splits.get("validation")
    return (f"training {cfg.model} ({sum(p.numel() for p in run.model.parameters()):,} params) on "
            f"{splits['train'].name}: {len(splits['train'].labels):,} train"
            f"{f' / {len(val.labels):,} validation' if val is not None else ''} / {len(splits['test'].labels):,} "
            f"test images, {cfg.epochs} epochs{f' ({cfg.iterations:,} iterations)' if cfg.iterations else ''}, "
            f"batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr} {cfg.schedule}, "
            f"device {run.device}{f' x{dist_info.world_size}' if dist_info.enabled else ''}, "
            f"{torch.get_num_threads()} threads")


def _train_epoch(run: Run, epoch: int) -> dict:
    """One pass over the training split; the epoch's record (loss, accuracy, time) so far."""
    cfg, dist_info, loader = run.cfg, run.dist_info, run.loaders["train"]
    run.model.train()
    loader.set_epoch(epoch)
    progress = Progress(dist_info.is_main and not cfg.quiet, loader.num_samples, epoch + 1, cfg.epochs)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.long, device=run.device)
    seen = 0
    t0 = time.perf_counter()
    for x, y in loader:
        if cfg.iterations and run.step >= cfg.iterations:
            break
        run.lr = run.warmup.lr if run.warmup.active else run.schedule(run.step)
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr
        logits, loss = train_step(run.step_model, run.optimizer, x, y, label_smoothing=cfg.label_smoothing,
                                  amp_dtype=run.amp_dtype, scaler=run.scaler, grad_clip=cfg.grad_clip)
        run.step += 1
        hits = (logits.detach().argmax(1) == y).sum()
        loss_sum += loss.detach().double() * len(y)
        correct += hits
        seen += len(y)
        if run.warmup.active:
            run.warmup.update(hits, len(y), run.step, dist_info)
        # Every few steps rather than every step: reading the loss costs a synchronisation
        # (and on CPU ~10% of a LeNet-5 step); the epoch-end check catches the rest.
        if run.step % 25 == 0 and not torch.isfinite(loss_sum):
            _stop_non_finite(run, epoch)
        if progress.update(len(y) * dist_info.world_size):
            rate = seen * dist_info.world_size / (time.perf_counter() - t0)
            progress.show(loss=f"{loss.item():.3f}", acc=f"{float(correct) / seen:.3f}", img_s=f"{rate:,.0f}")
    progress.close()
    stats = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=run.device)])
    all_reduce_sum(stats, dist_info)
    train_loss, train_acc = float(stats[0] / stats[2]), float(stats[1] / stats[2])
    # The epoch's last update can make the weights non-finite while its loss was still finite.
    if not math.isfinite(train_loss) or not _all_finite(run.model):
        _stop_non_finite(run, epoch)
    epoch_seconds = time.perf_counter() - t0
    run.train_seconds += epoch_seconds
    record = {"epoch": epoch + 1, "step": run.step, "lr": run.lr, "train_loss": train_loss,
              "train_accuracy": train_acc, "epoch_seconds": epoch_seconds,
              "images_per_second": float(stats[2]) / epoch_seconds}
    if run.warmup.ended_at is not None:
        record["warmup_end_step"] = run.warmup.ended_at
    return record


def _end_epoch(run: Run, epoch: int, record: dict) -> None:
    """Evaluate when due, save the epoch (rank 0), say how it went, and wait for the other ranks."""
    cfg = run.cfg
    if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
        for split, prefix in (("validation", "val"), ("test", "test")):
            if split in run.loaders:
                ev = evaluate_model(run.model, run.loaders[split], len(run.classes), amp_dtype=run.amp_dtype,
                                    dist_info=run.dist_info)
                record.update({f"{prefix}_loss": ev["loss"], f"{prefix}_accuracy": ev["accuracy"]})
    run.history.append(record)
    if run.dist_info.is_main:
        if len(run.history) == 1 and not run.cfg.resume:
            # A fresh run writes nothing before its first epoch is done: a start that fails (bad data,
            # a non-finite first epoch, Ctrl-C) leaves nothing behind, and a run it replaces (--force)
            # stays whole until then.
            for name in RUN_FILES:
                (run.out / name).unlink(missing_ok=True)
            _open_run_dir(run.out, run.meta, 0, run.model, run.optimizer, [])
        ckpt.save_epoch(run.out, run.model, run.optimizer, run.meta, run.history)
    test_txt = f"  test loss {record['test_loss']:.4f}  test acc {record['test_accuracy']:.4f}" \
        if "test_accuracy" in record else ""
    if "val_accuracy" in record:
        test_txt = f"  val acc {record['val_accuracy']:.4f}" + test_txt
    run.log(f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {record['train_loss']:.4f}  "
            f"train acc {record['train_accuracy']:.4f}{test_txt}"
            f"  {record['images_per_second']:,.0f} img/s  {record['epoch_seconds']:.1f}s")
    barrier(run.dist_info)


def _finish(run: Run) -> TrainResult:
    """The learning curves (rank 0) and what the caller gets back."""
    final = run.history[-1] if run.history else {}
    if run.dist_info.is_main and run.history:
        plot_curves(run.history, run.out / "curves.png",
                    title=f"{run.cfg.model} on {run.splits['train'].name.split('/')[0]}")
        run.log(f"done: test accuracy {final.get('test_accuracy', float('nan')):.4f} after {run.cfg.epochs} epochs, "
                f"{run.train_seconds:.1f}s of training; wrote {run.out}/model.safetensors, metrics.jsonl, curves.png")
    run.model.eval()
    sizes = {name: len(data.labels) for name, data in run.splits.items()}
    return TrainResult(run.out, run.history, final.get("test_accuracy", float("nan")), run.train_seconds, run.model,
                       {k: sizes[k] for k in ("train", "test", "validation") if k in sizes})


def _all_finite(model: nn.Module) -> bool:
    return all(bool(t.isfinite().all()) for t in model.state_dict().values() if t.is_floating_point())


def _stop_non_finite(run: Run, epoch: int):
    kept = (f"The last good checkpoint in {run.out} is kept" if run.history
            else "Nothing was written" if not run.cfg.resume else f"The checkpoint in {run.out} is kept")
    raise TrainingError(
        f"the loss became non-finite (NaN or inf) in epoch {epoch + 1}, step {run.step}: training stopped. "
        f"{kept}. Try a lower --lr or --grad-clip."
    )
