"""Refusion's `use_swap` augmentation: with probability p a training sample's LQ and GT trade places
(official `LQGT_dataset`, used to train the latent autoencoder: it learns to rebuild either image of a pair
from its own latent and the other's hidden features).

The draw comes from the sample seed that `data.samplers.EpochSeededSampler` hands the dataset with the index
(its own stream, independent of the crop and degradation drawn from the same seed), so a resumed run swaps the
same samples as the uninterrupted one, with any number of workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import DataError

_STREAM = 0x5A4D  # mixed into the sample seed: the swap draw never repeats the crop's first random number


def swap_drawn(sample_seed: int, p: float) -> bool:
    """Whether the sample of this seed swaps LQ and GT."""
    return bool(np.random.default_rng((int(sample_seed), _STREAM)).random() < p)


class SwapPairs(Dataset):
    """`dataset`'s items with "lq" and "gt" exchanged with probability `p`, seeded per sample."""

    def __init__(self, dataset: Dataset, p: float = 0.5) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise DataError(f"data.swap={p}: a probability in [0, 1] (0.5 as the official use_swap)")
        self.dataset, self.p = dataset, float(p)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        item = self.dataset[key]
        # without an EpochSeededSampler (plain index): torch's generator, distinct per DataLoader worker
        seed = key[1] if isinstance(key, tuple) else int(torch.randint(0, 2**31 - 1, ()).item())
        if swap_drawn(seed, self.p):
            item = {**item, "lq": item["gt"], "gt": item["lq"]}
        return item
