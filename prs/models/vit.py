"""ViT/DeiT and ConViT at 32x32 (timm's VisionTransformer and ConVit), patch 4 by default.

Sizes follow DeiT/ConViT (Ti: 192-dim, S: 384/432-dim, depth 12); the smoke variants are
small enough to train on two CPU cores. ConViT's first `local_up_to_layer` blocks are GPSA.

`use_fused_attention` swaps timm's ConViT attention modules for ones with the same parameters
and function that do not materialise per-sample attention maps (timm's ViT already uses
scaled_dot_product_attention); the training engine applies it, the registry returns timm's models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.convit import GPSA, MHSA, ConVit
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from prs.errors import UserError
from prs.models import register


def _no_stages(switchable_stages):
    if switchable_stages is not None:
        raise UserError("model.switchable_stages: only hybrid models have switchable stages; set it to null")


def vit(embed_dim, depth, num_heads, num_classes=100, drop_path=0.0, patch_size=4, switchable_stages=None):
    _no_stages(switchable_stages)
    return VisionTransformer(img_size=32, patch_size=patch_size, num_classes=num_classes, embed_dim=embed_dim,
                             depth=depth, num_heads=num_heads, drop_path_rate=drop_path)


def convit(head_dim, depth, num_heads, local_up_to_layer, num_classes=100, drop_path=0.0, patch_size=4,
           locality_strength=1.0, switchable_stages=None):
    _no_stages(switchable_stages)
    # timm's ConVit takes the per-head width as `embed_dim` and multiplies it by num_heads.
    return ConVit(img_size=32, patch_size=patch_size, num_classes=num_classes, embed_dim=head_dim, depth=depth,
                  num_heads=num_heads, local_up_to_layer=local_up_to_layer, locality_strength=locality_strength,
                  drop_path_rate=drop_path)


@register(family="vit")
def vit_smoke(**kwargs):
    return vit(64, 3, 4, **kwargs)


@register(family="vit")
def deit_tiny(**kwargs):
    return vit(192, 12, 3, **kwargs)


@register(family="vit")
def deit_small(**kwargs):
    return vit(384, 12, 6, **kwargs)


@register(family="convit")
def convit_smoke(**kwargs):
    return convit(16, 3, 4, 2, **kwargs)


@register(family="convit")
def convit_tiny(**kwargs):
    return convit(48, 12, 4, 10, **kwargs)


@register(family="convit")
def convit_small(**kwargs):
    return convit(48, 12, 9, 10, **kwargs)


# ----------------------------------------------------------------------------- fused attention


class FusedGPSA(GPSA):
    """timm's GPSA, computed as (1 - g) SDPA(q, k, v) + g P v: the content term in the fused
    attention kernel, the positional map P (heads, N, N) computed once per step and shared by
    the batch (timm builds it per sample and mixes full per-sample maps)."""

    def positional_attention(self, n: int) -> torch.Tensor:
        if self.rel_indices is None or self.rel_indices.shape[1] != n:
            self.rel_indices = self.get_rel_indices(n)
        return self.pos_proj(self.rel_indices[0]).permute(2, 0, 1).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        q, k = self.qk(x).reshape(b, n, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        v = self.v(x).reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)
        content = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        positional = torch.einsum("hnm,bhmd->bhnd", self.positional_attention(n).to(v.dtype), v)
        gate = torch.sigmoid(self.gating_param).view(1, heads, 1, 1).to(content.dtype)
        # timm renormalises the mixed map by its row sums, which are 1 (a convex mix of two softmaxes).
        out = torch.lerp(content, positional.to(content.dtype), gate).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class FusedMHSA(MHSA):
    """timm's ConViT MHSA through scaled_dot_product_attention."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


def _fused_copy(attn: nn.Module) -> nn.Module:
    if attn.attn_drop.p:
        raise UserError("fused ConViT attention has no attention dropout; build the model with attn_drop_rate=0")
    if type(attn) is GPSA:
        fused = FusedGPSA(attn.dim, attn.num_heads, qkv_bias=attn.qk.bias is not None,
                          proj_drop=attn.proj_drop.p, locality_strength=attn.locality_strength)
    else:
        dim = attn.proj.in_features
        fused = FusedMHSA(dim, attn.num_heads, qkv_bias=attn.qkv.bias is not None, proj_drop=attn.proj_drop.p)
    fused.load_state_dict(attn.state_dict())
    fused.rel_indices = getattr(attn, "rel_indices", None)
    like = next(attn.parameters())
    return fused.to(device=like.device, dtype=like.dtype).train(attn.training)


def use_fused_attention(model: nn.Module) -> nn.Module:
    """Replace, in place, every timm ConViT GPSA/MHSA module by its fused twin (same state dict
    keys and function); other models are returned unchanged."""
    for module in list(model.modules()):
        attn = getattr(module, "attn", None)
        if type(attn) in (GPSA, MHSA):
            module.attn = _fused_copy(attn)
    return model
