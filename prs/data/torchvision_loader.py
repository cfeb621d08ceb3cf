"""`TorchvisionLoader`: a DataLoader over PIL images with torchvision/timm transforms (needed for
RandAugment and image folders), sharded and seeded like `DeviceLoader`."""

from __future__ import annotations

import random

import numpy as np
import torch

from prs.data.datasets import CIFAR100_MEAN, CIFAR100_STD
from prs.data.order import epoch_seed, shard_order
from prs.data.validation import CONFIG, SettingNames, check_batches, check_shard
from prs.errors import UserError


def torchvision_transform(train: bool, image_size: int = 32, crop_padding: int = 4, flip: bool = True,
                          randaugment: str | None = None, resize: bool = False,
                          mean=CIFAR100_MEAN, std=CIFAR100_STD):
    """PIL -> normalised tensor. Train: [Resize + CenterCrop] RandomCrop(padding), flip,
    timm RandAugment (config string such as "rand-m9-n2-mstd1.0"), ToTensor, Normalize.
    `resize` (image folders): first resize the short side to image_size and center-crop."""
    from torchvision import transforms as T

    steps = [T.Resize(image_size), T.CenterCrop(image_size)] if resize else []
    if train:
        if crop_padding:
            steps.append(T.RandomCrop(image_size, padding=crop_padding))
        if flip:
            steps.append(T.RandomHorizontalFlip())
        if randaugment:
            from timm.data import rand_augment_transform

            hparams = {"translate_const": int(image_size * 0.45), "img_mean": tuple(round(255 * m) for m in mean)}
            try:
                steps.append(rand_augment_transform(randaugment, hparams))
            except (AssertionError, ValueError, KeyError, IndexError) as e:
                raise UserError(f"data.augment.randaugment: bad timm config {randaugment!r} ({e}); "
                                f"e.g. 'rand-m9-n2-mstd1.0'") from None
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


class UnreadableImage(UserError):
    """An image file that cannot be decoded (raised in a loader worker; `TorchvisionLoader` reports it)."""

    @classmethod
    def one_line(cls, error: Exception) -> str:
        """The message, also when a DataLoader worker wrapped it in its traceback text."""
        last = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        return last.split(f"{cls.__name__}: ", 1)[-1]


class _SeededTransform(torch.utils.data.Dataset):
    """Applies a random transform with python/numpy/torch RNGs seeded from (seed, epoch, index).

    Items are requested as (index, epoch); the global RNG states are restored afterwards, so
    the result depends neither on the worker count nor on what else uses those RNGs.
    """

    def __init__(self, base, indices, transform, seed: int):
        self.base, self.indices, self.transform, self.seed = base, np.asarray(indices), transform, seed

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, item):
        position, epoch = item
        index = int(self.indices[position])
        try:
            image, label = self.base[index]
        except OSError as e:  # PIL's UnidentifiedImageError, a truncated file
            where = self.base.samples[index][0] if hasattr(self.base, "samples") else f"image {index}"
            raise UnreadableImage(f"image {where} cannot be read ({type(e).__name__}); delete or replace "
                                  "that file") from None
        s = epoch_seed(self.seed, epoch, 2, position)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)
            x = self.transform(image)
        random.setstate(py_state)
        np.random.set_state(np_state)
        return x, label


class _EpochSampler(torch.utils.data.Sampler):
    def __init__(self, n: int, seed: int, shuffle: bool, rank: int, world_size: int):
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch = 0

    def __iter__(self):
        order = shard_order(self.n, self.seed, self.epoch, self.shuffle, self.rank, self.world_size)
        return iter([(int(i), self.epoch) for i in order])

    def __len__(self):
        return self.n // self.world_size if self.shuffle else len(range(self.rank, self.n, self.world_size))


class TorchvisionLoader:
    """A torch DataLoader over (a subset of) a PIL dataset, sharded and seeded like DeviceLoader,
    moving batches to `device`. Call `set_epoch(epoch)` before each epoch."""

    def __init__(self, dataset, indices, transform, batch_size: int, device="cpu", train: bool = True,
                 seed: int = 0, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, names: SettingNames = CONFIG):
        check_shard(rank, world_size)
        self.device = torch.device(device)
        self.channels_last = channels_last
        indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
        self.sampler = _EpochSampler(len(indices), seed, train, rank, world_size)
        check_batches(len(self.sampler), batch_size, train, world_size, names)
        self.loader = torch.utils.data.DataLoader(
            _SeededTransform(dataset, indices, transform, seed), batch_size=batch_size, sampler=self.sampler,
            num_workers=num_workers, drop_last=train, pin_memory=self.device.type == "cuda",
            # Its own generator, so that starting an epoch does not draw from the global torch RNG.
            generator=torch.Generator().manual_seed(seed))

    def set_epoch(self, epoch: int):
        self.sampler.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        try:
            for x, y in self.loader:
                yield (x.to(self.device, non_blocking=True, memory_format=memory_format),
                       y.to(self.device, non_blocking=True))
        except UnreadableImage as e:
            raise UnreadableImage(UnreadableImage.one_line(e)) from None
