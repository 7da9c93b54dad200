"""The official training-pair pool (Real-ESRGAN / DiffIR-RealSR `_dequeue_and_enqueue`, queue_size 180), optional.

While the pool fills, each batch is trained on as it is and copied in. Once full, every step shuffles the pool,
trains on its first B pairs and puts the new batch in their place. The official code needs it because it draws
one resize factor, noise type and final order per batch: the pool mixes pairs of different batches. Here every
sample draws its own (data.realesrgan.degrade), so the pool adds no diversity of degradations; it only delays
pairs by a random number of steps.

Why it is off by default (degradation.queue_size 0, official 180): with it, what a step trains on depends on
every earlier batch of this process, so a batch is no longer a function of its samples' (seed, epoch, index):
the same index trains at a different step on another rank, with other world sizes, or after a resume that does
not restore the pool. It can still be reproduced exactly: the shuffles use a seeded generator, and
`state_dict()` holds the pool (2 x queue_size images: about 150 MB at 256x256 GT, x4) and the generator state
for a checkpoint, but each DDP rank has its own pool, so every rank's state would have to be saved.
"""

from __future__ import annotations

from typing import Any

import torch

from core.errors import ConfigError


class TrainingPairPool:
    """Mixes (lq, gt, ...) batches across steps as the official queue does, with a seeded shuffle."""

    def __init__(self, size: int = 180, seed: int = 0) -> None:
        if size < 1:
            raise ConfigError(f"degradation.queue_size={size}: a pool needs a positive size (0 turns it off).")
        self.size = int(size)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.queue: list[torch.Tensor] | None = None
        self.filled = 0

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Tensors of one batch (same batch size B); returns the tensors to train on this step."""
        b = tensors[0].shape[0]
        if self.size % b:
            raise ConfigError(f"degradation.queue_size={self.size} must be a multiple of the batch size {b}.")
        if self.queue is None:
            self.queue = [torch.zeros((self.size, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in tensors]
        if self.filled < self.size:  # filling: train on the batch as it is
            for slot, t in zip(self.queue, tensors):
                slot[self.filled:self.filled + b] = t
            self.filled += b
            return tuple(tensors)
        order = torch.randperm(self.size, generator=self.generator).to(tensors[0].device)
        out = []
        for k, t in enumerate(tensors):
            shuffled = self.queue[k][order]
            out.append(shuffled[:b].clone())
            shuffled[:b] = t
            self.queue[k] = shuffled
        return tuple(out)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "filled": self.filled, "queue": self.queue,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["size"]) != self.size:
            raise ConfigError(f"The checkpoint's pool holds {state['size']} pairs, degradation.queue_size is "
                              f"{self.size}: use the same size to resume.")
        self.filled, self.queue = int(state["filled"]), state["queue"]
        self.generator.set_state(state["generator"])
