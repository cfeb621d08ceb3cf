"""The convolution -> gated positional self-attention switch.

A `ReparamConv2d` is a KxK, stride-1 convolution that can be switched, in place, into
gated positional self-attention (ConViT's GPSA) over the pixels of its input, computing
the same function at the moment of the switch.

The attention form (Cordonnier et al. 2020; d'Ascoli et al. 2021), with one head per
kernel tap h and offset Delta_h:

    out_n = sum_h [ (1 - g_h) * softmax_m(q_n . k_m / sqrt(d)) + g_h * P_h[n, m] ] v_h[m]  + bias
    v_h   = W[:, :, Delta_h] x_m                   (full-width values: the conv's own weight)
    P_h   = softmax over keys of -alpha_h |delta_nm - Delta_h|^2  (ConViT's (dx, dy, dx^2+dy^2) encoding)
    g_h   = sigmoid(lambda_h)

Borders: the positional softmax runs over the image *plus a ring of zero-valued padding
keys* as wide as the kernel radius. A head whose tap points outside the image lands on a
padding key whose value is zero, exactly as zero padding does; without those keys the
softmax would renormalise onto the nearest in-image pixel (replicate padding). The
padding keys carry zero values, so they never need to be materialised: their columns of
P are simply dropped after the softmax.

Cost: the logit is a sum of an x part and a y part, and the padded key grid is a rectangle,
so P_h = A_y,h (x) A_x,h exactly (a Kronecker product of an HxH and a WxW softmax). The
forward applies the two factors in turn: N (H + W) instead of N^2 multiply-adds per head
and channel (8x fewer at 16x16). The content term runs in scaled_dot_product_attention.

Sharpness vs trainability: the switch is exact only as alpha -> inf and g -> 1, where the
gradients into alpha, lambda and q/k vanish. `gate_logit` and `locality` choose the point
on that trade-off; `switch_deviation_bound` says what it costs in function. With Adam the
step size does not depend on the gradient's scale, so small but non-zero gradients still
move the gate and content attention (tests check that they do).

Stride-2 convolutions have no attention form here: the model builders keep them as
convolutions (see prs.models).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from prs.errors import UserError


class ReparamConv2d(nn.Module):
    """A stride-1 KxK convolution that can become gated positional self-attention.

    The conv weight is kept as the attention's value weight, so its optimizer state
    carries over. The attention-only parameters (q/k projections, gate, positional
    weights) exist from construction, so they are in the optimizer from the start; they
    receive no gradient (and no AdamW decay) while the layer is a convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False,
                 qk_dim: int = 16):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.num_heads = kernel_size * kernel_size
        self.qk_dim = qk_dim
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        # Attention-only parameters.
        self.qk = nn.Linear(in_channels, 2 * self.num_heads * qk_dim, bias=False)
        nn.init.trunc_normal_(self.qk.weight, std=0.02)
        self.gate_logit = nn.Parameter(torch.zeros(self.num_heads))
        self.pos_weight = nn.Parameter(torch.zeros(self.num_heads, 3))
        self.register_buffer("offsets", _tap_offsets(kernel_size), persistent=False)
        # The mode travels in the state dict (so a checkpoint restores it) and is mirrored in a
        # Python bool so that forward() never reads a device tensor (no host-device sync).
        self.register_buffer("attention_mode", torch.zeros((), dtype=torch.bool))
        self._is_attention = False

    # ------------------------------------------------------------------ state

    @property
    def is_attention(self) -> bool:
        return self._is_attention

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._is_attention = bool(self.attention_mode)

    @property
    def padding(self) -> int:
        return self.kernel_size // 2

    def extra_repr(self) -> str:
        mode = "attention" if self.is_attention else "conv"
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, mode={mode}"

    @torch.no_grad()
    def switch_to_attention(self, gate_logit: float = 10.0, locality: float = 12.0) -> None:
        """Become attention: gate sigmoid(gate_logit) on positional attention of strength `locality`."""
        if self.is_attention:
            raise RuntimeError("layer is already attention")
        if locality <= 0:
            raise UserError(f"switch.locality: must be > 0, got {locality}")
        self.gate_logit.fill_(gate_logit)
        dy, dx = self.offsets[:, 0], self.offsets[:, 1]
        # w_h . (dx, dy, dx^2 + dy^2) = -alpha |delta - Delta_h|^2 + const (ConViT's local init).
        self.pos_weight.copy_(locality * torch.stack([2 * dx, 2 * dy, -torch.ones_like(dx)], dim=1))
        self.attention_mode.fill_(True)
        self._is_attention = True

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_attention:
            return F.conv2d(x, self.weight, self.bias, padding=self.padding)
        return self._attention(x)

    def positional_factors(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """P_h factorised: (A_y, A_x) of shapes (heads, H, H) and (heads, W, W), P_h = A_y,h (x) A_x,h.

        The logit w . (dx, dy, dx^2 + dy^2) is a sum of an x part and a y part, and the padded
        key grid is a rectangle, so the softmax over it is the product of a softmax over key
        rows and one over key columns - exactly, for any learned w. The padding keys' columns
        are dropped after each softmax (their values are zero).
        """
        w = self.pos_weight
        ay = _axis_attention(w[:, 1], w[:, 2], height, self.padding)
        ax = _axis_attention(w[:, 0], w[:, 2], width, self.padding)
        return ay, ax

    def positional_attention(self, height: int, width: int) -> torch.Tensor:
        """P as a dense (heads, N, N) matrix over in-image keys (for analysis; forward uses the factors)."""
        ay, ax = self.positional_factors(height, width)
        heads = self.num_heads
        return torch.einsum("hab,hcd->hacbd", ay, ax).reshape(heads, height * width, height * width)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, n = self.num_heads, h * w
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C_in)
        q, k = self.qk(tokens).view(b, n, 2, heads, self.qk_dim).permute(2, 0, 3, 1, 4)
        # Every head attends over the same input tokens; head h's value map (the kernel slice at
        # tap h) is linear, so it is applied after the heads are concatenated, as one matmul:
        # sum_h A_h X W_h = [A_1 X, ..., A_H X] [W_1; ...; W_H]  (im2col with soft patches).
        content = F.scaled_dot_product_attention(q, k, tokens.unsqueeze(1).expand(b, heads, n, c))
        gate = torch.sigmoid(self.gate_logit).view(heads, 1, 1)
        ay, ax = self.positional_factors(h, w)
        # The positional term, shared by the batch, applied separably: N (H + W) instead of N^2
        # multiply-adds per head and channel. The gate is folded into the small row factor.
        image = tokens.view(b, h, w, c)
        rows = (gate * ay).to(tokens.dtype).reshape(heads * h, h) @ image.reshape(b, h, w * c)
        positional = torch.einsum("hqk,bhykc->bhyqc", ax.to(tokens.dtype), rows.view(b, heads, h, w, c))
        mixed = torch.addcmul(positional.reshape(b, heads, n, c), content, (1 - gate).to(content.dtype))
        # Patches laid out (C_in, tap) like the conv weight's (C_in, ky, kx): a view of it, no copy.
        patches = mixed.permute(0, 2, 3, 1).reshape(b, n, c * heads)
        out = F.linear(patches, self.weight.flatten(1), self.bias)  # (B, N, C_out)
        return out.transpose(1, 2).reshape(b, self.out_channels, h, w)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, qk_dim: int = 16) -> "ReparamConv2d":
        """Wrap an existing stride-1 conv (weights copied)."""
        if conv.stride != (1, 1) or conv.groups != 1 or conv.dilation != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(f"only square, stride-1, ungrouped, undilated convs are switchable, got {conv}")
        if conv.padding != (conv.kernel_size[0] // 2,) * 2:
            raise ValueError(f"switchable convs must use 'same' zero padding, got {conv}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], bias=conv.bias is not None, qk_dim=qk_dim)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer.to(conv.weight.device)


def _tap_offsets(kernel_size: int) -> torch.Tensor:
    """(K*K, 2) offsets (dy, dx) in the conv weight's (ky, kx) order."""
    r = kernel_size // 2
    grid = torch.arange(-r, r + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(grid, grid, indexing="ij")
    return torch.stack([dy.flatten(), dx.flatten()], dim=1)


def _axis_attention(linear: torch.Tensor, quadratic: torch.Tensor, size: int, pad: int) -> torch.Tensor:
    """(heads, size, size): per head, the softmax over the padded axis [-pad, size + pad) of
    linear * d + quadratic * d^2, d = key - query, with the padding keys' columns dropped."""
    keys = torch.arange(-pad, size + pad, device=linear.device, dtype=linear.dtype)
    queries = torch.arange(size, device=linear.device, dtype=linear.dtype)
    d = keys[None, :] - queries[:, None]  # (size, size + 2 pad)
    logits = linear[:, None, None] * d + quadratic[:, None, None] * (d * d)
    return logits.softmax(dim=-1)[:, :, pad:pad + size]


# ---------------------------------------------------------------------- model-level API


def switchable_layers(model: nn.Module) -> list[str]:
    """Names of the model's switchable layers, in depth (forward) order."""
    return [name for name, m in model.named_modules() if isinstance(m, ReparamConv2d)]


def attention_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, ReparamConv2d) and m.is_attention]


def switch_to_attention(model: nn.Module, names, gate_logit: float = 10.0, locality: float = 12.0) -> list[str]:
    """Switch the named layers into attention, in place; returns the names switched."""
    layers = dict(model.named_modules())
    names = list(names)
    for name in names:
        layer = layers.get(name)
        if not isinstance(layer, ReparamConv2d):
            raise UserError(f"'{name}' is not a switchable layer; switchable: {', '.join(switchable_layers(model)) or 'none'}")
    for name in names:
        layers[name].switch_to_attention(gate_logit=gate_logit, locality=locality)
    return names


def switch_deviation_bound(gate_logit: float, locality: float, kernel_size: int = 3) -> float:
    """Upper bound on the attention mass that leaves the conv's tap right after a switch.

    Per head, (1 - g) of the mass is content attention and, of the positional part, at most
    sum over other keys of exp(-alpha |d|^2) relative to the target (infinite grid).
    The output deviation of a layer is at most this fraction times max|value| summed over heads.
    """
    g = 1.0 / (1.0 + math.exp(-gate_logit))
    r = 12  # |d|^2 terms beyond this radius are < exp(-144 alpha): negligible
    off = sum(math.exp(-locality * (i * i + j * j)) for i in range(-r, r + 1) for j in range(-r, r + 1)) - 1.0
    positional_leak = off / (1.0 + off)
    return (1.0 - g) + g * positional_leak


@torch.no_grad()
def layer_diagnostics(model: nn.Module, image_size: tuple[int, int] | None = None,
                      inputs: torch.Tensor | None = None) -> list[dict]:
    """Per switchable layer: mode, mean gate, mean locality strength, mean positional
    attention distance (pixels), and the fraction of attention mass that is positional.

    `inputs`, if given, is a batch for the model: the content attention's distance is then
    measured on it (hooks capture each layer's input); otherwise only positional terms are reported.
    """
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    if inputs is not None:
        for name, m in model.named_modules():
            if isinstance(m, ReparamConv2d) and m.is_attention:
                hooks.append(m.register_forward_hook(lambda mod, inp, out, n=name: captured.__setitem__(n, inp[0])))
        was_training = model.training
        try:
            model.eval()
            model(inputs)
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, ReparamConv2d):
            continue
        row = {"name": name, "is_attention": m.is_attention, "gate": None, "locality": None,
               "positional_distance": None, "content_distance": None, "attention_distance": None,
               "positional_fraction": None}
        if m.is_attention:
            gate = torch.sigmoid(m.gate_logit.float())
            row["gate"] = gate.mean().item()
            row["locality"] = (-m.pos_weight[:, 2].float()).mean().item()
            row["positional_fraction"] = row["gate"]
            if name in captured:
                x = captured[name]
                h, w = x.shape[-2:]
            else:
                h, w = image_size or (8, 8)
            dist = _pixel_distances(h, w, x.device if name in captured else m.weight.device)
            pos = m.positional_attention(h, w).float()
            pos_dist = (pos * dist).sum(-1).mean(-1)  # (heads,)
            row["positional_distance"] = pos_dist.mean().item()
            if name in captured:
                content = _content_attention(m, captured[name]).float()  # (B, heads, N, N)
                con_dist = (content * dist).sum(-1).mean(dim=(0, 2))
                row["content_distance"] = con_dist.mean().item()
                row["attention_distance"] = (gate * pos_dist + (1 - gate) * con_dist).mean().item()
            else:
                row["attention_distance"] = row["positional_distance"]
        rows.append(row)
    return rows


def _pixel_distances(h: int, w: int, device) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], dim=1).float().to(device)
    return torch.cdist(pos, pos)


def _content_attention(m: ReparamConv2d, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    tokens = x.flatten(2).transpose(1, 2)
    q, k = m.qk(tokens).view(b, h * w, 2, m.num_heads, m.qk_dim).permute(2, 0, 3, 1, 4)
    return (q @ k.transpose(-1, -2) / math.sqrt(m.qk_dim)).softmax(-1)
