"""Model registry: `create(name, num_classes=100, **kw)` and `names()`, as in timm.

Every model takes 32x32 RGB images and returns logits of shape (B, num_classes).
Families: CIFAR ResNets, ViT/DeiT, ConViT (all built from timm's own classes) and the
hybrid: a CIFAR ResNet whose stride-1 3x3 convolutions in chosen stages are
`prs.reparam.ReparamConv2d` layers that can be switched into self-attention.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from prs.errors import UserError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, num_classes: int = 100, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise UserError(f"model.name: unknown model '{name}'; choose one of {', '.join(names())}")
    model = _REGISTRY[name](num_classes=num_classes, **kwargs)
    model.prs_name = name
    return model


def family(model: nn.Module) -> str:
    """'resnet', 'hybrid', 'vit' or 'convit'."""
    return model.prs_family


from prs.models import resnet, vit  # noqa: E402,F401  (registers the models)
from prs.models.vit import use_fused_attention  # noqa: E402,F401
