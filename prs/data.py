"""Datasets, the offline synthetic CIFAR-100, data-scale subsets and the two loaders.

* Datasets: "cifar100" (torchvision's CIFAR100), "synthetic" (files in CIFAR-100's exact
  on-disk format, written offline by `write_synthetic_cifar100`, read back by torchvision's
  CIFAR100 loader) and "imagefolder:<path>" (torchvision ImageFolder on <path>/train and
  <path>/val, e.g. ImageNet). Datasets come back without transforms; the loaders add them.
* Subsets: `balanced_subset` (seeded, stratified, nested across ratios) for CIFAR-format data,
  `imagefolder_subset` (ConViT's rule: per class the first files in sorted order) for folders.
  The test set is always complete.
* Loaders: `DeviceLoader` keeps uint8 images on the training device and crops/flips/normalises
  whole batches there; `TorchvisionLoader` is a DataLoader over PIL images with torchvision/timm
  transforms (needed for RandAugment and image folders). Both are driven by `set_epoch(epoch)`:
  the epoch's order and augmentation are a function of (seed, epoch) only, so runs are
  reproducible and a resume at an epoch boundary is exact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.datasets import CIFAR100, ImageFolder

from prs.errors import UserError

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# Image folders (ImageNet and the like) are normalised with ImageNet's statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CIFAR_FOLDER = "cifar-100-python"  # torchvision's CIFAR100.base_folder
SYNTHETIC_MANIFEST = "synthetic.json"
SYNTHETIC_FORMAT = "prs-synthetic-cifar100"
SYNTHETIC_VERSION = 1
DATASET_FORMS = "'cifar100', 'synthetic' or 'imagefolder:<path>'"


# ----------------------------------------------------------------------------- names and roots


def check_dataset_name(dataset) -> str:
    """Return `dataset` if it is one of the known forms, else raise UserError."""
    if isinstance(dataset, str):
        if dataset in ("cifar100", "synthetic"):
            return dataset
        if dataset.startswith("imagefolder:") and dataset[len("imagefolder:"):].strip():
            return dataset
    raise UserError(f"data.dataset: unknown dataset {dataset!r}; use {DATASET_FORMS}")


def is_imagefolder(dataset: str) -> bool:
    return check_dataset_name(dataset).startswith("imagefolder:")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else $PRS_DATA, else ./data."""
    if root is None:
        root = os.environ.get("PRS_DATA") or "data"
    return Path(root).expanduser()


def _check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)) \
            or not 0.0 < float(ratio) <= 1.0:
        raise UserError(f"data.ratio: must be a number in (0, 1], got {ratio!r}")
    return float(ratio)


def _subset_count(n: int, ratio: float) -> int:
    # floor(n * ratio), with a tolerance so that e.g. 0.29 * 100 = 28.999999999999996 counts 29.
    return min(n, int(math.floor(n * ratio + 1e-9)))


# ----------------------------------------------------------------------------- synthetic CIFAR-100

SHAPES = ("disk", "ring", "square", "frame", "plus", "cross", "triangle", "hstripes", "vstripes", "diamond")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta", "white", "black")
PALETTE = np.array([
    (0.90, 0.10, 0.10), (1.00, 0.55, 0.00), (0.95, 0.90, 0.10), (0.10, 0.75, 0.20), (0.10, 0.85, 0.90),
    (0.15, 0.25, 0.95), (0.55, 0.15, 0.85), (0.95, 0.20, 0.75), (0.97, 0.97, 0.97), (0.05, 0.05, 0.05),
], dtype=np.float32)


def synthetic_class_names() -> list[str]:
    """Class c is the shape SHAPES[c // 10] in the colour COLOURS[c % 10]."""
    return [f"{COLOURS[c % 10]}_{SHAPES[c // 10]}" for c in range(100)]


def _shape_mask(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Masks of the 10 motifs on per-image coordinates u, v (x and y in units of the motif radius).

    shape: (N,) ints; u, v: (N, 32, 32). Every motif fits in the square |u|, |v| <= 1.
    """
    mask = np.zeros(u.shape, dtype=bool)
    for s in np.unique(shape):
        pick = shape == s
        mask[pick] = _MOTIFS[SHAPES[s]](u[pick], v[pick])
    return mask


def _stripes(w):  # 3 stripes across [-1, 1]
    return np.floor((w + 1.0) * 2.5) % 2 == 0


_MOTIFS = {
    "disk": lambda u, v: u * u + v * v <= 1.0,
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.55 ** 2),
    "square": lambda u, v: np.maximum(abs(u), abs(v)) <= 0.8,
    "frame": lambda u, v: (np.maximum(abs(u), abs(v)) <= 0.95) & (np.maximum(abs(u), abs(v)) >= 0.55),
    "plus": lambda u, v: (np.maximum(abs(u), abs(v)) <= 1.0) & ((abs(u) <= 0.3) | (abs(v) <= 0.3)),
    "cross": lambda u, v: (np.maximum(abs(u), abs(v)) <= 1.0) & ((abs(u - v) <= 0.4) | (abs(u + v) <= 0.4)),
    "triangle": lambda u, v: (abs(v) <= 0.9) & (abs(u) <= (v + 0.9) / 1.8),  # apex up
    "hstripes": lambda u, v: (np.maximum(abs(u), abs(v)) <= 0.95) & _stripes(v),
    "vstripes": lambda u, v: (np.maximum(abs(u), abs(v)) <= 0.95) & _stripes(u),
    "diamond": lambda u, v: abs(u) + abs(v) <= 1.0,
}


def _synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images: class motif at a random place on a textured background."""
    n, size, f32 = len(labels), 32, np.float32
    # Background: a grey level with a slight tint, a smooth random texture (a 5x5 grid of
    # values bilinearly upsampled) and pixel noise; none of it depends on the class.
    grey = rng.uniform(0.3, 0.7, (n, 1, 1, 1)) + rng.normal(0, 0.04, (n, 3, 1, 1))
    grid = rng.normal(0, 0.12, (n, 3, 5, 5)).astype(f32)
    t = np.linspace(0, 4, size, dtype=f32)
    up = np.maximum(0, 1 - np.abs(t[:, None] - np.arange(5, dtype=f32)[None, :]))  # (32, 5) bilinear weights
    img = (grey.astype(f32) + up @ grid @ up.T).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    # Motif: radius 4-6 px (slightly different in x and y), centre anywhere it fits.
    radius = rng.uniform(4.0, 6.0, (n, 1)) * rng.uniform(0.9, 1.1, (n, 2))
    centre = rng.uniform(radius, size - 1 - radius)
    yy, xx = np.mgrid[0:size, 0:size].astype(f32)
    u = (xx[None] - centre[:, 0, None, None].astype(f32)) / radius[:, 0, None, None].astype(f32)
    v = (yy[None] - centre[:, 1, None, None].astype(f32)) / radius[:, 1, None, None].astype(f32)
    mask = _shape_mask(labels // 10, u, v)[..., None]
    colour = PALETTE[labels % 10] * rng.uniform(0.8, 1.0, (n, 1)) + rng.normal(0, 0.04, (n, 3))
    img = np.where(mask, colour[:, None, None, :].astype(f32), img)
    img += rng.standard_normal(img.shape, dtype=f32) * f32(0.05)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _synthetic_split(rng: np.random.Generator, per_class: int, split: str) -> dict:
    labels = rng.permutation(np.repeat(np.arange(100), per_class))  # shuffled, as CIFAR's files are
    chunks = [_synthetic_images(labels[i:i + 2048], rng) for i in range(0, len(labels), 2048)]
    images = np.concatenate(chunks) if chunks else np.zeros((0, 32, 32, 3), np.uint8)
    names = synthetic_class_names()
    return {
        "filenames": [f"{names[c]}_{split}_{i:06d}.png" for i, c in enumerate(labels)],
        "batch_label": f"synthetic {split} batch 1 of 1",
        "fine_labels": [int(c) for c in labels],
        "coarse_labels": [int(c) // 5 for c in labels],
        # CIFAR's layout: one row per image, the 1024 red values, then green, then blue.
        "data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)),
    }


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / SYNTHETIC_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == SYNTHETIC_FORMAT else None


def write_synthetic_cifar100(root, seed: int = 0, train_per_class: int = 50, test_per_class: int = 10) -> Path:
    """Write a synthetic 100-class dataset as `<root>/cifar-100-python/{train,test,meta}`.

    The files have CIFAR-100's layout (pickled dicts with 'data' uint8 (N, 3072), 'fine_labels',
    'coarse_labels', 'filenames', 'batch_label'; meta with 'fine_label_names' and
    'coarse_label_names'), plus `synthetic.json` with the generator settings and the files'
    md5 sums, which `SyntheticCIFAR100` hands to torchvision's integrity check. Class c is a
    motif of shape c // 10 and colour c % 10 pasted at a random position on a textured, noisy
    background; coarse label c // 5. Deterministic in `seed`; written to a temporary folder
    and renamed into place, so a reader never sees half a dataset. If the folder already holds
    the same synthetic set it is kept; anything else there is an error. Returns the folder.
    """
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"synthetic data: {name} must be a positive integer, got {value!r}")
    root = Path(root)
    final = root / CIFAR_FOLDER
    settings = {"format": SYNTHETIC_FORMAT, "version": SYNTHETIC_VERSION, "seed": int(seed),
                "train_per_class": train_per_class, "test_per_class": test_per_class}

    def existing_matches() -> bool:
        manifest = _read_manifest(final)
        if manifest is not None and all(manifest.get(k) == v for k, v in settings.items()):
            return True
        raise UserError(f"'{final}' exists and is not the synthetic set asked for ({settings}); "
                        f"delete it or write to another root")

    if final.exists() and existing_matches():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CIFAR_FOLDER}.tmp-", dir=root))
    try:
        train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))
        parts = {
            "train": _synthetic_split(train_rng, train_per_class, "train"),
            "test": _synthetic_split(test_rng, test_per_class, "test"),
            "meta": {"fine_label_names": synthetic_class_names(),
                     "coarse_label_names": [f"{SHAPES[k // 2]}_{'warm' if k % 2 == 0 else 'cool'}"
                                            for k in range(20)]},
        }
        for name, content in parts.items():
            with open(tmp / name, "wb") as f:
                pickle.dump(content, f, protocol=2)
        md5 = {name: _md5(tmp / name) for name in parts}
        (tmp / SYNTHETIC_MANIFEST).write_text(json.dumps({**settings, "md5": md5}, indent=1) + "\n")
        try:
            tmp.rename(final)
        except OSError:
            if not final.exists():
                raise
            existing_matches()  # another process wrote it first; accept it if it is the same set
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class SyntheticCIFAR100(CIFAR100):
    """torchvision's CIFAR100 loader, checking the md5 sums from the synthetic set's manifest.

    The real CIFAR100 class hard-codes the md5 sums of the official files, which synthetic
    files cannot match; everything else (file names, pickle keys, decoding) is torchvision's.
    """

    def __init__(self, root, train: bool = True, transform=None, target_transform=None):
        folder = Path(root) / CIFAR_FOLDER
        manifest = _read_manifest(folder)
        if manifest is None:
            raise UserError(f"'{folder}' is not a synthetic dataset (no {SYNTHETIC_MANIFEST}); "
                            f"delete it, or write one with prs.data.write_synthetic_cifar100")
        md5 = manifest["md5"]
        # Instance attributes shadow the class's official checksums.
        self.train_list = [["train", md5["train"]]]
        self.test_list = [["test", md5["test"]]]
        self.meta = {**type(self).meta, "md5": md5["meta"]}
        try:
            super().__init__(root, train=train, transform=transform, target_transform=target_transform)
        except RuntimeError as e:
            raise UserError(f"synthetic dataset '{folder}' is corrupted ({e}); delete the folder and "
                            f"it is written again") from None


# ----------------------------------------------------------------------------- loading


def download_cifar100(root=None) -> Path:
    """Download CIFAR-100 into `<root>/cifar-100-python` (root as in `data_root`)."""
    root = data_root(root)
    try:
        for train in (True, False):
            CIFAR100(root, train=train, download=True)
    except (OSError, RuntimeError) as e:
        raise UserError(f"could not download CIFAR-100 into '{root}' ({e}); check the network, or put "
                        f"{CIFAR_FOLDER}/ from https://www.cs.toronto.edu/~kriz/cifar.html under it") from None
    return root / CIFAR_FOLDER


def _load_cifar100(root: Path, download: bool):
    if download:
        download_cifar100(root)
    if not (root / CIFAR_FOLDER / "train").is_file() or not (root / CIFAR_FOLDER / "test").is_file():
        raise UserError(f"CIFAR-100 not found under '{root}' (need {root / CIFAR_FOLDER}/train and test): run "
                        f"`prs data download --root {root}`, set data.download=true, or put {CIFAR_FOLDER}/ there")
    try:
        return CIFAR100(root, train=True), CIFAR100(root, train=False)
    except RuntimeError as e:
        raise UserError(f"CIFAR-100 under '{root}' failed torchvision's md5 check ({e}); delete "
                        f"{root / CIFAR_FOLDER} and run `prs data download --root {root}`") from None


def _load_imagefolder(path: Path):
    layout = f"expected {path}/train/<class>/<image> and {path}/val/<class>/<image>"
    splits = []
    for split in ("train", "val"):
        if not (path / split).is_dir():
            raise UserError(f"image folder '{path}': no '{split}' folder; {layout}")
        try:
            splits.append(ImageFolder(str(path / split)))
        except FileNotFoundError as e:
            raise UserError(f"image folder '{path / split}': {str(e).splitlines()[0]}; {layout}") from None
    if splits[0].classes != splits[1].classes:
        raise UserError(f"image folder '{path}': train has {len(splits[0].classes)} classes and val "
                        f"{len(splits[1].classes)}, with different names; both need the same class folders")
    return splits[0], splits[1]


def load_datasets(dataset: str, root=None, download: bool = False):
    """(train_ds, test_ds) without transforms.

    "cifar100": torchvision CIFAR100 under the data root (downloaded only if `download`);
    "synthetic": `<root>/synthetic/cifar-100-python`, written on first use with the default
    settings (write a bigger one there beforehand with `write_synthetic_cifar100` to use it);
    "imagefolder:<path>": ImageFolder on <path>/train and <path>/val (`root` unused).
    """
    check_dataset_name(dataset)
    if is_imagefolder(dataset):
        return _load_imagefolder(Path(dataset[len("imagefolder:"):]).expanduser())
    root = data_root(root)
    if dataset == "cifar100":
        return _load_cifar100(root, download)
    synthetic_root = root / "synthetic"
    if not (synthetic_root / CIFAR_FOLDER).exists():
        write_synthetic_cifar100(synthetic_root)
    return SyntheticCIFAR100(synthetic_root, train=True), SyntheticCIFAR100(synthetic_root, train=False)


def labels_of(ds) -> np.ndarray:
    """Integer class labels of a CIFAR / ImageFolder dataset (or a Subset of one), in order."""
    if isinstance(ds, torch.utils.data.Subset):
        return labels_of(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets, dtype=np.int64)
    raise TypeError(f"labels_of: {type(ds).__name__} has no 'targets'")


# ----------------------------------------------------------------------------- data-scale subsets


def balanced_subset(labels, ratio: float, seed: int) -> np.ndarray:
    """Sorted int64 indices of a seeded, stratified sample keeping `ratio` of every class.

    Rule: class c with n_c images keeps k_c = floor(n_c * ratio) of them (so equal-size classes
    keep equal counts), chosen as the first k_c of the class in an order drawn from `seed`
    (one random key per image, sorted within its class). The order does not depend on the
    ratio, so for one seed a smaller ratio's subset lies inside a larger one's. A class
    that would keep no image is an error.
    """
    ratio = _check_ratio(ratio)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"balanced_subset: labels must be 1-D, got shape {labels.shape}")
    keys = np.random.default_rng(seed).random(len(labels))
    order = np.lexsort((keys, labels))  # grouped by class, random within a class
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    keep = np.array([_subset_count(int(n), ratio) for n in counts], dtype=np.int64)
    if len(keep) and keep.min() == 0:
        c = int(np.argmin(keep))
        raise UserError(f"data.ratio: {ratio} keeps no image of class {classes[c]} ({counts[c]} images); "
                        f"use a ratio >= {1 / counts.min():.4g}")
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    chosen = order[rank < np.repeat(keep, counts)]
    return np.sort(chosen).astype(np.int64)


def imagefolder_subset(samples_or_dataset, ratio: float) -> np.ndarray:
    """ConViT's rule: per class the first floor(n_c * ratio) files in sorted path order.

    Takes an ImageFolder (its `.samples`) or a list of (path, class_index); returns sorted int64
    indices into that list. Deterministic; no seed.
    """
    ratio = _check_ratio(ratio)
    samples = getattr(samples_or_dataset, "samples", samples_or_dataset)
    by_class: dict[int, list[tuple[str, int]]] = {}
    for i, (path, label) in enumerate(samples):
        by_class.setdefault(int(label), []).append((str(path), i))
    chosen = []
    for label, files in sorted(by_class.items()):
        k = _subset_count(len(files), ratio)
        if k == 0:
            raise UserError(f"data.ratio: {ratio} keeps no image of class {label} ({len(files)} images); "
                            f"use a ratio >= {1 / len(files):.4g}")
        chosen += [i for _, i in sorted(files)[:k]]
    return np.sort(np.array(chosen, dtype=np.int64))


def train_indices(dataset_name: str, train_ds, ratio: float, seed: int) -> np.ndarray:
    """Indices of the training subset: ConViT's rule for image folders, else `balanced_subset`."""
    if is_imagefolder(dataset_name):
        return imagefolder_subset(train_ds, ratio)
    return balanced_subset(labels_of(train_ds), ratio, seed)


def indices_sha(indices) -> str:
    """Short hash of a subset, to record which images a run trained on."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()[:12]


# ----------------------------------------------------------------------------- epoch order


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


def _check_shard(rank: int, world_size: int):
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise UserError(f"distributed: rank {rank!r} must be in [0, world_size) with world_size >= 1, "
                        f"got world_size {world_size!r}")


def _batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def _check_nonempty(n: int, batch_size: int, drop_last: bool, world_size: int):
    # Said in config terms: users set train.batch_size and data.ratio, not the loader or drop_last.
    if _batches(n, batch_size, drop_last) == 0:
        where = f" per rank (of {world_size})" if world_size > 1 else ""
        raise UserError(f"{n} images{where} cannot fill one batch of {batch_size}, so an epoch would have zero "
                        f"batches: lower train.batch_size or raise data.ratio (up to 1, or use a larger dataset)")


# ----------------------------------------------------------------------------- device loader


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
                 channels_last: bool = False):
        _check_shard(rank, world_size)
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
        _check_nonempty(len(self.plan(0).order), batch_size, self.drop_last, world_size)

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
        return _batches(per_rank, self.batch_size, self.drop_last)

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


# ----------------------------------------------------------------------------- torchvision loader


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
        image, label = self.base[int(self.indices[position])]
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
                 channels_last: bool = False):
        _check_shard(rank, world_size)
        self.device = torch.device(device)
        self.channels_last = channels_last
        indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
        self.sampler = _EpochSampler(len(indices), seed, train, rank, world_size)
        _check_nonempty(len(self.sampler), batch_size, train, world_size)
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
        for x, y in self.loader:
            yield (x.to(self.device, non_blocking=True, memory_format=memory_format),
                   y.to(self.device, non_blocking=True))


# ----------------------------------------------------------------------------- assembly


def _cifar_arrays(ds, indices=None):
    """uint8 (N, 32, 32, 3) images and int64 labels of a torchvision CIFAR dataset."""
    images, labels = ds.data, labels_of(ds)
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def build_loaders(data_cfg, batch_size: int, eval_batch_size: int, device, seed: int,
                  rank: int = 0, world_size: int = 1, channels_last: bool = False):
    """(train_loader, test_loader, info) for a prs.config.DataConfig.

    The training subset comes from `train_indices(dataset, ratio, data_cfg.subset_seed)`; the
    test set is always complete. `seed` drives the epoch order and augmentation. With
    world_size > 1 the test shards differ in size by at most one image: sum correct counts
    and image counts across ranks rather than averaging per-rank accuracies.
    """
    name = check_dataset_name(data_cfg.dataset)
    aug = data_cfg.augment
    folder = is_imagefolder(name)
    if data_cfg.loader not in ("device", "torchvision"):
        raise UserError(f"data.loader: '{data_cfg.loader}' is not one of device, torchvision")
    if data_cfg.loader == "device" and folder:
        raise UserError(f"data.loader: 'device' holds 32x32 CIFAR-format arrays; for {name} "
                        f"set data.loader=torchvision")
    if data_cfg.loader == "device" and aug.randaugment:
        raise UserError("data.augment.randaugment: needs data.loader 'torchvision' (RandAugment runs on PIL images)")
    if not folder and data_cfg.image_size != 32:
        raise UserError(f"data.image_size: {name} images are 32x32, got {data_cfg.image_size}; set data.image_size=32")
    train_ds, test_ds = load_datasets(name, data_cfg.root, data_cfg.download)
    indices = train_indices(name, train_ds, data_cfg.ratio, data_cfg.subset_seed)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if folder else (CIFAR100_MEAN, CIFAR100_STD)
    shard = dict(device=device, seed=seed, rank=rank, world_size=world_size, channels_last=channels_last)
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
        "mean": tuple(mean),
        "std": tuple(std),
    }
    return train_loader, test_loader, info


def build_mixup(augment_cfg, num_classes: int, batch_size: int | None = None):
    """timm Mixup/CutMix (with the config's label smoothing) if either alpha is > 0, else None.

    Its targets are soft: train with timm's SoftTargetCrossEntropy. It needs even batches.
    """
    if augment_cfg.mixup <= 0 and augment_cfg.cutmix <= 0:
        return None
    if batch_size is not None and batch_size % 2:
        raise UserError(f"train.batch_size: mixup/cutmix needs an even batch size, got {batch_size}")
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
