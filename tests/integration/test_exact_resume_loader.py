"""data.samplers without Lightning: the training loader's state round trip resumes at the next batch of the same
epoch (per DDP rank, with or without worker processes), loads nothing it skips, and an ended epoch's state starts
the next epoch from its first batch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from data.samplers import EpochSeededSampler, ResumableLoader

N, BATCH, SEED = 22, 3, 7


class Keys(Dataset):
    """Returns the (index, sample_seed) key it is given, and remembers which keys were loaded."""

    def __init__(self) -> None:
        self.loaded: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return N

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        self.loaded.append(key)
        return torch.tensor(key)


def loader(epoch: int, workers: int = 0, replicas: int = 1, rank: int = 0) -> ResumableLoader:
    sampler = EpochSeededSampler(N, seed=SEED, num_replicas=replicas, rank=rank)
    sampler.set_epoch(epoch)  # what Lightning does at every epoch start, after creating the loader
    return ResumableLoader(Keys(), batch_size=BATCH, sampler=sampler, drop_last=True, num_workers=workers)


def batches(dl: ResumableLoader, count: int | None = None) -> list[list[tuple[int, int]]]:
    out = []
    for batch in dl:
        out.append([tuple(row) for row in batch.tolist()])
        if len(out) == count:
            break
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_state_round_trip_resumes_at_the_next_batch(workers):
    whole = batches(loader(epoch=3, workers=workers))
    assert len(whole) == N // BATCH
    stopped = loader(epoch=3, workers=workers)
    assert batches(stopped, count=2) == whole[:2]
    state = stopped.state_dict()
    assert state == {"epoch": 3, "batches": 2}  # counted as batches leave the loader, not as workers prefetch

    resumed = loader(epoch=3, workers=workers)  # a new process: a new loader, the state from the checkpoint
    resumed.load_state_dict(state)
    assert len(resumed) == len(whole)  # Lightning counts the epoch's batches from the full length
    assert batches(resumed) == whole[2:]
    assert resumed.state_dict() == {"epoch": 3, "batches": len(whole)}
    if workers == 0:  # the skipped samples were never loaded
        assert resumed.dataset.loaded == [key for batch in whole[2:] for key in batch]
    # the next pass (the next epoch) starts from its first batch
    resumed.sampler.set_epoch(4)
    assert batches(resumed) == batches(loader(epoch=4))


def test_an_ended_epoch_resumes_with_the_next_one_from_its_start():
    ended = loader(epoch=1)
    batches(ended)
    resumed = loader(epoch=2)
    resumed.load_state_dict(ended.state_dict())
    assert batches(resumed) == batches(loader(epoch=2))


def test_each_rank_takes_its_shard_of_the_epoch_and_resumes_it():
    items = loader(epoch=5).sampler.epoch_items()  # the whole epoch: (index, seed) from (seed, epoch) only
    assert sorted(i for i, _ in items) == list(range(N))
    shards = []
    for rank in (0, 1):
        whole = batches(loader(epoch=5, replicas=2, rank=rank))
        assert len(whole) == (N // 2) // BATCH  # 11 each: equal shards, so every rank steps equally often
        shards.append({key for batch in whole for key in batch})
        stopped = loader(epoch=5, replicas=2, rank=rank)
        batches(stopped, count=1)
        resumed = loader(epoch=5, replicas=2, rank=rank)
        resumed.load_state_dict(stopped.state_dict())
        assert batches(resumed) == whole[1:], f"rank {rank}"
    assert not shards[0] & shards[1] and shards[0] | shards[1] <= set(items)


def test_sampler_outside_lightning_moves_to_the_next_epoch_by_itself():
    sampler = EpochSeededSampler(N, seed=SEED)
    first, second = list(sampler), list(sampler)
    assert first != second and sorted(first) != sorted(second)  # new order, new per-sample seeds
    sampler.set_epoch(0)
    assert list(sampler) == first
