"""ViT/DeiT and ConViT at 32x32 (timm's VisionTransformer and ConVit), patch 4 by default.

Sizes follow DeiT/ConViT (Ti: 192-dim, S: 384/432-dim, depth 12); the smoke variants are
small enough to train on two CPU cores. ConViT's first `local_up_to_layer` blocks are GPSA.
"""

from __future__ import annotations

from timm.models.convit import ConVit
from timm.models.vision_transformer import VisionTransformer

from prs.errors import UserError
from prs.models import register


def _no_stages(switchable_stages):
    if switchable_stages is not None:
        raise UserError("model.switchable_stages: only hybrid models have switchable stages; set it to null")


def vit(embed_dim, depth, num_heads, num_classes=100, drop_path=0.0, patch_size=4, switchable_stages=None):
    _no_stages(switchable_stages)
    model = VisionTransformer(img_size=32, patch_size=patch_size, num_classes=num_classes, embed_dim=embed_dim,
                              depth=depth, num_heads=num_heads, drop_path_rate=drop_path)
    model.prs_family = "vit"
    return model


def convit(head_dim, depth, num_heads, local_up_to_layer, num_classes=100, drop_path=0.0, patch_size=4,
           locality_strength=1.0, switchable_stages=None):
    _no_stages(switchable_stages)
    # timm's ConVit takes the per-head width as `embed_dim` and multiplies it by num_heads.
    model = ConVit(img_size=32, patch_size=patch_size, num_classes=num_classes, embed_dim=head_dim, depth=depth,
                   num_heads=num_heads, local_up_to_layer=local_up_to_layer, locality_strength=locality_strength,
                   drop_path_rate=drop_path)
    model.prs_family = "convit"
    return model


@register
def vit_smoke(num_classes=100, drop_path=0.0, patch_size=4, switchable_stages=None):
    return vit(64, 3, 4, num_classes, drop_path, patch_size, switchable_stages)


@register
def deit_tiny(num_classes=100, drop_path=0.0, patch_size=4, switchable_stages=None):
    return vit(192, 12, 3, num_classes, drop_path, patch_size, switchable_stages)


@register
def deit_small(num_classes=100, drop_path=0.0, patch_size=4, switchable_stages=None):
    return vit(384, 12, 6, num_classes, drop_path, patch_size, switchable_stages)


@register
def convit_smoke(num_classes=100, drop_path=0.0, patch_size=4, switchable_stages=None):
    return convit(16, 3, 4, 2, num_classes, drop_path, patch_size, switchable_stages=switchable_stages)


@register
def convit_tiny(num_classes=100, drop_path=0.0, patch_size=4, switchable_stages=None):
    return convit(48, 12, 4, 10, num_classes, drop_path, patch_size, switchable_stages=switchable_stages)


@register
def convit_small(num_classes=100, drop_path=0.0, patch_size=4, switchable_stages=None):
    return convit(48, 12, 9, 10, num_classes, drop_path, patch_size, switchable_stages=switchable_stages)
