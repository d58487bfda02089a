"""What a run shows while it trains: a tqdm bar per epoch on a terminal, nothing in between
otherwise (the loop prints one line per epoch)."""

from __future__ import annotations

import math
import sys
import time


class Progress:
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
