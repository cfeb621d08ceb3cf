"""prs.data: synthetic CIFAR-100 files, subsets, image folders, the two loaders."""

import math
import random
import re

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.datasets import CIFAR100

from prs import config, data
from prs.config import AugmentConfig, DataConfig
from prs.errors import UserError

MEAN = torch.tensor(data.CIFAR100_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(data.CIFAR100_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def data_root(synthetic_root):
    """A data root holding the default synthetic set (tests/conftest.py)."""
    return synthetic_root


@pytest.fixture(scope="module")
def data_synthetic(data_root):
    return data.load_datasets("synthetic", data_root)


def tiny_images(n=37, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))


# ----------------------------------------------------------------------------- synthetic files


def test_synthetic_is_read_by_torchvision_cifar100_loader(data_root, data_synthetic):
    train, test = data_synthetic
    assert isinstance(train, CIFAR100)  # torchvision's API: .data, .targets, .classes, PIL images
    assert train.data.shape == (5000, 32, 32, 3) and train.data.dtype == np.uint8
    assert test.data.shape == (1000, 32, 32, 3)
    assert np.bincount(train.targets, minlength=100).tolist() == [50] * 100
    assert np.bincount(test.targets, minlength=100).tolist() == [10] * 100
    assert train.classes == data.synthetic_class_names() and len(set(train.classes)) == 100
    assert train.class_to_idx[train.classes[7]] == 7
    image, label = train[0]
    assert isinstance(image, Image.Image) and image.size == (32, 32) and image.mode == "RGB"
    assert label == train.targets[0] and np.array_equal(np.asarray(image), train.data[0])
    # The files are plain arrays: readable without pickle.
    folder = data_root / "synthetic" / data.ARRAY_FOLDER
    with np.load(folder / "train.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["images", "labels"]
        assert np.array_equal(npz["images"], train.data) and npz["labels"].tolist() == train.targets


def test_synthetic_images_are_those_of_the_pickle_writer():
    """The first pixels and labels of seed 0 (4 + 2 per class), as the earlier CIFAR-pickle writer
    produced them: the smoke results before and after the switch to .npz stay comparable."""
    import hashlib
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        data.write_synthetic_cifar100(tmp, train_per_class=4, test_per_class=2)
        train, test = data.ArrayCIFAR100(tmp, train=True), data.ArrayCIFAR100(tmp, train=False)
    digest = hashlib.sha256(train.data.tobytes() + test.data.tobytes()).hexdigest()[:16]
    assert (digest, train.targets[:5], test.targets[:5]) == (SEED0_TINY_DIGEST, SEED0_TINY_TRAIN, SEED0_TINY_TEST)


def test_synthetic_deterministic_per_seed(tmp_path):
    kw = dict(train_per_class=2, test_per_class=1)
    a = data.write_synthetic_cifar100(tmp_path / "a", seed=3, **kw)
    b = data.write_synthetic_cifar100(tmp_path / "b", seed=3, **kw)
    c = data.write_synthetic_cifar100(tmp_path / "c", seed=4, **kw)
    for name in ("train.npz", "test.npz", "dataset.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "train.npz").read_bytes() != (c / "train.npz").read_bytes()
    assert (a / "test.npz").read_bytes() != (c / "test.npz").read_bytes()


def test_synthetic_rewrite_and_conflict(tmp_path):
    folder = data.write_synthetic_cifar100(tmp_path, seed=0, train_per_class=1, test_per_class=1)
    stamp = (folder / "train.npz").stat().st_mtime_ns
    assert data.write_synthetic_cifar100(tmp_path, seed=0, train_per_class=1, test_per_class=1) == folder
    assert (folder / "train.npz").stat().st_mtime_ns == stamp  # kept, not rewritten
    with pytest.raises(UserError, match="exists and is not the dataset asked for"):
        data.write_synthetic_cifar100(tmp_path, seed=1, train_per_class=1, test_per_class=1)
    with pytest.raises(UserError, match="train_per_class"):
        data.write_synthetic_cifar100(tmp_path / "x", train_per_class=0)


def test_synthetic_write_is_atomic(tmp_path, monkeypatch):
    calls = []
    real_savez = np.savez

    def failing_savez(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        real_savez(*args, **kwargs)

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        data.write_synthetic_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    assert list(tmp_path.iterdir()) == []  # neither a half-written dataset nor a temp folder


def test_synthetic_corruption_is_detected(tmp_path):
    folder = data.write_synthetic_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    blob = bytearray((folder / "test.npz").read_bytes())
    blob[-20] ^= 1
    (folder / "test.npz").write_bytes(bytes(blob))
    with pytest.raises(UserError, match=f"{folder / 'test.npz'} is corrupted"):
        data.ArrayCIFAR100(tmp_path, train=False)


def plant(folder, split, **arrays):
    """Replace a split's file and update the manifest's digest, so that only the content is wrong."""
    import hashlib
    import json
    path = folder / f"{split}.npz"
    np.savez(path, **arrays)
    manifest = json.loads((folder / "dataset.json").read_text())
    manifest["sha256"][split] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "dataset.json").write_text(json.dumps(manifest))
    return path


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("case, message", [
    ("pickle", "cannot be read as arrays"),
    ("truncated", "cannot be read as arrays"),
    ("wrong shape", "images must be uint8 of shape (N, 32, 32, 3), got uint8 (2, 3, 32, 32)"),
    ("float images", "images must be uint8"),
    ("label range", "labels must be in [0, 100), found 0..100"),
    ("label count", "labels must be 2 integers"),
    ("no labels", "cannot be read as arrays"),
])
def test_planted_or_broken_files_with_a_consistent_manifest_are_one_line(tmp_path, case, message):
    """The manifest's digests match the files (as an attacker, or a half-finished copy, would leave
    them); what is in the files is still checked, and a pickle is never loaded."""
    folder = data.write_synthetic_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    marker = tmp_path / "executed"
    good = data.read_array_split(folder, "test")
    images, labels = good[0][:2], good[1][:2]
    if case == "pickle":
        path = plant(folder, "test", images=np.array([Evil(marker)], dtype=object), labels=labels)
    elif case == "truncated":
        path = plant(folder, "test", images=images, labels=labels)
        path.write_bytes(path.read_bytes()[:300])
        plant_digest = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
        manifest = __import__("json").loads((folder / "dataset.json").read_text())
        manifest["sha256"]["test"] = plant_digest
        (folder / "dataset.json").write_text(__import__("json").dumps(manifest))
    elif case == "wrong shape":
        path = plant(folder, "test", images=images.transpose(0, 3, 1, 2).copy(), labels=labels)
    elif case == "float images":
        path = plant(folder, "test", images=images.astype(np.float32), labels=labels)
    elif case == "label range":
        path = plant(folder, "test", images=images, labels=np.array([0, 100]))
    elif case == "label count":
        path = plant(folder, "test", images=images, labels=np.array([1, 2, 3]))
    else:
        path = plant(folder, "test", images=images)
    with pytest.raises(UserError) as e:
        data.ArrayCIFAR100(tmp_path, train=False)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_write_array_dataset_takes_any_generator_s_arrays(tmp_path):
    """The writer is separate from the synthetic generator: any arrays and class names."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    folder = data.write_array_dataset(tmp_path / data.ARRAY_FOLDER, images, [0, 1, 2, 0, 1, 2], images[:3], [2, 1, 0],
                                      ["a", "b", "c"], {"generator": "test", "seed": 0})
    train = data.ArrayCIFAR100(tmp_path, train=True)
    assert train.classes == ["a", "b", "c"] and train.targets == [0, 1, 2, 0, 1, 2]
    assert np.array_equal(train.data, images) and folder == tmp_path / data.ARRAY_FOLDER
    with pytest.raises(UserError, match="labels must be in"):
        data.write_array_dataset(tmp_path / "other", images, [0, 1, 2, 0, 1, 3], images, [0] * 6, ["a", "b", "c"], {})


def test_synthetic_is_learnable_and_position_free(data_synthetic):
    """Nearest class mean on |FFT| (shift-invariant) beats chance (1 %) by far; on raw pixels
    (position-bound) it does not: the class lives in a motif at a random place."""
    train, test = data_synthetic
    ytr, yte = torch.tensor(train.targets), torch.tensor(test.targets)

    def ncm_accuracy(features):
        ftr, fte = features(train.data), features(test.data)
        means = torch.zeros(100, ftr.shape[1]).index_add_(0, ytr, ftr) / torch.bincount(ytr)[:, None]
        return (torch.cdist(fte, means).argmin(1) == yte).float().mean().item()

    def pixels(x):
        return torch.from_numpy(x).float().flatten(1) / 255

    def fft_magnitude(x):
        x = torch.from_numpy(x).float().permute(0, 3, 1, 2) / 255
        return torch.log1p(torch.fft.fft2(x - x.mean((2, 3), keepdim=True)).abs()).flatten(1)

    fft_acc, pixel_acc = ncm_accuracy(fft_magnitude), ncm_accuracy(pixels)
    assert fft_acc > 0.15, fft_acc
    assert fft_acc > 3 * pixel_acc, (fft_acc, pixel_acc)


# ----------------------------------------------------------------------------- names, roots, CIFAR-100


@pytest.mark.parametrize("name", ["cifar100", "synthetic", "imagefolder:/data/imagenet"])
def test_dataset_names_accepted(name):
    assert data.check_dataset_name(name) == name


@pytest.mark.parametrize("name", ["imagenet", "CIFAR100", "imagefolder:", "imagefolder: ", None, 3])
def test_dataset_names_rejected(name):
    with pytest.raises(UserError, match=re.escape(data.DATASET_FORMS)):
        data.check_dataset_name(name)


def test_missing_cifar100_without_download_is_one_line_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PRS_DATA", str(tmp_path / "env-root"))
    with pytest.raises(UserError) as err:
        data.load_datasets("cifar100")  # root from $PRS_DATA
    message = str(err.value)
    assert "\n" not in message
    assert f"prs data download --root {tmp_path / 'env-root'}" in message
    assert "data.download=true" in message and "cifar-100-python/" in message
    assert not (tmp_path / "env-root").exists()  # nothing downloaded or created


def test_data_root_resolution(monkeypatch):
    monkeypatch.setenv("PRS_DATA", "/somewhere")
    assert str(data.data_root("/given")) == "/given"
    assert str(data.data_root()) == "/somewhere"
    monkeypatch.delenv("PRS_DATA")
    assert str(data.data_root()) == "data"


# Computed with the pickle writer of commit 70be2db (before the .npz files).
SEED0_TINY_DIGEST, SEED0_TINY_TRAIN, SEED0_TINY_TEST = "c87f308ab588513f", [99, 71, 88, 71, 85], [32, 59, 22, 99, 56]


def tmp_path_factory_root(data_root):
    """A data root beside `data_root` whose synthetic set has the same size and labels, but its
    training images mirrored: the same subset indices, other pixels."""
    other = data_root.parent / (data_root.name + "_mirrored")
    folder = data_root / "synthetic" / data.ARRAY_FOLDER
    (train, ytrain, classes), (test, ytest, _) = (data.read_array_split(folder, s) for s in ("train", "test"))
    data.write_array_dataset(other / "synthetic" / data.ARRAY_FOLDER, train[:, :, ::-1].copy(), ytrain, test, ytest,
                             classes, {"mirrored": True})
    return other


def test_cifar100_loader_rejects_synthetic_files(tmp_path):
    # Synthetic data is never taken for CIFAR-100: other files, in another folder.
    data.write_synthetic_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    with pytest.raises(UserError, match="CIFAR-100 not found"):
        data.load_datasets("cifar100", tmp_path)


# ----------------------------------------------------------------------------- subsets


def shuffled_labels(per_class=50, classes=100, seed=1):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class))


@pytest.mark.parametrize("ratio, per_class", [(0.1, 5), (0.25, 12), (0.5, 25), (0.29, 14), (1.0, 50)])
def test_balanced_subset_counts(ratio, per_class):
    labels = shuffled_labels()
    idx = data.balanced_subset(labels, ratio, seed=0)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)  # sorted, unique
    assert np.bincount(labels[idx], minlength=100).tolist() == [per_class] * 100


def test_balanced_subset_floor_is_exact_for_decimal_ratios():
    labels = np.repeat(np.arange(3), 100)
    assert len(data.balanced_subset(labels, 0.29, 0)) == 3 * 29  # 0.29 * 100 is 28.999... in floats


def test_balanced_subset_deterministic_nested_and_seeded():
    labels = shuffled_labels()
    small, large, half = (data.balanced_subset(labels, r, seed=7) for r in (0.1, 0.25, 0.5))
    assert np.array_equal(small, data.balanced_subset(labels, 0.1, seed=7))
    assert set(small) <= set(large) <= set(half)
    assert not np.array_equal(small, data.balanced_subset(labels, 0.1, seed=8))


def test_balanced_subset_full_ratio_and_unbalanced_classes():
    labels = shuffled_labels()
    assert np.array_equal(data.balanced_subset(labels, 1.0, 3), np.arange(len(labels)))
    unbalanced = np.array([0] * 10 + [1] * 20 + [2] * 7)
    idx = data.balanced_subset(unbalanced, 0.5, 0)
    assert np.bincount(unbalanced[idx]).tolist() == [5, 10, 3]


@pytest.mark.parametrize("ratio", [0, 0.0, -0.1, 1.01, 2, float("nan"), True, "0.5", None])
def test_bad_ratio_raises(ratio):
    with pytest.raises(UserError, match=r"data.ratio: must be a number in \(0, 1\]"):
        data.balanced_subset(shuffled_labels(), ratio, 0)
    with pytest.raises(UserError, match="data.ratio"):
        data.imagefolder_subset([("a/x.png", 0)], ratio)


def test_ratio_that_empties_a_class_raises():
    with pytest.raises(UserError, match="keeps no image of class"):
        data.balanced_subset(shuffled_labels(per_class=50), 0.01, 0)


def test_train_subset_never_touches_test_set(data_root, data_synthetic):
    train, test = data_synthetic
    idx = data.train_indices("synthetic", train, 0.1, seed=0)
    assert len(idx) == 500 and idx.max() < len(train)
    assert np.bincount(data.labels_of(train)[idx], minlength=100).tolist() == [5] * 100
    cfg = DataConfig(dataset="synthetic", root=str(data_root), ratio=0.1)
    train_loader, test_loader, info = data.build_loaders(cfg, 50, 300, "cpu", seed=0)
    assert info["train_size"] == 500 and info["test_size"] == 1000 == len(test)
    assert info["train_indices_sha"] == data.indices_sha(idx)
    seen = torch.cat([y for _, y in test_loader])  # the whole test set, in order
    assert seen.tolist() == test.targets
    train_loader.set_epoch(0)
    labels = torch.cat([y for _, y in train_loader])
    assert len(labels) == 500 and sorted(labels.tolist()) == sorted(data.labels_of(train)[idx].tolist())


# ----------------------------------------------------------------------------- image folders


def write_png_folder(root, classes, per_class, split="train"):
    rng = np.random.default_rng(0)
    for c in classes:
        folder = root / split / c
        folder.mkdir(parents=True)
        for name in rng.permutation([f"img_{i:02d}.png" for i in range(per_class)]):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / name)


def test_imagefolder_subset_takes_first_sorted_files(tmp_path):
    write_png_folder(tmp_path, ["cat", "dog", "eel"], 10)
    write_png_folder(tmp_path, ["cat", "dog", "eel"], 2, split="val")
    train, val = data.load_datasets(f"imagefolder:{tmp_path}")
    assert len(train) == 30 and len(val) == 6 and train.classes == ["cat", "dog", "eel"]
    idx = data.train_indices(f"imagefolder:{tmp_path}", train, 0.35, seed=123)
    chosen = sorted((train.classes[train.samples[i][1]], train.samples[i][0].split("/")[-1]) for i in idx)
    assert chosen == [(c, f"img_{i:02d}.png") for c in ("cat", "dog", "eel") for i in range(3)]
    # Order of the input list does not matter; the rule is by path.
    samples = list(reversed(train.samples))
    picked = {samples[i][0] for i in data.imagefolder_subset(samples, 0.35)}
    assert picked == {train.samples[i][0] for i in idx}
    assert np.array_equal(data.imagefolder_subset(train, 1.0), np.arange(30))


def test_imagefolder_layout_errors(tmp_path):
    (tmp_path / "train").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "loose.png")  # no class folders
    (tmp_path / "val").mkdir()
    with pytest.raises(UserError, match=r"train/<class>/<image>") as err:
        data.load_datasets(f"imagefolder:{tmp_path}")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no 'train' folder"):
        data.load_datasets(f"imagefolder:{tmp_path / 'nowhere'}")


def test_imagefolder_loaders(tmp_path):
    write_png_folder(tmp_path, ["a", "b"], 6)
    write_png_folder(tmp_path, ["a", "b"], 3, split="val")
    cfg = DataConfig(dataset=f"imagefolder:{tmp_path}", loader="device")
    with pytest.raises(UserError, match="data.loader=torchvision"):
        data.build_loaders(cfg, 4, 4, "cpu", seed=0)
    cfg = DataConfig(dataset=f"imagefolder:{tmp_path}", loader="torchvision", num_workers=0, image_size=16,
                     ratio=0.5, augment=AugmentConfig(crop_padding=2))
    train_loader, test_loader, info = data.build_loaders(cfg, 2, 4, "cpu", seed=0)
    assert info["num_classes"] == 2 and info["train_size"] == 6 and info["test_size"] == 6
    assert len(train_loader) == 3 and len(test_loader) == 2
    train_loader.set_epoch(0)
    x, y = next(iter(train_loader))
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64


# ----------------------------------------------------------------------------- device loader vs torchvision


def torchvision_reference(image_hwc, dy, dx, flip, padding):
    """torchvision's functional RandomCrop(padding) + flip + ToTensor + Normalize, replayed."""
    img = Image.fromarray(image_hwc.numpy())
    img = TF.crop(TF.pad(img, padding, fill=0), int(dy), int(dx), 32, 32)
    if flip:
        img = TF.hflip(img)
    return TF.normalize(TF.to_tensor(img), data.CIFAR100_MEAN, data.CIFAR100_STD)


@pytest.mark.parametrize("padding", [4, 0])
def test_device_loader_equals_torchvision_pipeline(padding):
    images, labels = tiny_images(37), torch.arange(37) % 5
    loader = data.DeviceLoader(images, labels, 8, "cpu", train=True, crop_padding=padding, seed=5)
    loader.set_epoch(2)
    plan = loader.plan()
    assert len(loader) == 4 and len(plan.order) == 37
    batches = list(loader)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert plan.flip.any() and not plan.flip.all()
    if padding:
        assert (plan.dy != padding).any()
    for k in range(32):
        i = int(plan.order[k])
        expected = torchvision_reference(images[i], plan.dy[k], plan.dx[k], plan.flip[k], padding)
        assert torch.allclose(x[k], expected, atol=1e-6, rtol=0), k
        assert y[k] == labels[i]


def test_torchvision_transform_matches_one_device_crop():
    """Cross-check of the two pipelines: torchvision_transform's output is one of the 9*9*2
    crops/flips the device path can produce for that image, and a varied one over draws."""
    image = tiny_images(1, seed=3)
    nchw = image.permute(0, 3, 1, 2).expand(162, -1, -1, -1)
    grid = torch.tensor([(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)])
    candidates = data.crop_flip_normalize(nchw, grid[:, 0], grid[:, 1], grid[:, 2].bool(), 4, MEAN, STD)
    transform = data.torchvision_transform(train=True, image_size=32, crop_padding=4, flip=True)
    torch.manual_seed(0)
    hits = set()
    for _ in range(20):
        out = transform(Image.fromarray(image[0].numpy()))
        match = [j for j in range(162) if torch.allclose(candidates[j], out, atol=1e-6)]
        assert match, "torchvision output is not a device-path crop"
        hits.add(match[0])
    assert len(hits) > 5


def test_augmentation_statistics():
    g = torch.Generator().manual_seed(0)
    dy, dx, flip = data.draw_augmentation(90_000, 4, True, g)
    assert 0.49 < flip.float().mean() < 0.51
    for offsets in (dy, dx):
        assert offsets.min() == 0 and offsets.max() == 8
        freq = torch.bincount(offsets, minlength=9).float() / len(offsets)
        assert torch.all((freq - 1 / 9).abs() < 0.006), freq
    assert torch.corrcoef(torch.stack([dy.float(), dx.float()]))[0, 1].abs() < 0.02
    _, _, no_flip = data.draw_augmentation(100, 4, False, g)
    assert not no_flip.any()


def test_eval_loader_is_plain_normalisation_in_order():
    images, labels = tiny_images(23), torch.arange(23)
    loader = data.DeviceLoader(images, labels, 10, "cpu", train=False)
    assert len(loader) == 3
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    assert y.tolist() == list(range(23))
    reference = torch.stack([TF.normalize(TF.to_tensor(Image.fromarray(im.numpy())), data.CIFAR100_MEAN,
                                          data.CIFAR100_STD) for im in images])
    assert torch.allclose(x, reference, atol=1e-6, rtol=0)


def test_device_loader_accepts_nchw_and_channels_last():
    images = tiny_images(8)
    a = data.DeviceLoader(images, torch.zeros(8), 4, train=False)
    b = data.DeviceLoader(images.permute(0, 3, 1, 2), torch.zeros(8), 4, train=False, channels_last=True)
    xa, xb = next(iter(a))[0], next(iter(b))[0]
    assert torch.equal(xa, xb) and xb.is_contiguous(memory_format=torch.channels_last)


def collect(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def same_batches(a, b):
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_device_loader_reproducible_per_seed_and_epoch():
    images, labels = tiny_images(40), torch.arange(40)

    def make(seed):
        return data.DeviceLoader(images, labels, 16, "cpu", train=True, seed=seed)

    run = make(0)
    first = [collect(run, e) for e in range(3)]
    assert same_batches(first[2], collect(make(0), 2))  # resume at epoch 2 = the uninterrupted epoch 2
    assert not same_batches(first[0], first[1])
    assert not same_batches(first[0], collect(make(1), 0))
    # The order itself changes with the epoch and the seed, not only the crops and flips.
    assert not torch.equal(run.plan(0).order, run.plan(1).order)
    assert not torch.equal(run.plan(0).order, make(1).plan(0).order)
    assert torch.equal(run.plan(1).order, make(0).plan(1).order)
    assert len(first[0]) == 2  # drop_last in training: 40 // 16


def test_distributed_shards_disjoint_equal_and_covering():
    n, world = 100, 3
    images, labels = tiny_images(n), torch.arange(n)
    single = data.DeviceLoader(images, labels, 11, "cpu", seed=4).plan(5)
    plans = [data.DeviceLoader(images, labels, 11, "cpu", seed=4, rank=r, world_size=world).plan(5)
             for r in range(world)]
    shards = [p.order.tolist() for p in plans]
    assert [len(s) for s in shards] == [33, 33, 33]
    union = sorted(sum(shards, []))
    assert len(set(union)) == 99 and set(union) <= set(range(n))  # disjoint; one image of 100 dropped
    assert set(union) == set(single.order[:99].tolist())
    # An image's augmentation does not depend on how many ranks share the epoch.
    by_image = {int(i): (int(a), int(b), bool(f))
                for i, a, b, f in zip(single.order, single.dy, single.dx, single.flip)}
    for p in plans:
        for i, a, b, f in zip(p.order, p.dy, p.dx, p.flip):
            assert by_image[int(i)] == (int(a), int(b), bool(f))
    # Evaluation shards cover every image exactly once.
    evals = [data.DeviceLoader(images, labels, 8, "cpu", train=False, rank=r, world_size=world) for r in range(world)]
    seen = sorted(int(v) for e in evals for _, y in e for v in y)
    assert seen == list(range(n))
    assert [len(e) for e in evals] == [5, 5, 5]  # 34, 33, 33 images in batches of 8


def test_device_loader_input_errors():
    with pytest.raises(UserError, match="10 images cannot fill one batch of 16.*lower train.batch_size"):
        data.DeviceLoader(tiny_images(10), torch.zeros(10), 16, "cpu", train=True)
    with pytest.raises(UserError, match=r"5 images per rank \(of 2\) cannot fill one batch of 8"):
        data.DeviceLoader(tiny_images(10), torch.zeros(10), 8, "cpu", train=True, rank=1, world_size=2)
    with pytest.raises(UserError, match="rank"):
        data.DeviceLoader(tiny_images(10), torch.zeros(10), 2, "cpu", rank=2, world_size=2)
    with pytest.raises(ValueError, match="uint8"):
        data.DeviceLoader(tiny_images(4).float(), torch.zeros(4), 2, "cpu")


# ----------------------------------------------------------------------------- torchvision loader, assembly


@pytest.mark.parametrize("loader", ["device", "torchvision"])
def test_too_few_images_for_one_batch_names_the_config_fields(data_root, loader):
    cfg = DataConfig(dataset="synthetic", root=str(data_root), ratio=0.02, loader=loader)  # 100 images
    with pytest.raises(UserError) as error:
        data.build_loaders(cfg, 128, 500, "cpu", seed=0)
    message = str(error.value)
    assert "\n" not in message and "Loader" not in message and "drop" not in message
    for part in ("100 images", "batch of 128", "zero batches", "lower train.batch_size", "raise data.ratio"):
        assert part in message, (part, message)


def test_torchvision_loader_reproducible_and_leaves_global_rng_alone(data_root):
    cfg = DataConfig(dataset="synthetic", root=str(data_root), loader="torchvision", num_workers=0, ratio=0.1,
                     augment=AugmentConfig(randaugment="rand-m9-n2-mstd1.0"))
    loader, test_loader, info = data.build_loaders(cfg, 50, 500, "cpu", seed=1)
    assert len(loader) == 10 and len(test_loader) == 2 and info["num_classes"] == 100
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    loader.set_epoch(3)
    x1, y1 = next(iter(loader))
    after = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    assert after == (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(99)  # other global RNG states: same batch
    np.random.seed(99)
    x2, y2 = next(iter(loader))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (50, 3, 32, 32) and x1.dtype == torch.float32
    loader.set_epoch(4)
    x3, _ = next(iter(loader))
    assert not torch.equal(x1, x3)
    # The same batch from a worker process: augmentation is seeded per (seed, epoch, image).
    cfg.num_workers = 1
    with_worker = data.build_loaders(cfg, 50, 500, "cpu", seed=1)[0]
    with_worker.set_epoch(3)
    x4, y4 = next(iter(with_worker))
    assert torch.equal(x1, x4) and torch.equal(y1, y4)


def test_build_loaders_device_path(data_root):
    cfg = DataConfig(dataset="synthetic", root=str(data_root), ratio=0.5, loader="device")
    train_loader, test_loader, info = data.build_loaders(cfg, 64, 256, "cpu", seed=0, channels_last=True)
    assert info == {"num_classes": 100, "train_size": 2500, "test_size": 1000, "dataset": "synthetic",
                    "ratio": 0.5, "train_indices_sha": info["train_indices_sha"], "data_sha": info["data_sha"],
                    "mean": data.CIFAR100_MEAN, "std": data.CIFAR100_STD}
    # data_sha is the content: the same indices of another synthetic set of the same size differ.
    other = tmp_path_factory_root(data_root)
    _, _, info_other = data.build_loaders(DataConfig(dataset="synthetic", root=str(other), ratio=0.5),
                                          64, 500, "cpu", seed=0)
    assert info_other["train_indices_sha"] == info["train_indices_sha"] and info_other["data_sha"] != info["data_sha"]
    assert len(info["train_indices_sha"]) == 12
    assert len(train_loader) == 2500 // 64 and len(test_loader) == 4
    train_loader.set_epoch(0)
    x, y = next(iter(train_loader))
    assert x.shape == (64, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    other = data.build_loaders(DataConfig(dataset="synthetic", root=str(data_root), ratio=0.5, subset_seed=1),
                               64, 256, "cpu", seed=0)[2]
    assert other["train_indices_sha"] != info["train_indices_sha"]


def test_build_loaders_config_errors(data_root):
    with pytest.raises(UserError, match="data.image_size"):
        data.build_loaders(DataConfig(dataset="synthetic", root=str(data_root), image_size=64), 8, 8, "cpu", 0)
    # What a single config can say is checked once, by the config, before any data is read.
    with pytest.raises(UserError, match="randaugment"):
        config.from_dict({"data": {"dataset": "synthetic", "root": str(data_root),
                                   "augment": {"randaugment": "rand-m9-n2"}}})


def test_build_mixup():
    assert data.build_mixup(AugmentConfig(), 100) is None
    mixup = data.build_mixup(AugmentConfig(mixup=0.8, cutmix=1.0, label_smoothing=0.1), 10)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    _, soft = mixup(x, y)
    assert soft.shape == (4, 10) and torch.allclose(soft.sum(1), torch.ones(4))
    assert soft.min() >= 0.1 / 10 - 1e-6  # label smoothing reached the targets
    with pytest.raises(UserError, match="train.batch_size.*even"):
        config.from_dict({"data": {"augment": {"cutmix": 1.0}}, "train": {"batch_size": 7}})


def test_sample_images(data_root, data_synthetic):
    _, test = data_synthetic
    a = data.sample_images("synthetic", data_root, n=16, seed=0)
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, data.sample_images("synthetic", data_root, n=16, seed=0))
    assert not torch.equal(a, data.sample_images("synthetic", data_root, n=16, seed=1))
    # Each sample is a normalised test image.
    flat = torch.from_numpy(test.data).permute(0, 3, 1, 2).float().div(255).sub(MEAN).div(STD)
    assert all(any(torch.allclose(img, ref) for ref in flat) for img in a[:3])
    assert math.isclose(a.mean().item(), flat.mean().item(), abs_tol=0.2)
    with pytest.raises(UserError, match="sample_images"):
        data.sample_images("synthetic", data_root, n=10**6)


def test_loader_errors_name_the_settings_they_are_given(data_root):
    """`prs bench` passes its flags: the message names them, and no setting the command lacks."""
    cfg = DataConfig(dataset="synthetic", root=str(data_root), ratio=0.02)  # 100 images
    flags = data.SettingNames(batch_size="--batch-size", ratio=None)
    with pytest.raises(UserError) as error:
        data.build_loaders(cfg, 128, 500, "cpu", seed=0, names=flags)
    message = str(error.value)
    assert "lower --batch-size" in message and "train.batch_size" not in message and "ratio" not in message
    with pytest.raises(UserError, match="--dataset: unknown dataset"):
        data.check_dataset_name("cifar10", setting="--dataset")
