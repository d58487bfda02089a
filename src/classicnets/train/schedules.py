"""Learning-rate schedules as pure functions of the iteration.

A schedule is ``lr(step) -> float``: it holds no state, so resuming a run needs nothing but the
step number, and the same function serves a paper's iteration-based protocol (He et al. 2015
divide by 10 at 32k and 48k iterations) and an epoch-based one. The one schedule that depends on
how training goes, He et al.'s warm-up until the training error falls below a bound, is
:class:`ErrorWarmup`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..distributed import DistInfo, all_reduce_sum

SCHEDULES = ("constant", "step", "cosine", "onecycle")


def make_schedule(
    name: str,
    base_lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    warmup_lr: float | None = None,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    final_lr_fraction: float = 0.0,
) -> Callable[[int], float]:
    """``lr(step)`` for ``step`` in ``[0, total_steps)``.

    - ``constant``: ``base_lr``.
    - ``step``: multiply by ``gamma`` at each of ``milestones`` (iterations).
    - ``cosine``: half-cosine from ``base_lr`` to ``final_lr_fraction * base_lr``.
    - ``onecycle``: linear rise over the first 25% to ``base_lr``, then linear decay to 0: the
      short-budget schedule that trains small nets fastest (Smith & Topin 2017).

    ``warmup_steps`` first hold ``warmup_lr`` if given (He et al. 2015, section 4.2: 0.01 for
    ResNet-110 until training error is below 80%), else rise linearly to the schedule's value.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {', '.join(SCHEDULES)}")
    total_steps = max(1, total_steps)
    milestones = sorted(milestones)

    def main(step: int) -> float:
        if name == "constant":
            return base_lr
        if name == "step":
            return base_lr * gamma ** sum(step >= m for m in milestones)
        if name == "cosine":
            t = min(1.0, step / total_steps)
            lo = final_lr_fraction * base_lr
            return lo + 0.5 * (base_lr - lo) * (1 + math.cos(math.pi * t))
        peak = max(1, int(0.25 * total_steps))  # onecycle
        if step < peak:
            return base_lr * (0.04 + 0.96 * step / peak)
        return base_lr * max(0.0, (total_steps - step) / (total_steps - peak))

    def lr(step: int) -> float:
        if step < warmup_steps:
            if warmup_lr is not None:
                return warmup_lr
            return main(warmup_steps) * (step + 1) / warmup_steps
        return main(step)

    return lr


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
