"""Training data that a resumed run sees exactly as the uninterrupted run would have, from any step.

`EpochSeededSampler`: each epoch's permutation and each sample's seed (random crop, flips, synthetic
degradation) come from a generator seeded with (seed, epoch), never from torch's global generator, so neither a
validation pass, a resume nor the number of DataLoader workers changes which patches a run sees. It yields
(index, sample_seed) pairs, which PairedImageDataset accepts. Under DDP every rank takes its shard of the same
permutation (DistributedSampler's padding and interleaving); being a DistributedSampler, Lightning uses it as it
is instead of wrapping it in its DistributedSamplerWrapper (which would shuffle the order once more).

`ResumableLoader`: the training DataLoader. Lightning's fit loop stores the `state_dict()` of a train loader that
has one in every checkpoint (loops.fit_loop.combined_loader) and hands it back through `load_state_dict()` before
the resumed run iterates; it never looks at the sampler. The state is (epoch, batches this rank has consumed),
counted where the batches leave the loader: a sampler cannot count them, since worker processes draw its
indices ahead. A resumed pass over the same epoch starts at the next batch, skipping indices only (nothing is
loaded for the skipped samples).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler


class EpochSeededSampler(DistributedSampler):
    """(index, sample_seed) pairs that depend only on (seed, epoch); this rank's shard under DDP."""

    def __init__(self, num_samples: int, seed: int | None = None, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        # default: follow seed_everything (torch's initial seed, the same on every rank)
        seed = int(torch.initial_seed() if seed is None else seed) % 2**31
        if num_replicas is None:  # this process group's shard, else the whole epoch
            distributed = dist.is_available() and dist.is_initialized()
            num_replicas = dist.get_world_size() if distributed else 1
            rank = dist.get_rank() if distributed and rank is None else rank
        super().__init__(range(num_samples), num_replicas=num_replicas, rank=rank or 0, shuffle=True, seed=seed)
        self._explicit_epoch = False
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (also after a resume)."""
        self.epoch = int(epoch)
        self._explicit_epoch = True

    def skip_next(self, samples: int) -> None:
        """The next pass starts at its `samples`-th sample of this rank's shard (ResumableLoader's resume)."""
        self._skip = int(samples)

    def epoch_items(self) -> list[tuple[int, int]]:
        """This rank's (index, sample_seed) pairs of the current epoch, in order."""
        n = len(self.dataset)
        if n == 0:
            return []
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=generator).tolist()
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator).tolist()
        items = list(zip(order, seeds))
        items += (items * (self.total_size // n + 1))[: self.total_size - n]  # equal shards: repeat the first
        return items[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        items = self.epoch_items()[self._skip:]
        self._skip = 0
        if not self._explicit_epoch:  # used outside Lightning: advance by itself
            self.epoch += 1
        self._explicit_epoch = False
        return iter(items)


class ResumableLoader(DataLoader):
    """A DataLoader over an EpochSeededSampler whose position within an epoch Lightning checkpoints."""

    _epoch: int | None = None  # the epoch of the pass in progress
    _served = 0  # batches of that pass handed out so far (skipped ones included)
    _resume: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint, for the next pass

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = (state["epoch"], int(state["batches"]))

    def __iter__(self) -> Iterator[Any]:
        # A generator: the pass starts at the first batch asked for, which Lightning does after its set_epoch
        # (it creates the iterator before, and a worker pool would draw the sampler's indices at once).
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        sampler = self.sampler
        epoch = getattr(sampler, "epoch", None)
        start = 0
        if self._resume is not None and self._resume[0] == epoch and isinstance(sampler, EpochSeededSampler):
            start = self._resume[1]  # a checkpoint of another epoch (one that had ended) starts a fresh pass
            sampler.skip_next(start * self.batch_size)
        self._resume = None
        self._epoch, self._served = epoch, start
        for batch in super().__iter__():
            self._served += 1
            yield batch
