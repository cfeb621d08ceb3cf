"""`DeviceLoader`: uint8 images held on the training device, cropped, flipped and normalised there."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from prs.data.datasets import CIFAR100_MEAN, CIFAR100_STD
from prs.data.order import epoch_seed, shard_order
from prs.data.validation import CONFIG, SettingNames, batches, check_batches, check_shard
from prs.errors import UserError


@dataclass
class EpochPlan:
    """What one epoch of a DeviceLoader does, on the CPU: for each position of the iteration,
    the image index, the crop offsets (top dy, left dx, into the zero-padded image) and the flip."""

    order: torch.Tensor  # int64 (M,)
    dy: torch.Tensor  # int64 (M,), in [0, 2 * padding]
    dx: torch.Tensor  # int64 (M,)
    flip: torch.Tensor  # bool (M,)


def draw_augmentation(n: int, crop_padding: int, flip: bool, generator: torch.Generator):
    """Per-image crop offsets dy, dx uniform in [0, 2 * crop_padding] and flips with p = 0.5,
    as torchvision's RandomCrop(padding) + RandomHorizontalFlip draw them."""
    dy = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return dy, dx, flips & flip


def normalize_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32, in the same operations as ToTensor + Normalize."""
    return x.float().div(255).sub(mean).div(std)


def crop_flip_normalize(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
                        padding: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Batched RandomCrop(padding, zero fill) + horizontal flip + ToTensor + Normalize.

    images: uint8 (B, C, H, W); dy, dx, flip: (B,) on the same device. One gather, no loop
    over images. Returns float32 (B, C, H, W) in channels_last memory order (a permuted view).
    """
    b, _, h, w = images.shape
    if padding:
        images = F.pad(images, (padding, padding, padding, padding))
    ar_h = torch.arange(h, device=images.device)
    ar_w = torch.arange(w, device=images.device)
    rows = dy[:, None] + ar_h  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (B, W), reversed if flipped
    batch = torch.arange(b, device=images.device)[:, None, None]
    crops = images[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return normalize_uint8(crops.permute(0, 3, 1, 2), mean, std)


def _as_nchw_uint8(images) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"DeviceLoader: images must be uint8 (N, H, W, 3) or (N, 3, H, W), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] == 3:
        return images.contiguous()
    if images.shape[-1] == 3:
        return images.permute(0, 3, 1, 2).contiguous()
    raise ValueError(f"DeviceLoader: images need 3 channels first or last, got shape {tuple(images.shape)}")


class DeviceLoader:
    """Batches from uint8 images held on the training device, augmented there.

    Train mode: each epoch a permutation (sharded across ranks, see `shard_order`) and, per
    image, a crop offset and a flip, all drawn on the CPU from a generator seeded with
    (seed, epoch) and moved to the device once per epoch; then per batch a gather, a crop, a
    flip and a normalisation on the device, with no host-device synchronisation. Same
    semantics as torchvision's RandomCrop(H, padding) + RandomHorizontalFlip + ToTensor +
    Normalize. Eval mode (train=False): no augmentation, dataset order, last batch kept.
    Call `set_epoch(epoch)` before iterating each epoch (as with DistributedSampler).
    Yields (x float32 (B, 3, H, W) normalised, y int64 (B,)).
    """

    def __init__(self, images, labels, batch_size: int, device="cpu", train: bool = True,
                 crop_padding: int = 4, flip: bool = True, mean=CIFAR100_MEAN, std=CIFAR100_STD,
                 seed: int = 0, drop_last: bool | None = None, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, names: SettingNames = CONFIG):
        check_shard(rank, world_size)
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise UserError(f"batch size must be a positive integer, got {batch_size!r}")
        if crop_padding < 0:
            raise UserError(f"data.augment.crop_padding: must be >= 0, got {crop_padding}")
        self.device = torch.device(device)
        self.images = _as_nchw_uint8(images).to(self.device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).to(self.device)
        if len(self.labels) != len(self.images):
            raise ValueError(f"DeviceLoader: {len(self.images)} images but {len(self.labels)} labels")
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.crop_padding = crop_padding if train else 0
        self.flip = flip and train
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.epoch = 0
        check_batches(len(self.plan(0).order), batch_size, self.drop_last, world_size, names)

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The order and augmentation of an epoch (this rank's shard), on the CPU."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.labels)
        order = shard_order(n, self.seed, epoch, self.train, self.rank, self.world_size)
        if not self.train:
            zeros = torch.zeros(len(order), dtype=torch.int64)
            return EpochPlan(order, zeros, zeros, torch.zeros(len(order), dtype=torch.bool))
        # Drawn for every image of the dataset, then picked by this rank's order: an image's
        # augmentation in an epoch does not depend on the number of ranks.
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 1))
        dy, dx, flips = draw_augmentation(n, self.crop_padding, self.flip, g)
        return EpochPlan(order, dy[order], dx[order], flips[order])

    def __len__(self) -> int:
        n = len(self.labels)
        per_rank = n // self.world_size if self.train else len(range(self.rank, n, self.world_size))
        return batches(per_rank, self.batch_size, self.drop_last)

    def __iter__(self):
        plan = self.plan()
        order, dy, dx, flip = (t.to(self.device, non_blocking=True) for t in
                               (plan.order, plan.dy, plan.dx, plan.flip))
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[sl]
            images = self.images[idx]
            if self.train:
                x = crop_flip_normalize(images, dy[sl], dx[sl], flip[sl], self.crop_padding, self.mean, self.std)
            else:
                x = normalize_uint8(images, self.mean, self.std)
            x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
            yield x, self.labels[idx]
