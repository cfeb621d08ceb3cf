"""Datasets by name and where they live: "cifar100", "synthetic", "synthetic-relation" and "imagefolder:<path>".

* "cifar100": torchvision's CIFAR100 under the data root (downloaded only on request);
* "synthetic": arrays written offline (`prs.data.synthetic`, `.npz` files that cannot run code),
  read through torchvision's CIFAR100 API (`prs.data.arrays.ArrayCIFAR100`);
* "synthetic-relation": the switch's positive control, two classes (`prs.data.relation`), stored the same way;
* "imagefolder:<path>": torchvision ImageFolder on <path>/train and <path>/val (e.g. ImageNet).

Datasets come back without transforms; the loaders add them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR100, ImageFolder

from prs.data.arrays import ARRAY_FOLDER, ArrayCIFAR100
from prs.data.relation import write_relation_dataset
from prs.data.synthetic import write_synthetic_cifar100
from prs.errors import UserError

CIFAR_FOLDER = CIFAR100.base_folder  # "cifar-100-python": real CIFAR-100 only
# Datasets generated offline, by name: writer(root) puts `<root>/prs-npz` there with default settings;
# `data.dataset: NAME` reads `<data root>/NAME/prs-npz` (written on first use).
GENERATED = {"synthetic": write_synthetic_cifar100, "synthetic-relation": write_relation_dataset}

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# Image folders (ImageNet and the like) are normalised with ImageNet's statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATASET_FORMS = "'cifar100', 'synthetic', 'synthetic-relation' or 'imagefolder:<path>'"


def check_dataset_name(dataset, setting: str = "data.dataset") -> str:
    """Return `dataset` if it is one of the known forms, else raise a UserError naming `setting`."""
    if isinstance(dataset, str):
        if dataset == "cifar100" or dataset in GENERATED:
            return dataset
        if dataset.startswith("imagefolder:") and dataset[len("imagefolder:"):].strip():
            return dataset
    raise UserError(f"{setting}: unknown dataset {dataset!r}; use {DATASET_FORMS}")


def is_imagefolder(dataset: str) -> bool:
    return check_dataset_name(dataset).startswith("imagefolder:")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else $PRS_DATA, else ./data."""
    if root is None:
        root = os.environ.get("PRS_DATA") or "data"
    return Path(root).expanduser()


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
    "synthetic": `<root>/synthetic/prs-npz`, written on first use with the default
    settings (write a bigger one there beforehand with `write_synthetic_cifar100` to use it);
    "imagefolder:<path>": ImageFolder on <path>/train and <path>/val (`root` unused).
    """
    check_dataset_name(dataset)
    if is_imagefolder(dataset):
        return _load_imagefolder(Path(dataset[len("imagefolder:"):]).expanduser())
    root = data_root(root)
    if dataset == "cifar100":
        return _load_cifar100(root, download)
    generated_root = root / dataset
    if not (generated_root / ARRAY_FOLDER).exists():
        GENERATED[dataset](generated_root)
    return ArrayCIFAR100(generated_root, train=True), ArrayCIFAR100(generated_root, train=False)


def labels_of(ds) -> np.ndarray:
    """Integer class labels of a CIFAR / ImageFolder dataset (or a Subset of one), in order."""
    if isinstance(ds, torch.utils.data.Subset):
        return labels_of(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets, dtype=np.int64)
    raise TypeError(f"labels_of: {type(ds).__name__} has no 'targets'")
