"""What the loaders refuse, said in the user's terms.

A user sets a batch size and a data ratio, not a loader's drop_last: each check names the
settings the user controls, the config fields by default (`CONFIG`), or a command's flags
(`prs bench` passes its own `SettingNames`). The dataset name and the other single fields are
checked by `prs.config`; what is checked here depends on the data or on several fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from prs.data.datasets import is_imagefolder
from prs.errors import UserError


@dataclass(frozen=True)
class SettingNames:
    """The names under which the user set what a check is about."""

    batch_size: str = "train.batch_size"
    ratio: str | None = "data.ratio"  # None: the command has no such setting


CONFIG = SettingNames()


def check_loader_settings(data_cfg) -> None:
    """The loader fits the dataset: the device loader holds 32x32 CIFAR-format arrays, which are 32x32."""
    name = data_cfg.dataset
    folder = is_imagefolder(name)
    if data_cfg.loader == "device" and folder:
        raise UserError(f"data.loader: 'device' holds 32x32 CIFAR-format arrays; for {name} "
                        f"set data.loader=torchvision")
    if not folder and data_cfg.image_size != 32:
        raise UserError(f"data.image_size: {name} images are 32x32, got {data_cfg.image_size}; set data.image_size=32")


def check_shard(rank: int, world_size: int) -> None:
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise UserError(f"distributed: rank {rank!r} must be in [0, world_size) with world_size >= 1, "
                        f"got world_size {world_size!r}")


def batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def check_batches(n: int, batch_size: int, drop_last: bool, world_size: int, names: SettingNames = CONFIG) -> None:
    """An epoch of n images (per rank) has at least one batch."""
    if batches(n, batch_size, drop_last) == 0:
        where = f" per rank (of {world_size})" if world_size > 1 else ""
        fix = f"raise {names.ratio} (up to 1, or use a larger dataset)" if names.ratio else "use a larger dataset"
        raise UserError(f"{n} images{where} cannot fill one batch of {batch_size}, so an epoch would have zero "
                        f"batches: lower {names.batch_size} or {fix}")
