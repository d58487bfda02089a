"""The training loop: data -> model -> optimiser -> metrics, checkpoints and curves.

``train(TrainConfig(...))`` is what ``classicnets train`` calls. Everything that is not set in
the config comes from the model's recipe (``recipes.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.imageset import channel_stats
from ..data.pipeline import make_loader, parse_augment
from ..data.sources import StreamedSet, load_split
from ..device import autocast_dtype, configure_cuda, pick_device
from ..distributed import DistInfo, all_reduce_sum, barrier, init_from_env, shutdown
from ..errors import CheckpointError, ClassicNetsError, TrainingError
from ..evaluate import evaluate_model
from ..memory import keep_freed_memory
from ..models import create_model, model_card
from ..version import __version__
from . import checkpoint as ckpt
from .recipes import recipe_for
from .schedules import make_schedule
from .step import make_optimizer, train_step


@dataclass
class TrainConfig:
    """Every setting of a run. ``None`` means: take it from the model's recipe."""

    model: str = "lenet5"
    dataset: str | None = "digits"
    data_dir: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None  # "sgd" | "adamw"
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    schedule: str | None = None  # constant | step | cosine | onecycle
    milestones: tuple[float, ...] | None = None  # fractions of training (step schedule)
    milestone_iterations: tuple[int, ...] | None = None  # or iterations, as He et al. give them (32k, 48k)
    iterations: int | None = None  # stop after this many steps (iteration-based protocols); sets the epochs
    warmup_epochs: float | None = None
    warmup_lr: float | None = None
    warmup_until_error: float | None = None  # hold warmup_lr until the training error is below this
    label_smoothing: float | None = None  # default 0.0 (a recipe may set it)
    grad_clip: float | None = None
    augment: str | None = None  # none | flip | crop | crop+flip
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool | None = None
    compile: bool = False
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    deterministic: bool = True
    input_size: tuple[int, int] | None = None  # (H, W); default: the model's native size
    train_limit: int | None = None  # use only the first N training images (quick experiments)
    holdout: int | None = None  # the last N training images become a validation split, never trained on
    model_kwargs: dict = field(default_factory=dict)
    freeze_features: bool = False
    init_from: str | None = None  # checkpoint whose backbone weights start this run (transfer)
    out: str | None = None
    resume: bool = False
    quiet: bool = False
    eval_every: int = 1

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` filled from the recipe."""
        recipe = recipe_for(self.model, self.dataset)
        values = dataclasses.asdict(self)
        for key, value in recipe.items():
            if values.get(key) is None:
                values[key] = value
        defaults = dict(epochs=10, momentum=0.9, nesterov=False, weight_decay=0.0, milestones=(0.5, 0.75),
                        warmup_epochs=0.0, augment="none", channels_last=False, label_smoothing=0.0)
        for key, value in defaults.items():
            if values.get(key) is None:
                values[key] = value
        if values["dataset"] is None and values["data_dir"] is None:
            raise ClassicNetsError("give a dataset name (--dataset) or a data directory (--data)")
        return TrainConfig(**values)


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


class _Progress:
    """A tqdm bar per epoch on a terminal; one line per epoch otherwise.

    The running loss and accuracy it shows are read at most every ``refresh_seconds``: reading a
    tensor's value waits for the device, and on a GPU a read every step would stop the CPU from
    queueing the next steps while the current ones run."""

    refresh_seconds = 0.5

    def __init__(self, enabled: bool, total: int, epoch: int, epochs: int):
        self.bar = None
        self.shown_at = -math.inf
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="img", leave=False,
                            dynamic_ncols=True)

    def update(self, n: int) -> bool:
        """Advance by ``n`` images; True when the figures are due to be read and shown."""
        if self.bar is None:
            return False
        self.bar.update(n)
        now = time.perf_counter()
        if now - self.shown_at < self.refresh_seconds:
            return False
        self.shown_at = now
        return True

    def show(self, **figures) -> None:
        self.bar.set_postfix(figures, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset`` (or ``cfg.data_dir``); see the README."""
    if cfg.resume and cfg.out:
        cfg = _with_run_settings(cfg)
    cfg = cfg.resolved()
    device = pick_device(cfg.device)
    dist_info = init_from_env(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    # Reuse freed activation buffers rather than fault in fresh pages every step (classicnets.memory:
    # ResNet-20 takes tens of thousands of page faults a step without it). It stays set: glibc
    # cannot be put back, and it changes only when memory returns to the OS.
    keep_freed_memory()
    # Process-wide settings a run changes, put back afterwards: a notebook that trains and then
    # runs other code must not be left in deterministic mode or on one thread.
    threads = torch.get_num_threads()
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    fill_memory = torch.utils.deterministic.fill_uninitialized_memory
    cudnn_benchmark = torch.backends.cudnn.benchmark
    clean = False
    try:
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
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.utils.deterministic.fill_uninitialized_memory = fill_memory
        torch.backends.cudnn.benchmark = cudnn_benchmark
        shutdown(dist_info, clean=clean)


# Settings of the machine or the invocation, not of the run: a resumed run never takes them from it.
_INVOCATION = ("out", "resume", "threads", "device", "quiet", "init_from")


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


def _train(cfg: TrainConfig, device: torch.device, dist_info: DistInfo) -> TrainResult:
    log = print if (dist_info.is_main and not cfg.quiet) else (lambda *a, **k: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
        # Deterministic mode also fills every new tensor with NaN, a debugging aid that makes a
        # kernel reading uninitialised memory fail loudly. Our kernels do not, and the fill cost
        # ResNet-20 (bf16, channels-last) 906-929 img/s against 964-990 without it in separate runs
        # on 2 cores; the algorithms stay deterministic.
        torch.utils.deterministic.fill_uninitialized_memory = False
    if device.type == "cuda":
        configure_cuda(cfg.deterministic)
    torch.manual_seed(cfg.seed)

    card = model_card(cfg.model)
    size = tuple(cfg.input_size) if cfg.input_size else tuple(card.input_size[1:])
    train_set = load_split(cfg.dataset, cfg.data_dir, "train", size=size, channels=card.input_size[0])
    test_set = load_split(cfg.dataset, cfg.data_dir, "test", size=size, channels=card.input_size[0])
    if train_set.classes != test_set.classes:
        raise ClassicNetsError(
            f"train and test splits disagree on the classes: {train_set.classes} vs {test_set.classes}")
    val_set = None
    if cfg.holdout:
        train_set, val_set = _hold_out(train_set, cfg.holdout)
    if cfg.train_limit:
        train_set = _head(train_set, cfg.train_limit)
    in_channels = train_set.image_size[0]
    classes = list(train_set.classes)

    model = create_model(cfg.model, num_classes=len(classes), in_channels=in_channels, **cfg.model_kwargs)
    if dist_info.rank > 0:
        # Same initial weights on every rank (DDP also broadcasts rank 0's), but each rank its
        # own dropout masks from here on.
        torch.manual_seed(cfg.seed + 1_000_003 * dist_info.rank)
    if cfg.init_from:
        _init_backbone(model, cfg.init_from)
    if cfg.freeze_features:
        model.freeze_features()
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    loader_args = dict(mean=train_set.mean, std=train_set.std, size=size, device=device,
                       channels_last=cfg.channels_last, rank=dist_info.rank, world_size=dist_info.world_size)
    train_loader = make_loader(train_set, cfg.batch_size, shuffle=True, augment=parse_augment(cfg.augment, cfg.dataset),
                               drop_last=dist_info.enabled, seed=cfg.seed, **loader_args)
    eval_bs = max(256, cfg.batch_size) // dist_info.world_size * dist_info.world_size
    test_loader = make_loader(test_set, eval_bs, **loader_args)
    val_loader = make_loader(val_set, eval_bs, **loader_args) if val_set is not None else None

    optimizer = make_optimizer(cfg, model)
    steps_per_epoch = len(train_loader)
    if cfg.iterations:
        # An iteration-based protocol (He et al. 2015: stop at 64k): as many epochs as it takes,
        # the last one cut short.
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
    amp_dtype = autocast_dtype(cfg.precision, device, cfg.model)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    meta = {
        "format": ckpt.FORMAT, "package_version": __version__, "model": cfg.model,
        "model_kwargs": cfg.model_kwargs, "num_classes": len(classes), "in_channels": in_channels,
        "classes": classes, "input_size": [in_channels, *size],
        "data_size": list(train_set.image_size[1:]), "mean": list(train_set.mean),
        "std": list(train_set.std), "dataset": cfg.dataset,
        "data_dir": str(Path(cfg.data_dir).resolve()) if cfg.data_dir else None,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()},
    }
    start_epoch, history = 0, []
    if cfg.resume:
        start_epoch, history = _resume(out, model, optimizer, cfg)
        log(f"resuming {out} after epoch {start_epoch}")
        warmup.restore(history)
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        # Left by a run killed in the middle of a write: ours (.NAME.tmp-PID) and the one
        # safetensors writes through before renaming it to ours (.tmpXXXXXX).
        for stale in [*out.glob(".*.tmp-*"), *out.glob(".tmp*")]:
            if stale.is_file():
                stale.unlink(missing_ok=True)
        ckpt.atomic_write_text(out / "config.json", json.dumps(meta["config"], indent=2))
        if start_epoch and _files_behind(out, start_epoch):
            # A kill after the training state was written but before metrics.jsonl or the model
            # caught up leaves them one epoch behind; after the last epoch nothing would rewrite them.
            _save_epoch(out, model, optimizer, meta, history)

    ddp_model = model
    if dist_info.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    step_model = torch.compile(ddp_model) if cfg.compile else ddp_model

    log(f"training {cfg.model} ({sum(p.numel() for p in model.parameters()):,} params) on "
        f"{train_set.name}: {len(train_set.labels):,} train"
        f"{f' / {len(val_set.labels):,} validation' if val_set is not None else ''} / {len(test_set.labels):,} test "
        f"images, {cfg.epochs} epochs{f' ({cfg.iterations:,} iterations)' if cfg.iterations else ''}, "
        f"batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr} {cfg.schedule}, "
        f"device {device}{f' x{dist_info.world_size}' if dist_info.enabled else ''}, "
        f"{torch.get_num_threads()} threads")
    train_seconds = sum(h.get("epoch_seconds", 0.0) for h in history)
    step = start_epoch * steps_per_epoch
    lr = schedule(step)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        train_loader.set_epoch(epoch)
        progress = _Progress(dist_info.is_main and not cfg.quiet, train_loader.num_samples, epoch + 1, cfg.epochs)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        t0 = time.perf_counter()
        for x, y in train_loader:
            if cfg.iterations and step >= cfg.iterations:
                break
            lr = warmup.lr if warmup.active else schedule(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits, loss = train_step(step_model, optimizer, x, y, label_smoothing=cfg.label_smoothing,
                                      amp_dtype=amp_dtype, scaler=scaler, grad_clip=cfg.grad_clip)
            step += 1
            hits = (logits.detach().argmax(1) == y).sum()
            loss_sum += loss.detach().double() * len(y)
            correct += hits
            seen += len(y)
            if warmup.active:
                warmup.update(hits, len(y), step, dist_info)
            # Every few steps rather than every step: reading the loss costs a synchronisation
            # (and on CPU ~10% of a LeNet-5 step); the epoch-end check catches the rest.
            if step % 25 == 0 and not torch.isfinite(loss_sum):
                _stop_non_finite(out, epoch, step)
            if progress.update(len(y) * dist_info.world_size):
                rate = seen * dist_info.world_size / (time.perf_counter() - t0)
                progress.show(loss=f"{loss.item():.3f}", acc=f"{float(correct) / seen:.3f}", img_s=f"{rate:,.0f}")
        progress.close()
        seen_t = torch.tensor(float(seen), dtype=torch.float64, device=device)
        stats = torch.stack([loss_sum, correct.double(), seen_t])
        all_reduce_sum(stats, dist_info)
        train_loss, train_acc = float(stats[0] / stats[2]), float(stats[1] / stats[2])
        # The epoch's last update can make the weights non-finite while its loss was still finite.
        if not math.isfinite(train_loss) or not _all_finite(model):
            _stop_non_finite(out, epoch, step)
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        record = {"epoch": epoch + 1, "step": step, "lr": lr, "train_loss": train_loss,
                  "train_accuracy": train_acc, "epoch_seconds": epoch_seconds,
                  "images_per_second": float(stats[2]) / epoch_seconds}
        if warmup.ended_at is not None:
            record["warmup_end_step"] = warmup.ended_at
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            if val_loader is not None:
                ev = evaluate_model(model, val_loader, len(classes), amp_dtype=amp_dtype, dist_info=dist_info)
                record.update(val_loss=ev["loss"], val_accuracy=ev["accuracy"])
            ev = evaluate_model(model, test_loader, len(classes), amp_dtype=amp_dtype, dist_info=dist_info)
            record.update(test_loss=ev["loss"], test_accuracy=ev["accuracy"])
        history.append(record)
        if dist_info.is_main:
            _save_epoch(out, model, optimizer, meta, history)
        test_txt = f"  test loss {record['test_loss']:.4f}  test acc {record['test_accuracy']:.4f}" \
            if "test_accuracy" in record else ""
        if "val_accuracy" in record:
            test_txt = f"  val acc {record['val_accuracy']:.4f}" + test_txt
        log(f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {train_loss:.4f}  train acc {train_acc:.4f}{test_txt}"
            f"  {record['images_per_second']:,.0f} img/s  {epoch_seconds:.1f}s")
        barrier(dist_info)

    final = history[-1] if history else {}
    if dist_info.is_main and history:
        from ..report import plot_curves

        plot_curves(history, out / "curves.png", title=f"{cfg.model} on {train_set.name.split('/')[0]}")
        log(f"done: test accuracy {final.get('test_accuracy', float('nan')):.4f} after {cfg.epochs} epochs, "
            f"{train_seconds:.1f}s of training; wrote {out}/model.safetensors, metrics.jsonl, curves.png")
    model.eval()
    sizes = {"train": len(train_set.labels), "test": len(test_set.labels)}
    if val_set is not None:
        sizes["validation"] = len(val_set.labels)
    return TrainResult(out, history, final.get("test_accuracy", float("nan")), train_seconds, model, sizes)


def _head(data, n: int):
    """The first ``n`` training images (quick experiments)."""
    if isinstance(data, StreamedSet):
        return data.head(n)
    return dataclasses.replace(data, images=data.images[:n], labels=data.labels[:n])


def _hold_out(data, n: int):
    """Split off the last ``n`` training images as a validation set (He et al. 2015 chose their
    CIFAR-10 schedule on a 45k/5k split; CIFAR's batches are in random order, so the last 5k are
    a random 5k). The mean and standard deviation are recomputed on the images trained on."""
    if not 0 < n < len(data):
        raise ClassicNetsError(f"--holdout {n}: expected fewer validation images than the {len(data):,} "
                               f"training images")
    keep = len(data) - n
    if isinstance(data, StreamedSet):
        return data.rows(0, keep), dataclasses.replace(data.rows(keep, len(data)), name=f"{data.name}[holdout]")
    mean, std = channel_stats(data.images[:keep])
    train = dataclasses.replace(data, images=data.images[:keep], labels=data.labels[:keep], mean=mean, std=std)
    val = dataclasses.replace(data, images=data.images[keep:], labels=data.labels[keep:], mean=mean, std=std,
                              name=f"{data.name}[holdout]")
    return train, val


class ErrorWarmup:
    """He et al. 2015, section 4.2, for ResNet-110: "we use 0.01 to warm up the training until the
    training error is below 80% (about 400 iterations), and then go back to 0.1".

    The training error is that of the last ``window`` mini-batches (summed over all ranks, so every
    rank leaves the warm-up at the same step). The step it ended at is kept in the run's history,
    so a resumed run does not warm up again.
    """

    window = 20

    def __init__(self, threshold: float | None, lr: float) -> None:
        self.threshold, self.lr = threshold, lr
        self.ended_at: int | None = None
        self.recent: list[tuple[float, float]] = []

    @property
    def active(self) -> bool:
        return self.threshold is not None and self.ended_at is None

    def update(self, hits: torch.Tensor, n: int, step: int, dist_info: DistInfo) -> None:
        counts = torch.stack([hits.double(), torch.tensor(float(n), dtype=torch.float64, device=hits.device)])
        all_reduce_sum(counts, dist_info)
        self.recent = [*self.recent, (float(counts[0]), float(counts[1]))][-self.window:]
        hit_sum, seen = map(sum, zip(*self.recent, strict=True))
        if len(self.recent) == self.window and 1 - hit_sum / seen < self.threshold:
            self.ended_at = step

    def restore(self, history: list[dict]) -> None:
        if history and history[-1].get("warmup_end_step") is not None:
            self.ended_at = int(history[-1]["warmup_end_step"])


def _all_finite(model: nn.Module) -> bool:
    return all(bool(t.isfinite().all()) for t in model.state_dict().values() if t.is_floating_point())


def _stop_non_finite(out: Path, epoch: int, step: int):
    raise TrainingError(
        f"the loss became non-finite (NaN or inf) in epoch {epoch + 1}, step {step}: training stopped. "
        f"The last good checkpoint in {out} is kept. Try a lower --lr or --grad-clip."
    )


def _save_epoch(out: Path, model: nn.Module, optimizer, meta: dict, history: list[dict]) -> None:
    """Write the training state, the model and the metrics of the epoch just finished.

    Order matters for resuming after a kill: the training state goes first, then the metrics
    are rewritten to match it exactly (so no epoch is lost or duplicated), then the model.
    """
    weights = model.state_dict()
    meta = {**meta, "epoch": history[-1]["epoch"], "step": history[-1]["step"], "metrics": history[-1]}
    opt_tensors, opt_meta = ckpt.optimizer_to_flat(optimizer)
    state = {f"model.{k}": v for k, v in weights.items()}
    state.update(opt_tensors)
    state["rng.torch"] = torch.get_rng_state()
    state_meta = {**meta, "optimizer": opt_meta, "history": history}
    ckpt.save_tensors(out / ckpt.STATE_FILE, state, state_meta)
    lines = "".join(json.dumps(h) + "\n" for h in history)
    ckpt.atomic_write_text(out / "metrics.jsonl", lines)
    ckpt.save_tensors(out / ckpt.MODEL_FILE, weights, meta)
    ckpt.atomic_write_text(out / ckpt.META_FILE, json.dumps(meta, indent=2))


def _files_behind(out: Path, epoch: int) -> bool:
    """Whether the files :func:`_save_epoch` writes after the training state lag it: model.json
    is written last, so it is up to date only if all of them are."""
    try:
        return json.loads((out / ckpt.META_FILE).read_text()).get("epoch") != epoch
    except (OSError, ValueError, AttributeError):
        return True


def _resume(out: Path, model: nn.Module, optimizer, cfg: TrainConfig) -> tuple[int, list[dict]]:
    path = out / ckpt.STATE_FILE
    if not path.exists():
        raise CheckpointError(f"--resume: {path} does not exist (no finished epoch to resume from)")
    tensors, meta = ckpt.read_tensors(path)
    if meta.get("model") != cfg.model:
        raise CheckpointError(f"--resume: {path} holds a {meta.get('model')!r} run, not {cfg.model!r}")
    # Settings that decide which batches come next and where the schedule stands: a resumed run
    # must share them to continue the same run (the learning rate itself may change).
    before = meta.get("config", {})
    changed = [f"--{k.replace('_', '-')} {before.get(k)!r} -> {getattr(cfg, k)!r}"
               for k in ("dataset", "batch_size", "train_limit", "holdout", "seed")
               if k in before and _plain(before[k]) != _plain(getattr(cfg, k))]
    if changed:
        raise CheckpointError(f"--resume: {path} was trained with other settings ({'; '.join(changed)}); "
                              f"resume with the same ones, or start a new run in another --out")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(ckpt.optimizer_from_flat(tensors, meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"--resume: {path} does not match this model/optimizer: {exc}") from exc
    _match_param_layout(optimizer)
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["epoch"]), list(meta["history"])


def _match_param_layout(optimizer) -> None:
    """Give restored optimizer state (saved contiguous) its parameter's memory layout again:
    with channels-last weights, a fused update over mismatched layouts rounds differently, and
    a resumed run would no longer equal the uninterrupted one bit for bit."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p).copy_(value)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _init_backbone(model: nn.Module, path: str) -> None:
    """Start from another checkpoint's weights, except its head (transfer learning)."""
    from ..predict import read_checkpoint

    weights, _ = read_checkpoint(path)
    own = model.state_dict()
    head = model.head_name + "."
    usable = {k: v for k, v in weights.items() if not k.startswith(head) and k in own and own[k].shape == v.shape}
    missing = [k for k in own if not k.startswith(head) and k not in usable]
    if missing:
        raise CheckpointError(f"--init-from {path}: its backbone does not fit this model (e.g. {missing[0]})")
    model.load_state_dict(usable, strict=False)
