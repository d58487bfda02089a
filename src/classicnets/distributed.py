"""Distributed training through PyTorch's own engine (``torchrun`` + DDP).

``torchrun --nproc_per_node=N -m classicnets train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
we join the process group (gloo on CPU, NCCL on CUDA) and wrap the model in
DistributedDataParallel. Rank 0 alone logs and writes files.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import ClassicNetsError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


TIMEOUT_ENV = "CLASSICNETS_DIST_TIMEOUT"
LEAVE_AFTER_ERROR_S = 5.0  # how long a rank that failed waits for the process group to close


def init_from_env(device_type: str, timeout_s: float | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any.

    ``timeout_s`` bounds every collective: a rank that dies makes the others fail with an
    error after this long instead of waiting forever. Default: ``$CLASSICNETS_DIST_TIMEOUT``
    seconds, else 300 (tests lower it to see a lost rank reported quickly).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if timeout_s is None:
        try:
            timeout_s = float(os.environ.get(TIMEOUT_ENV) or 300.0)
        except ValueError:
            raise ClassicNetsError(f"${TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r}: expected a number of "
                                   f"seconds") from None
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return info


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo, clean: bool = True) -> None:
    """Leave the process group. After a clean run every rank first waits for the others (rank 0
    writes the curves after the last epoch), so no rank tears down gloo's connections while a
    peer still uses them; after an error, leave at once."""
    if not (info.enabled and dist.is_initialized()):
        return
    if clean:
        dist.barrier()
        dist.destroy_process_group()
        return
    # After an error a peer may be gone, and tearing the group down can wait on it (a fresh CI clone
    # saw rank 0 still alive 90 s after rank 1 was killed, where every collective is bounded by the
    # timeout): try, but leave after a few seconds whatever it does.
    closing = threading.Thread(target=dist.destroy_process_group, daemon=True)
    closing.start()
    closing.join(timeout=LEAVE_AFTER_ERROR_S)
