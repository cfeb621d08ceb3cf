"""The conv -> attention switch: function preservation (borders included), trainability,
optimizer membership, checkpoint round trip."""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prs import models, reparam
from prs.config import TrainConfig
from prs.reparam import ReparamConv2d
from prs.engine import build_optimizer

SHARP = dict(gate_logit=30.0, locality=40.0)  # exact to fp32 rounding
DEFAULT = dict(gate_logit=10.0, locality=12.0)  # the config defaults


def randomize_batchnorm(model):
    """timm zero-inits the last BN of each block, which would hide any error in the conv it follows."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2
            m.running_mean = torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1
            m.running_var = torch.rand(m.running_var.shape, generator=g) + 0.5
    return model


@pytest.mark.parametrize("kernel_size,bias", [(3, False), (3, True), (5, False)])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (4, 4), (7, 5)])
def test_layer_equals_conv_everywhere(kernel_size, bias, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, kernel_size, padding=kernel_size // 2, bias=bias)
    layer = ReparamConv2d.from_conv(conv)
    x = torch.randn(2, 6, *size)
    assert torch.allclose(layer(x), conv(x), atol=1e-6)  # as a conv
    layer.switch_to_attention(**SHARP)
    assert layer.is_attention
    torch.testing.assert_close(layer(x), conv(x), atol=2e-6, rtol=1e-5)


def test_border_pixel_is_zero_padding_not_replicate():
    """A corner output must see zeros outside the image: replicate padding would differ."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    layer = ReparamConv2d.from_conv(conv)
    layer.switch_to_attention(**SHARP)
    x = torch.randn(1, 3, 4, 4) + 3.0  # offset so that replicate and zero padding disagree strongly
    out = layer(x)
    zero_padded = conv(x)
    replicate = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), conv.weight)
    corner = (0, slice(None), 0, 0)
    assert (zero_padded[corner] - replicate[corner]).abs().max() > 0.1  # the test can tell them apart
    torch.testing.assert_close(out[corner], zero_padded[corner], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[0, :, 1:-1, 1:-1], zero_padded[0, :, 1:-1, 1:-1], atol=1e-6, rtol=1e-5)


def test_softmax_over_image_keys_only_would_replicate():
    """The failure mode the padding keys exist for: check it is real, on our own P."""
    layer = ReparamConv2d(1, 1, 3)
    layer.switch_to_attention(**SHARP)
    p = layer.positional_attention(3, 3)  # (9 heads, 9 queries, 9 keys)
    top_left_tap, corner_query = 0, 0
    assert p[top_left_tap, corner_query].sum() < 1e-6  # its mass went to a zero-valued padding key
    assert torch.allclose(p[4].sum(-1), torch.ones(9))  # the centre tap always stays inside


def dense_positional(layer, h, w):
    """(heads, N, N) positional maps straight from the definition: one softmax per query over the
    whole zero-padded key grid, with the padding keys' columns dropped afterwards."""
    pad = layer.padding
    qy, qx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(-pad, h + pad), torch.arange(-pad, w + pad), indexing="ij")
    dx = (kx.flatten()[None, :] - qx.flatten()[:, None]).double()
    dy = (ky.flatten()[None, :] - qy.flatten()[:, None]).double()
    inside = ((ky >= 0) & (ky < h) & (kx >= 0) & (kx < w)).flatten()
    wx, wy, wq = layer.pos_weight.detach().double().unbind(1)
    logits = wx[:, None, None] * dx + wy[:, None, None] * dy + wq[:, None, None] * (dx * dx + dy * dy)
    return logits.softmax(-1)[:, :, inside]


def dense_gpsa_reference(layer, x):
    """GPSA written out head by head from its definition, in float64: the independent reference
    for the factorised forward."""
    b, c, h, w = x.shape
    tokens = x.double().flatten(2).transpose(1, 2)  # (B, N, C)
    qk = F.linear(tokens, layer.qk.weight.detach().double())
    q, k = qk.view(b, h * w, 2, layer.num_heads, layer.qk_dim).unbind(2)
    positional = dense_positional(layer, h, w)
    out = torch.zeros(b, h * w, layer.out_channels, dtype=torch.float64)
    for head in range(layer.num_heads):
        content = (q[:, :, head] @ k[:, :, head].transpose(1, 2) / layer.qk_dim ** 0.5).softmax(-1)
        g = torch.sigmoid(layer.gate_logit[head].detach().double())
        ty, tx = divmod(head, layer.kernel_size)
        values = tokens @ layer.weight[:, :, ty, tx].detach().double().t()
        out += ((1 - g) * content + g * positional[head]) @ values
    if layer.bias is not None:
        out += layer.bias.detach().double()
    return out.transpose(1, 2).reshape(b, layer.out_channels, h, w)


@pytest.mark.parametrize("kernel_size,bias,size", [(3, False, (5, 7)), (3, True, (1, 4)), (5, False, (6, 6))])
def test_attention_forward_matches_dense_definition_for_any_parameters(kernel_size, bias, size):
    """Away from the switch point too: random gates, positional weights (repulsive ones included) and q/k."""
    torch.manual_seed(kernel_size)
    layer = ReparamConv2d(4, 3, kernel_size, bias=bias, qk_dim=8)
    layer.switch_to_attention(**DEFAULT)
    with torch.no_grad():
        layer.gate_logit.copy_(torch.randn(layer.num_heads) * 2)
        layer.pos_weight.copy_(torch.randn(layer.num_heads, 3))
        layer.qk.weight.normal_(0, 0.5)
        if bias:
            layer.bias.normal_()
    x = torch.randn(2, 4, *size)
    torch.testing.assert_close(layer(x).double(), dense_gpsa_reference(layer, x), atol=1e-5, rtol=1e-5)
    # The dense map the diagnostics use is the same operator.
    torch.testing.assert_close(layer.positional_attention(*size).double(), dense_positional(layer, *size))


def test_positional_term_costs_n_times_h_plus_w_not_n_squared():
    """The positional map is applied as two small factors: its multiply-adds grow as N (H + W)."""
    from torch.utils.flop_counter import FlopCounterMode

    def attention_flops(size):
        layer = ReparamConv2d(8, 8)
        layer.switch_to_attention(**DEFAULT)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            layer(torch.randn(1, 8, size, size))
        return counter.get_total_flops()

    heads, c, d = 9, 8, 16
    for size in (8, 16):
        n = size * size
        content = 2 * heads * n * n * (d + c)  # q k^T and the attention-weighted values (SDPA)
        projections = 2 * n * c * 2 * heads * d + 2 * n * heads * c * c  # q/k and the value weights
        separable = 2 * heads * n * 2 * size * c
        assert attention_flops(size) == content + projections + separable


HYBRIDS = models.names(family="hybrid")


def _pair(name, subset_fn):
    torch.manual_seed(0)
    model = randomize_batchnorm(models.create(name))
    names = reparam.switchable_layers(model)
    return model, names, subset_fn(names)


@pytest.mark.parametrize("name", HYBRIDS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_model_logits_preserved_all_layers(name, mode):
    model, names, _ = _pair(name, lambda n: n)
    assert names, "a hybrid must have switchable layers"
    model.train(mode == "train")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        switched = copy.deepcopy(model)
        reparam.switch_to_attention(switched, names, **SHARP)
        after = switched(x)
    assert reparam.attention_layers(switched) == names
    scale = before.abs().max()
    assert (after - before).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_every_stage_and_any_subset(stage):
    """Each stage on its own (32, 16, 8 and 4 pixels: the 4x4 map is mostly border)."""
    torch.manual_seed(stage)
    model = randomize_batchnorm(models.create("hybrid_tiny", switchable_stages=[1, 2, 3, 4])).eval()
    names = [n for n in reparam.switchable_layers(model) if n.startswith(f"layer{stage}.")]
    assert names
    x = torch.randn(2, 3, 32, 32)
    subsets = itertools.chain.from_iterable(itertools.combinations(names, k) for k in range(1, len(names) + 1))
    assert_sharp_switches_keep_the_function(model, x, subsets)


def test_random_subsets_of_resnet18_hybrid():
    model, names, _ = _pair("hybrid_resnet18", lambda n: n)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    g = torch.Generator().manual_seed(3)
    subsets = [[n for n, keep in zip(names, torch.rand(len(names), generator=g) < 0.5) if keep] for _ in range(3)]
    assert_sharp_switches_keep_the_function(model, x, subsets)


def assert_sharp_switches_keep_the_function(model, x, subsets):
    """Switching each subset of layers (on a copy, sharp setting) leaves the output unchanged."""
    with torch.no_grad():
        before = model(x)
        for subset in subsets:
            switched = copy.deepcopy(model)
            reparam.switch_to_attention(switched, subset, **SHARP)
            assert (switched(x) - before).abs().max() <= 1e-5 * before.abs().max(), subset


def test_default_setting_stays_within_its_bound():
    """The default (trainable) setting is not exact; its deviation is small and bounded."""
    model, names, _ = _pair("hybrid_resnet18", lambda n: n)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        reparam.switch_to_attention(model, names, **DEFAULT)
        after = model(x)
    rel = ((after - before).abs().max() / before.abs().max()).item()
    assert rel < 1e-3
    assert reparam.switch_deviation_bound(**DEFAULT) < 1e-4
    # A looser setting deviates more: the bound orders them the same way.
    assert reparam.switch_deviation_bound(6.0, 6.0) > reparam.switch_deviation_bound(**DEFAULT)


def test_gradients_reach_gate_locality_and_qk_after_switch():
    torch.manual_seed(0)
    model = randomize_batchnorm(models.create("hybrid_tiny"))
    names = reparam.switchable_layers(model)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 100, (8,))
    F.cross_entropy(model(x), y).backward()
    layer = dict(model.named_modules())[names[0]]
    assert layer.weight.grad is not None
    assert layer.gate_logit.grad is None and layer.qk.weight.grad is None  # unused as a conv
    model.zero_grad(set_to_none=True)
    reparam.switch_to_attention(model, names, **DEFAULT)
    F.cross_entropy(model(x), y).backward()
    for name in names:
        layer = dict(model.named_modules())[name]
        for pname in ("weight", "gate_logit", "pos_weight"):
            grad = getattr(layer, pname).grad
            assert grad is not None and grad.abs().sum() > 0, f"{name}.{pname} gets no gradient"
        assert layer.qk.weight.grad.abs().sum() > 0, f"{name}.qk gets no gradient"


def test_short_training_moves_gates_and_content_attention():
    """An attention layer that cannot leave its convolution is a defect: train and look."""
    torch.manual_seed(0)
    model = randomize_batchnorm(models.create("hybrid_tiny"))
    names = reparam.switchable_layers(model)
    reparam.switch_to_attention(model, names, **DEFAULT)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 100, (16,))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = reparam.layer_diagnostics(model, inputs=x[:4])
    opt = build_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.0), gate_lr_scale=10.0)
    for _ in range(15):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    after = reparam.layer_diagnostics(model, inputs=x[:4])
    for name in names:
        moved_gate = (model.get_parameter(f"{name}.gate_logit") - start[f"{name}.gate_logit"]).abs().max()
        moved_qk = (model.get_parameter(f"{name}.qk.weight") - start[f"{name}.qk.weight"]).abs().max()
        moved_pos = (model.get_parameter(f"{name}.pos_weight") - start[f"{name}.pos_weight"]).abs().max()
        assert moved_gate > 0.1 and moved_qk > 0.01 and moved_pos > 0.1, name
    assert any(abs(a["content_distance"] - b["content_distance"]) > 1e-3 for a, b in zip(after, before))
    # The gate opens: 1 - g (the content share) grows or shrinks by a clear factor.
    ratios = [(1 - a["gate"]) / (1 - b["gate"]) for a, b in zip(after, before)]
    assert any(r > 1.5 or r < 1 / 1.5 for r in ratios), ratios


def test_new_parameters_are_in_the_optimizer_and_decay_groups():
    model = randomize_batchnorm(models.create("hybrid_tiny"))
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05), gate_lr_scale=10.0)
    members = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert set(members) == {id(p) for p in named.values()}, "every parameter is in exactly one group"
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)
    for name, p in named.items():
        if name.endswith(("gate_logit", "pos_weight")):
            assert members[id(p)] == 0.0 and lrs[id(p)] == pytest.approx(1e-2), f"{name}: no decay, scaled LR"
        elif p.ndim <= 1:
            assert members[id(p)] == 0.0, f"{name} must not decay"
        else:
            assert members[id(p)] == 0.05 and lrs[id(p)] == pytest.approx(1e-3), f"{name} must decay"
    # The LR schedule keeps the multiplier.
    from prs.engine import build_lr_scheduler

    sched = build_lr_scheduler(opt, TrainConfig(lr=1e-3, epochs=2, warmup_epochs=0.0), steps_per_epoch=4)
    sched.step_update(num_updates=4)
    assert opt.param_groups[2]["lr"] == pytest.approx(10 * opt.param_groups[0]["lr"])
    # After the switch, one step updates the attention parameters in place: same objects.
    names = reparam.switchable_layers(model)
    reparam.switch_to_attention(model, names, **DEFAULT)
    assert {id(p) for p in model.parameters()} == set(members)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 100, (4,))).backward()
    opt.step()
    for name in names:
        for pname in ("gate_logit", "pos_weight", "qk.weight"):
            full = f"{name}.{pname}"
            assert not torch.equal(named[full], before[full]), f"{full} was not updated"


def test_state_dict_round_trip_restores_mode():
    model = randomize_batchnorm(models.create("hybrid_tiny")).eval()
    names = reparam.switchable_layers(model)
    reparam.switch_to_attention(model, names[:2], **DEFAULT)
    fresh = models.create("hybrid_tiny").eval()
    fresh.load_state_dict(model.state_dict())
    assert reparam.attention_layers(fresh) == names[:2]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_bad_switch_requests():
    model = models.create("hybrid_tiny")
    with pytest.raises(ValueError, match="not a switchable layer"):
        reparam.switch_to_attention(model, ["layer1.0.conv1"])
    name = reparam.switchable_layers(model)[0]
    reparam.switch_to_attention(model, [name])
    with pytest.raises(RuntimeError, match="already attention"):
        reparam.switch_to_attention(model, [name])
    with pytest.raises(ValueError):
        ReparamConv2d.from_conv(nn.Conv2d(3, 3, 3, stride=2, padding=1))


def test_non_hybrids_have_no_switchable_layers():
    for name in models.names():
        if models.family(name) != "hybrid" and not name.endswith(("small", "50")):
            assert reparam.switchable_layers(models.create(name)) == []
