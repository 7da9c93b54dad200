"""A training sampler whose order and per-sample randomness depend only on (seed, epoch).

The default shuffling draws from torch's global generator at whatever moment the loader is iterated, so a
validation pass, a resume or a change of worker count changes which patches a run sees. Here each epoch's
permutation and each sample's seed (random crop, flips, synthetic degradation) come from a generator seeded
with (seed, epoch): a resumed run sees exactly the patches the uninterrupted run would have seen, with any
number of DataLoader workers. The sampler yields (index, sample_seed) pairs, which PairedImageDataset accepts.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler[tuple[int, int]]):
    def __init__(self, num_samples: int, seed: int | None = None) -> None:
        self.num_samples = num_samples
        # default: follow seed_everything (torch's initial seed), fixed for the sampler's lifetime
        self.seed = int(torch.initial_seed() if seed is None else seed) % 2**31
        self.epoch = 0
        self._explicit_epoch = False

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (also after a resume)."""
        self.epoch = int(epoch)
        self._explicit_epoch = True

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.num_samples,), generator=generator).tolist()
        if not self._explicit_epoch:  # used outside Lightning (or wrapped for DDP): advance by itself
            self.epoch += 1
        self._explicit_epoch = False
        return iter(list(zip(order, seeds)))
