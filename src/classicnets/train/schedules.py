"""Learning-rate schedules as pure functions of the iteration.

A schedule is ``lr(step) -> float``: it holds no state, so resuming a run needs nothing but the
step number, and the same function serves a paper's iteration-based protocol (He et al. 2015
divide by 10 at 32k and 48k iterations) and an epoch-based one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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
