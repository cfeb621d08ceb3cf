"""The loaders of a run: `build_loaders` for a DataConfig, `build_mixup`, and `sample_images` for analysis."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from prs.data.datasets import (CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD, is_imagefolder, labels_of,
                               load_datasets)
from prs.data.device_loader import DeviceLoader, normalize_uint8
from prs.data.subsets import indices_sha, train_indices
from prs.data.torchvision_loader import TorchvisionLoader, torchvision_transform
from prs.data.validation import CONFIG, SettingNames, check_loader_settings
from prs.errors import UserError


def _cifar_arrays(ds, indices=None):
    """uint8 (N, 32, 32, 3) images and int64 labels of a torchvision CIFAR dataset."""
    images, labels = ds.data, labels_of(ds)
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def content_sha(train_ds, indices, test_ds, folder: bool) -> str:
    """Short hash of what a run trains and is tested on: the training subset's and the test set's
    pixels and labels (CIFAR-format data); for image folders the files' relative paths, sizes and
    labels (their bytes would take minutes to read for ImageNet)."""
    h = hashlib.sha256()
    for ds, picks in ((train_ds, indices), (test_ds, None)):
        if folder:
            root = Path(ds.root)
            samples = ds.samples if picks is None else [ds.samples[int(i)] for i in picks]
            for path, label in samples:
                h.update(f"{Path(path).relative_to(root)}\0{os.path.getsize(path)}\0{label}\n".encode())
        else:
            images, labels = ds.data, labels_of(ds)
            if picks is not None:
                images, labels = images[picks], labels[picks]
            h.update(np.ascontiguousarray(images).data)
            h.update(np.asarray(labels, dtype="<i8").tobytes())
    return h.hexdigest()[:12]


def build_loaders(data_cfg, batch_size: int, eval_batch_size: int, device, seed: int,
                  rank: int = 0, world_size: int = 1, channels_last: bool = False, names: SettingNames = CONFIG):
    """(train_loader, test_loader, info) for a validated prs.config.DataConfig.

    The training subset comes from `train_indices(dataset, ratio, data_cfg.subset_seed)`; the
    test set is always complete. `seed` drives the epoch order and augmentation. With
    world_size > 1 the test shards differ in size by at most one image: sum correct counts
    and image counts across ranks rather than averaging per-rank accuracies. Errors name the
    user's settings as `names` gives them.
    """
    check_loader_settings(data_cfg)
    name, aug = data_cfg.dataset, data_cfg.augment
    folder = is_imagefolder(name)
    train_ds, test_ds = load_datasets(name, data_cfg.root, data_cfg.download)
    indices = train_indices(name, train_ds, data_cfg.ratio, data_cfg.subset_seed)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if folder else (CIFAR100_MEAN, CIFAR100_STD)
    shard = dict(device=device, seed=seed, rank=rank, world_size=world_size, channels_last=channels_last, names=names)
    if data_cfg.loader == "device":
        images, labels = _cifar_arrays(train_ds, indices)
        train_loader = DeviceLoader(images, labels, batch_size, train=True, crop_padding=aug.crop_padding,
                                    flip=aug.flip, mean=mean, std=std, **shard)
        test_loader = DeviceLoader(*_cifar_arrays(test_ds), eval_batch_size, train=False, mean=mean, std=std, **shard)
    else:
        common = dict(image_size=data_cfg.image_size, crop_padding=aug.crop_padding, flip=aug.flip,
                      resize=folder, mean=mean, std=std)
        train_tf = torchvision_transform(True, randaugment=aug.randaugment, **common)
        test_tf = torchvision_transform(False, **common)
        train_loader = TorchvisionLoader(train_ds, indices, train_tf, batch_size, train=True,
                                         num_workers=data_cfg.num_workers, **shard)
        test_loader = TorchvisionLoader(test_ds, None, test_tf, eval_batch_size, train=False,
                                        num_workers=data_cfg.num_workers, **shard)
    info = {
        "num_classes": len(train_ds.classes),
        "train_size": len(indices),
        "test_size": len(test_ds),
        "dataset": name,
        "ratio": float(data_cfg.ratio),
        "train_indices_sha": indices_sha(indices),
        "data_sha": content_sha(train_ds, indices, test_ds, folder),
        "mean": tuple(mean),
        "std": tuple(std),
    }
    return train_loader, test_loader, info


def build_mixup(augment_cfg, num_classes: int):
    """timm Mixup/CutMix (with the config's label smoothing) if either alpha is > 0, else None.

    Its targets are soft: train with timm's SoftTargetCrossEntropy. It needs even batches
    (the config checks train.batch_size).
    """
    if augment_cfg.mixup <= 0 and augment_cfg.cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=augment_cfg.mixup, cutmix_alpha=augment_cfg.cutmix,
                 label_smoothing=augment_cfg.label_smoothing, num_classes=num_classes)


def sample_images(dataset: str, root=None, n: int = 64, seed: int = 0, train: bool = False,
                  image_size: int = 32) -> torch.Tensor:
    """A fixed, seeded sample of n normalised images (n, 3, S, S), no augmentation (for Fourier analysis)."""
    train_ds, test_ds = load_datasets(dataset, root, download=False)
    ds = train_ds if train else test_ds
    if not 0 < n <= len(ds):
        raise UserError(f"sample_images: n must be in [1, {len(ds)}] for this split, got {n}")
    picks = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    if is_imagefolder(dataset):
        tf = torchvision_transform(False, image_size=image_size, resize=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return torch.stack([tf(ds[int(i)][0]) for i in picks])
    images, _ = _cifar_arrays(ds, picks)
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    return normalize_uint8(images.permute(0, 3, 1, 2), mean, std).contiguous()
