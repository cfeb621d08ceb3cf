"""Epoch order: seeds mixed from (seed, epoch, ...) and each rank's shard of an epoch.

The loaders draw an epoch's order and augmentation from these alone, so runs are
reproducible and a resume at an epoch boundary is exact.
"""

from __future__ import annotations

import numpy as np
import torch


def epoch_seed(*parts: int) -> int:
    """A 63-bit seed mixing integers, e.g. (seed, epoch), without collisions like seed*1000+epoch."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def shard_order(n: int, seed: int, epoch: int, shuffle: bool, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's dataset positions for one epoch.

    Shuffled: a permutation drawn from (seed, epoch), cut to a multiple of world_size (the last
    n % world_size positions of the permutation are dropped for this epoch), every rank taking
    every world_size-th position from `rank`: equal-size, disjoint shards. Unshuffled (evaluation):
    positions rank, rank + world_size, ...; all n covered, shard sizes differ by at most one.
    """
    if shuffle:
        g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        perm = torch.randperm(n, generator=g)
        return perm[: n - n % world_size][rank::world_size]
    return torch.arange(rank, n, world_size)
