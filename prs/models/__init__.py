"""Model registry, as in timm: `register(family=...)`, `create(name, **kw)`, `names(family=None)`, `family(name)`.

Every model takes 32x32 RGB images and returns logits of shape (B, num_classes). Each is
registered with its family, which is the only place a model's kind is stated:

- "resnet": CIFAR ResNets (timm's ResNet with a 3x3 stride-1 stem and no max-pool);
- "hybrid": the same ResNets with the stride-1 3x3 convolutions of chosen stages as
  `prs.reparam.ReparamConv2d` layers, which a schedule switches into self-attention
  (the only family with switchable layers);
- "vit": ViT/DeiT (timm's VisionTransformer);
- "convit": ConViT (timm's ConVit).

Entry points take keyword arguments only: `num_classes`, `drop_path`, `switchable_stages`
(hybrids; the others refuse it) and, for ViTs and ConViTs, `patch_size`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

from torch import nn

from prs.errors import UserError

FAMILIES = ("resnet", "hybrid", "vit", "convit")
CONVOLUTIONAL = ("resnet", "hybrid")  # families that train in channels_last memory order


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., nn.Module]
    family: str


_REGISTRY: dict[str, _Entry] = {}


def register(*, family: str) -> Callable:
    """Decorator: register a model entry point under its function name, in `family`."""
    if family not in FAMILIES:
        raise ValueError(f"register: family '{family}' is not one of {', '.join(FAMILIES)}")

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"register: model '{fn.__name__}' is registered twice")
        _REGISTRY[fn.__name__] = _Entry(fn, family)
        return fn

    return decorate


def names(family: str | None = None) -> list[str]:
    """Registered model names, sorted; only those of `family` when it is given."""
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def check_name(name: str, setting: str = "model.name") -> str:
    """`name` if it is registered, else a UserError naming `setting` and the choices."""
    if name not in _REGISTRY:
        raise UserError(f"{setting}: unknown model '{name}'; choose one of {', '.join(names())}")
    return name


def family(name: str) -> str:
    """The family a model was registered in: 'resnet', 'hybrid', 'vit' or 'convit'."""
    return _REGISTRY[check_name(name)].family


def create(name: str, num_classes: int = 100, **kwargs) -> nn.Module:
    return _REGISTRY[check_name(name)].fn(num_classes=num_classes, **kwargs)


with warnings.catch_warnings():
    # timm imports huggingface_hub, which imports tqdm.auto: in a Jupyter kernel without
    # ipywidgets that warns "IProgress not found" (the notebooks show no progress bars).
    warnings.filterwarnings("ignore", message="IProgress not found")
    from prs.models import resnet, vit  # noqa: E402,F401  (registers the models)
from prs.models.vit import use_fused_attention  # noqa: E402,F401
