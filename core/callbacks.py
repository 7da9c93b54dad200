"""Small Lightning callbacks of the suite."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class LossTrend(L.Callback):
    """At the end of training, say how the training loss moved (mean of the first vs the last `window` steps)."""

    def __init__(self, key: str = "train/loss", window: int = 50) -> None:
        self.key, self.window = key, window
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.values.append(float(loss.detach()))

    def on_train_end(self, trainer, pl_module) -> None:
        if len(self.values) < 2:
            return
        n = max(1, min(self.window, len(self.values) // 2))
        first = sum(self.values[:n]) / n
        last = sum(self.values[-n:]) / n
        change = 100.0 * (last - first) / first if first else float("nan")
        rank_zero_info(f"{self.key}: mean of the first {n} steps {first:.5f} -> last {n} steps {last:.5f} "
                       f"({change:+.1f}%) over {len(self.values)} steps")
