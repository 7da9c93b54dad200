"""The optional training-pair pool (the official queue): pass-through while filling, then every pair leaves the
pool exactly once, in an order fixed by the seed, and the state survives a checkpoint round trip."""

from collections import Counter

import pytest
import torch

from core.errors import ConfigError
from data.realesrgan.pool import TrainingPairPool


def batches(n_steps, b=2):
    """Batches whose entries name themselves: lq = id, gt = 1000 + id."""
    for step in range(n_steps):
        ids = torch.arange(step * b, (step + 1) * b, dtype=torch.float32)
        yield ids.view(b, 1, 1, 1).expand(b, 3, 2, 2).clone(), (1000 + ids).view(b, 1, 1, 1).expand(b, 3, 4, 4).clone()


def run(pool, steps):
    return [tuple(int(x) for x in lq[:, 0, 0, 0]) for lq, gt in (pool(*pair) for pair in batches(steps))]


def test_fills_then_mixes_every_pair_out_exactly_once():
    pool = TrainingPairPool(size=6, seed=0)
    seen = []
    for step, (lq, gt) in enumerate(batches(30)):
        out_lq, out_gt = pool(lq, gt)
        assert torch.equal(out_gt[:, 0, 0, 0], 1000 + out_lq[:, 0, 0, 0])  # pairs stay pairs
        if step < 3:
            assert torch.equal(out_lq, lq)  # filling: the batch itself
        seen += out_lq[:, 0, 0, 0].int().tolist()
    # The pairs of the filling steps are trained on at once and again when they leave (official); every other
    # pair leaves once; the pool keeps 6 pairs: seen + kept counts each pair once, the first 6 twice.
    counts = Counter(seen) + Counter(pool.queue[0][:, 0, 0, 0].int().tolist())
    assert counts == Counter({i: 2 if i < 6 else 1 for i in range(60)})
    assert seen[6:] != sorted(seen[6:])  # the order is mixed


def test_seeded_and_resumable():
    assert run(TrainingPairPool(6, seed=1), 12) == run(TrainingPairPool(6, seed=1), 12)
    assert run(TrainingPairPool(6, seed=1), 12) != run(TrainingPairPool(6, seed=2), 12)
    straight = TrainingPairPool(6, seed=3)
    expected = run(straight, 12)
    first = TrainingPairPool(6, seed=3)
    pairs = list(batches(12))
    head = [tuple(int(x) for x in first(*p)[0][:, 0, 0, 0]) for p in pairs[:5]]
    resumed = TrainingPairPool(6, seed=3)
    resumed.load_state_dict(first.state_dict())
    tail = [tuple(int(x) for x in resumed(*p)[0][:, 0, 0, 0]) for p in pairs[5:]]
    assert head + tail == expected


def test_bad_sizes():
    with pytest.raises(ConfigError, match="multiple of the batch size"):
        TrainingPairPool(5)(*next(batches(1)))
    with pytest.raises(ConfigError, match="positive size"):
        TrainingPairPool(0)
