"""The convolution -> self-attention switch.

A `ReparamConv2d` is a KxK, stride-1 convolution that can be switched, in place, into gated
positional self-attention over the pixels of its input (ConViT's GPSA, d'Ascoli et al. 2021),
computing the same function at the moment of the switch, and then learning as attention.

One head per kernel tap h, at offset Delta_h; head h's value map is the conv's kernel slice
W[:, :, Delta_h] at full width, so the heads together hold exactly the conv's parameters
(Cordonnier et al. 2020). Head h attends with

    A_h = g_h P_h + (1 - g_h) S_h                                 (the gate g_h mixes the two)
    S_h = softmax_m( q_n . k_m / sqrt(d) + b_h(delta_nm) )         (content attention)
    b_h(delta) = u_h . (dx, dy, dx^2 + dy^2)                       (a learned relative-position bias,
                                                                    ConViT's encoding; optional)

and the layer returns sum_h A_h X W_h + bias. `form` chooses P and g:

* "linear" (the default): P_h is the tap itself - one-hot on the pixel at offset Delta_h, and
  zero where that pixel lies outside the image, which is exactly the conv's zero padding - and
  g_h is a plain parameter, 1 at the switch. So at the switch the layer *is* the convolution,
  bit for bit, whatever q, k and u are, and the gradient with respect to g_h is the full-size
  inner product of the output gradient with the difference between what the content head and the
  tap deliver: the layer leaves its convolution as fast as the loss asks, not as fast as a
  saturated sigmoid lets it. q and k receive gradient in proportion to 1 - g_h, i.e. once the loss
  has started to move the gate. sum_h g_h P_h X W_h is a convolution with the per-tap weights
  g_h W_h, so this term costs what the convolution cost. g is kept in [0, 1] by projection after
  each optimizer step (`bounded_gate`, the default), so every head's attention stays a convex mix
  of its tap and its content attention; a smooth map onto [0, 1] would not do, since any such map
  that reaches 1 at a finite point has zero slope there - the trap this form avoids. With
  `bounded_gate=False` g is free: heads may then weigh the tap and the content with opposite signs.
* "sigmoid" (ConViT's gate; the form used before, kept for comparison): P_h is a positional
  softmax of -alpha |delta - Delta_h|^2 and g_h = sigmoid(lambda_h). Exact only as alpha and lambda
  go to infinity, where the gradients into the gate, alpha and the content path vanish
  (sigmoid'(10) = 4.5e-5): how fast such a layer leaves its convolution is then set by the gate's
  learning rate times the number of steps. `switch_deviation_bound` says what a finite setting
  costs. Its borders: the positional softmax runs over the image plus a ring of zero-valued padding
  keys as wide as the kernel radius, so that a head whose tap points outside the image lands on a
  zero value, as zero padding does (without those keys the softmax would renormalise onto the
  nearest in-image pixel: replicate padding). The logit is a sum of an x part and a y part and the
  padded key grid is a rectangle, so P_h = A_y,h (x) A_x,h exactly, applied as two factors:
  N (H + W) instead of N^2 multiply-adds per head and channel.

`content_locality` alpha_c sets u_h at the switch to alpha_c (2 Dx_h, 2 Dy_h, -1): a soft bump on
the head's own tap (alpha_c = 1 is ConViT's default); None leaves out the bias (plain q.k
attention). `query_init="zero"` zeroes the query projection at the switch, so that content
attention starts as softmax(b_h) - the same map whatever the input - rather than as a random one.
The content term runs in scaled_dot_product_attention, the bias as its additive mask.

Stride-2 convolutions have no attention form here: the model builders keep them as
convolutions (see prs.models).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from prs.errors import UserError

FORMS = ("linear", "sigmoid")
QUERY_INITS = ("zero", "random")


class ReparamConv2d(nn.Module):
    """A stride-1 KxK convolution that can become gated positional self-attention.

    The conv weight is kept as the attention's value weight, so its optimizer state carries over.
    The attention-only parameters (q/k projection, gate, positional and bias weights) exist from
    construction, so they are in the optimizer from the start; they receive no gradient (and no
    AdamW decay) while the layer is a convolution. The mode and the form travel in the state dict.
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
        self.gate = nn.Parameter(torch.zeros(self.num_heads))  # g ("linear") or its logit lambda ("sigmoid")
        self.pos_weight = nn.Parameter(torch.zeros(self.num_heads, 3))  # "sigmoid": P's weights
        self.content_pos_weight = nn.Parameter(torch.zeros(self.num_heads, 3))  # u: bias in the content logits
        self.register_buffer("offsets", _tap_offsets(kernel_size), persistent=False)
        # Mode and form travel in the state dict (a checkpoint restores them) and are mirrored in
        # Python values so that forward() never reads a device tensor (no host-device sync).
        self.register_buffer("attention_mode", torch.zeros((), dtype=torch.bool))
        self.register_buffer("linear_gate", torch.zeros((), dtype=torch.bool))
        self.register_buffer("content_bias", torch.zeros((), dtype=torch.bool))
        self.register_buffer("bounded_gate", torch.zeros((), dtype=torch.bool))
        self._sync_mode()
        self._relative = {}  # (h, w, device, dtype) -> (N, N, 3) relative positions, a cache

    # ------------------------------------------------------------------ state

    def _sync_mode(self) -> None:
        self._is_attention = bool(self.attention_mode)
        self._form = "linear" if bool(self.linear_gate) else "sigmoid"
        self._has_bias = bool(self.content_bias)
        self._bounded = bool(self.bounded_gate)

    @property
    def is_attention(self) -> bool:
        return self._is_attention

    @property
    def form(self) -> str:
        return self._form

    @property
    def has_content_bias(self) -> bool:
        return self._has_bias

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the linear form: the gate was "gate_logit" and always a sigmoid,
        # and there was no content bias.
        if prefix + "gate_logit" in state_dict and prefix + "gate" not in state_dict:
            state_dict[prefix + "gate"] = state_dict.pop(prefix + "gate_logit")
        for name, default in (("linear_gate", torch.zeros((), dtype=torch.bool)),
                              ("content_bias", torch.zeros((), dtype=torch.bool)),
                              ("bounded_gate", torch.zeros((), dtype=torch.bool)),
                              ("content_pos_weight", torch.zeros(self.num_heads, 3))):
            state_dict.setdefault(prefix + name, default)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._sync_mode()

    @property
    def padding(self) -> int:
        return self.kernel_size // 2

    def extra_repr(self) -> str:
        mode = f"attention ({self.form})" if self.is_attention else "conv"
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, mode={mode}"

    @torch.no_grad()
    def switch_to_attention(self, form: str = "linear", gate_logit: float = 10.0, locality: float = 12.0,
                            content_locality: float | None = None, query_init: str = "random",
                            bounded_gate: bool = True) -> None:
        """Become attention, computing the same function (exactly for "linear"; see the module docstring).

        gate_logit and locality are the "sigmoid" form's lambda and alpha; content_locality (alpha_c,
        None = no bias) and query_init set up the content attention of either form; bounded_gate keeps
        the linear gate in [0, 1] (`project_`), so that every head's attention stays a convex mix.
        """
        if self.is_attention:
            raise RuntimeError("layer is already attention")
        check_switch_settings(form, locality, content_locality, query_init)
        dy, dx = self.offsets[:, 0], self.offsets[:, 1]
        # w . (dx, dy, dx^2 + dy^2) = -alpha |delta - Delta_h|^2 + const (ConViT's local init).
        local = torch.stack([2 * dx, 2 * dy, -torch.ones_like(dx)], dim=1)
        if form == "linear":
            self.gate.fill_(1.0)
        else:
            self.gate.fill_(gate_logit)
            self.pos_weight.copy_(locality * local)
        self.content_pos_weight.copy_((content_locality or 0.0) * local)
        if query_init == "zero":
            self.qk.weight[: self.num_heads * self.qk_dim].zero_()
        self.linear_gate.fill_(form == "linear")
        self.content_bias.fill_(content_locality is not None)
        self.bounded_gate.fill_(form == "linear" and bounded_gate)
        self.attention_mode.fill_(True)
        self._sync_mode()

    @torch.no_grad()
    def project_(self) -> None:
        """After an optimizer step: put a bounded linear gate back into [0, 1] (projected gradient
        descent). Unlike a clamp in the forward, this never blocks the gradient: a gate held at 1
        moves as soon as the loss pushes it inwards."""
        if self._is_attention and self._bounded:
            self.gate.clamp_(0.0, 1.0)

    def revert_to_convolution(self) -> None:
        """Compute the convolution again (the value weights are the conv's; nothing else is kept)."""
        self.attention_mode.fill_(False)
        self._sync_mode()

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_attention:
            return F.conv2d(x, self.weight, self.bias, padding=self.padding)
        return self._attention(x)

    def gate_values(self) -> torch.Tensor:
        """g_h, the weight of each head's positional attention (1 = the convolution's tap)."""
        return self.gate if self.form == "linear" else torch.sigmoid(self.gate)

    def relative_positions(self, height: int, width: int, device, dtype) -> torch.Tensor:
        """(N, N, 3): (dx, dy, dx^2 + dy^2) from each query pixel to each key pixel."""
        key = (height, width, device, dtype)
        if key not in self._relative:
            yy, xx = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                    indexing="ij")
            dx = (xx.flatten()[None, :] - xx.flatten()[:, None]).to(dtype)
            dy = (yy.flatten()[None, :] - yy.flatten()[:, None]).to(dtype)
            self._relative = {key: torch.stack([dx, dy, dx * dx + dy * dy], dim=-1)}
        return self._relative[key]

    def content_logit_bias(self, height: int, width: int) -> torch.Tensor:
        """(heads, N, N): b_h, the relative-position bias added to the content logits."""
        rel = self.relative_positions(height, width, self.content_pos_weight.device, self.content_pos_weight.dtype)
        return torch.einsum("nmr,hr->hnm", rel, self.content_pos_weight)

    def content_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, N): S_h materialised (for analysis; forward uses the fused kernel)."""
        h, w = x.shape[-2:]
        q, k = self._queries_keys(x.flatten(2).transpose(1, 2))
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.qk_dim)
        if self.has_content_bias:
            logits = logits + self.content_logit_bias(h, w).to(logits.dtype)
        return logits.softmax(-1)

    def _queries_keys(self, tokens: torch.Tensor):
        b, n, _ = tokens.shape
        return self.qk(tokens).view(b, n, 2, self.num_heads, self.qk_dim).permute(2, 0, 3, 1, 4)

    def positional_factors(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The "sigmoid" form's P_h factorised: (A_y, A_x) of shapes (heads, H, H) and (heads, W, W),
        P_h = A_y,h (x) A_x,h.

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
        """P as a dense (heads, N, N) matrix over in-image keys (for analysis; forward never builds it).
        "linear": one-hot on each head's tap (rows whose tap lies outside the image are zero)."""
        if self.form == "linear":
            return tap_attention(self.kernel_size, height, width, self.offsets.device).to(self.weight.dtype)
        ay, ax = self.positional_factors(height, width)
        return torch.einsum("hab,hcd->hacbd", ay, ax).reshape(self.num_heads, height * width, height * width)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, n = self.num_heads, h * w
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C_in)
        q, k = self._queries_keys(tokens)
        bias = self.content_logit_bias(h, w).to(q.dtype) if self.has_content_bias else None
        # Every head attends over the same input tokens; head h's value map (the kernel slice at
        # tap h) is linear, so it is applied after the heads are concatenated, as one matmul:
        # sum_h A_h X W_h = [A_1 X, ..., A_H X] [W_1; ...; W_H]  (im2col with soft patches).
        content = F.scaled_dot_product_attention(q, k, tokens.unsqueeze(1).expand(b, heads, n, c), attn_mask=bias)
        gate = self.gate_values()
        if self.form == "linear":
            mixed = content * (1 - gate).to(content.dtype).view(1, heads, 1, 1)
            taps = self.weight * gate.view(1, 1, self.kernel_size, self.kernel_size).to(self.weight.dtype)
            # The conv first: the sum takes its memory layout, so what follows sees the layout it saw before.
            return F.conv2d(x, taps, None, padding=self.padding) + self._apply_values(mixed, h, w)
        gate = gate.view(heads, 1, 1)
        ay, ax = self.positional_factors(h, w)
        # The positional term, shared by the batch, applied separably: N (H + W) instead of N^2
        # multiply-adds per head and channel. The gate is folded into the small row factor.
        image = tokens.view(b, h, w, c)
        rows = (gate * ay).to(tokens.dtype).reshape(heads * h, h) @ image.reshape(b, h, w * c)
        positional = torch.einsum("hqk,bhykc->bhyqc", ax.to(tokens.dtype), rows.view(b, heads, h, w, c))
        mixed = torch.addcmul(positional.reshape(b, heads, n, c), content, (1 - gate).to(content.dtype))
        return self._apply_values(mixed, h, w)

    def _apply_values(self, mixed: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, heads, N, C_in) attended inputs -> (B, C_out, h, w) through each head's kernel slice (+ bias)."""
        b, heads, n, c = mixed.shape
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


def check_switch_settings(form: str, locality: float = 12.0, content_locality: float | None = None,
                          query_init: str = "random") -> None:
    if form not in FORMS:
        raise UserError(f"switch.form: '{form}' is not one of {', '.join(FORMS)}")
    if form == "sigmoid" and not locality > 0:
        raise UserError(f"switch.locality: must be > 0, got {locality}")
    if content_locality is not None and not content_locality >= 0:
        raise UserError(f"switch.content_locality: must be >= 0 or null (no bias), got {content_locality}")
    if query_init not in QUERY_INITS:
        raise UserError(f"switch.query_init: '{query_init}' is not one of {', '.join(QUERY_INITS)}")


def _tap_offsets(kernel_size: int) -> torch.Tensor:
    """(K*K, 2) offsets (dy, dx) in the conv weight's (ky, kx) order."""
    r = kernel_size // 2
    grid = torch.arange(-r, r + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(grid, grid, indexing="ij")
    return torch.stack([dy.flatten(), dx.flatten()], dim=1)


def tap_attention(kernel_size: int, height: int, width: int, device=None) -> torch.Tensor:
    """A KxK convolution's taps as attention maps (K^2, N, N): head h is one-hot on the pixel at its
    offset, and zero where that pixel lies outside the image (zero padding)."""
    offsets = _tap_offsets(kernel_size).to(device)
    ay, ax = _shift_matrices(offsets[:, 0], height), _shift_matrices(offsets[:, 1], width)
    return torch.einsum("hab,hcd->hacbd", ay, ax).reshape(len(offsets), height * width, height * width)


def _shift_matrices(offsets: torch.Tensor, size: int) -> torch.Tensor:
    """(heads, size, size): per head, 1 at (query i, key i + offset) where that key is inside."""
    i = torch.arange(size, device=offsets.device)
    return (i[None, None, :] == i[None, :, None] + offsets.round().long()[:, None, None]).float()


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


def switch_to_attention(model: nn.Module, names, **settings) -> list[str]:
    """Switch the named layers into attention, in place; returns the names switched.

    `settings` are ReparamConv2d.switch_to_attention's (form, gate_logit, locality, content_locality,
    query_init, bounded_gate)."""
    layers = dict(model.named_modules())
    names = list(names)
    for name in names:
        layer = layers.get(name)
        if not isinstance(layer, ReparamConv2d):
            raise UserError(f"'{name}' is not a switchable layer; switchable: {', '.join(switchable_layers(model)) or 'none'}")
    for name in names:
        layers[name].switch_to_attention(**settings)
    return names


def project_(model: nn.Module) -> None:
    """Project every switched layer's constrained parameters (see ReparamConv2d.project_); the
    training engine calls it after each optimizer step."""
    for m in model.modules():
        if isinstance(m, ReparamConv2d):
            m.project_()


@contextlib.contextmanager
def as_convolutions(model: nn.Module):
    """Within the block, every switched layer computes the convolution it came from (same weights).

    The "collapse" test: how much does the trained model depend on what attention added?"""
    switched = [m for m in model.modules() if isinstance(m, ReparamConv2d) and m.is_attention]
    try:
        for m in switched:
            m.revert_to_convolution()
        yield switched
    finally:
        for m in switched:
            m.attention_mode.fill_(True)
            m._sync_mode()


def switch_deviation_bound(form: str = "linear", gate_logit: float = 10.0, locality: float = 12.0,
                           kernel_size: int = 3, **_ignored) -> float:
    """Upper bound on the attention mass that leaves the conv's tap right after a switch.

    "linear": 0 (the tap is exact). "sigmoid": per head, (1 - g) of the mass is content attention
    and, of the positional part, at most the sum over other keys of exp(-alpha |d|^2) relative to
    the target (infinite grid). A layer's output deviates by at most this fraction times max|value|
    summed over heads. Takes a switch config's fields (others are ignored).
    """
    if form == "linear":
        return 0.0
    g = 1.0 / (1.0 + math.exp(-gate_logit))
    r = 12  # |d|^2 terms beyond this radius are < exp(-144 alpha): negligible
    off = sum(math.exp(-locality * (i * i + j * j)) for i in range(-r, r + 1) for j in range(-r, r + 1)) - 1.0
    positional_leak = off / (1.0 + off)
    return (1.0 - g) + g * positional_leak
