"""The conv -> attention switch: function preservation (borders included) for both forms, the
forward against a float64 definition, trainability (gradients, and training that moves the layer),
optimizer membership, checkpoint round trips (old checkpoints included)."""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prs import diagnostics, models, reparam
from prs.config import TrainConfig
from prs.reparam import ReparamConv2d
from prs.engine import build_optimizer

# The sigmoid form (ConViT's gate, the form used before): exact only as the gate and locality saturate.
SHARP = dict(form="sigmoid", gate_logit=30.0, locality=40.0, content_locality=None, query_init="random")
LEGACY = dict(form="sigmoid", gate_logit=10.0, locality=12.0, content_locality=None, query_init="random")
# The linear form (the default): exact by construction, whatever the content attention's set-up.
LINEAR = dict(form="linear", content_locality=1.0, query_init="zero")
LINEAR_VARIANTS = [LINEAR, dict(form="linear", content_locality=None, query_init="random"),
                   dict(form="linear", content_locality=0.0, query_init="zero")]


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


# ----------------------------------------------------------------------------- one layer: exactness


@pytest.mark.parametrize("kernel_size,bias", [(3, False), (3, True), (5, False)])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (4, 4), (7, 5)])
def test_layer_equals_conv_everywhere(kernel_size, bias, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, kernel_size, padding=kernel_size // 2, bias=bias)
    x = torch.randn(2, 6, *size)
    for settings in LINEAR_VARIANTS:
        layer = ReparamConv2d.from_conv(conv)
        assert torch.equal(layer(x), conv(x))  # as a conv
        layer.switch_to_attention(**settings)
        assert layer.is_attention and layer.form == "linear"
        assert torch.equal(layer(x), conv(x)), settings  # bit for bit, borders included
    layer = ReparamConv2d.from_conv(conv)
    layer.switch_to_attention(**SHARP)
    torch.testing.assert_close(layer(x), conv(x), atol=2e-6, rtol=1e-5)


def test_border_pixel_is_zero_padding_not_replicate():
    """A corner output must see zeros outside the image: replicate padding would differ."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 4, 4) + 3.0  # offset so that replicate and zero padding disagree strongly
    zero_padded = conv(x)
    replicate = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), conv.weight)
    corner = (0, slice(None), 0, 0)
    assert (zero_padded[corner] - replicate[corner]).abs().max() > 0.1  # the test can tell them apart
    for settings in (SHARP, LINEAR):
        layer = ReparamConv2d.from_conv(conv)
        layer.switch_to_attention(**settings)
        out = layer(x)
        torch.testing.assert_close(out[corner], zero_padded[corner], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out[0, :, 1:-1, 1:-1], zero_padded[0, :, 1:-1, 1:-1], atol=1e-6, rtol=1e-5)


def test_softmax_over_image_keys_only_would_replicate():
    """The failure mode the sigmoid form's padding keys exist for: check it is real, on our own P."""
    layer = ReparamConv2d(1, 1, 3)
    layer.switch_to_attention(**SHARP)
    p = layer.positional_attention(3, 3)  # (9 heads, 9 queries, 9 keys)
    top_left_tap, corner_query = 0, 0
    assert p[top_left_tap, corner_query].sum() < 1e-6  # its mass went to a zero-valued padding key
    assert torch.allclose(p[4].sum(-1), torch.ones(9))  # the centre tap always stays inside
    linear = ReparamConv2d(1, 1, 3)
    linear.switch_to_attention(**LINEAR)
    one_hot = linear.positional_attention(3, 3)
    assert one_hot[top_left_tap, corner_query].sum() == 0 and torch.equal(one_hot[4], torch.eye(9))
    assert set(one_hot.unique().tolist()) == {0.0, 1.0}


# ----------------------------------------------------------------------------- one layer: the definition


def dense_positional(layer, h, w):
    """(heads, N, N) positional maps straight from the definition. Sigmoid form: one softmax per
    query over the whole zero-padded key grid, the padding keys' columns dropped afterwards.
    Linear form: 1 on the key at the head's offset when it is inside the image."""
    pad = layer.padding
    qy, qx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(-pad, h + pad), torch.arange(-pad, w + pad), indexing="ij")
    dx = (kx.flatten()[None, :] - qx.flatten()[:, None]).double()
    dy = (ky.flatten()[None, :] - qy.flatten()[:, None]).double()
    inside = ((ky >= 0) & (ky < h) & (kx >= 0) & (kx < w)).flatten()
    if layer.form == "linear":
        oy, ox = layer.offsets.double().unbind(1)
        hit = (dy[None] == oy[:, None, None]) & (dx[None] == ox[:, None, None])
        return hit.double()[:, :, inside]
    wx, wy, wq = layer.pos_weight.detach().double().unbind(1)
    logits = wx[:, None, None] * dx + wy[:, None, None] * dy + wq[:, None, None] * (dx * dx + dy * dy)
    return logits.softmax(-1)[:, :, inside]


def dense_gpsa_reference(layer, x):
    """GPSA written out head by head from its definition, in float64: the independent reference
    for the forward of either form."""
    b, c, h, w = x.shape
    tokens = x.double().flatten(2).transpose(1, 2)  # (B, N, C)
    qk = F.linear(tokens, layer.qk.weight.detach().double())
    q, k = qk.view(b, h * w, 2, layer.num_heads, layer.qk_dim).unbind(2)
    positional = dense_positional(layer, h, w)
    qy, qx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dx = (qx.flatten()[None, :] - qx.flatten()[:, None]).double()
    dy = (qy.flatten()[None, :] - qy.flatten()[:, None]).double()
    out = torch.zeros(b, h * w, layer.out_channels, dtype=torch.float64)
    for head in range(layer.num_heads):
        logits = q[:, :, head] @ k[:, :, head].transpose(1, 2) / layer.qk_dim ** 0.5
        if layer.has_content_bias:
            ux, uy, uq = layer.content_pos_weight[head].detach().double()
            logits = logits + ux * dx + uy * dy + uq * (dx * dx + dy * dy)
        raw = layer.gate[head].detach().double()
        g = raw if layer.form == "linear" else torch.sigmoid(raw)
        ty, tx = divmod(head, layer.kernel_size)
        values = tokens @ layer.weight[:, :, ty, tx].detach().double().t()
        out += ((1 - g) * logits.softmax(-1) + g * positional[head]) @ values
    if layer.bias is not None:
        out += layer.bias.detach().double()
    return out.transpose(1, 2).reshape(b, layer.out_channels, h, w)


@pytest.mark.parametrize("settings", [LEGACY, dict(LEGACY, content_locality=2.0), *LINEAR_VARIANTS],
                         ids=["sigmoid", "sigmoid+bias", "linear", "linear-plain", "linear-flat"])
@pytest.mark.parametrize("kernel_size,bias,size", [(3, False, (5, 7)), (3, True, (1, 4)), (5, False, (6, 6))])
def test_attention_forward_matches_dense_definition_for_any_parameters(settings, kernel_size, bias, size):
    """Away from the switch point too: random gates (outside [0, 1] included), positional and bias
    weights (repulsive ones included) and q/k."""
    torch.manual_seed(kernel_size)
    layer = ReparamConv2d(4, 3, kernel_size, bias=bias, qk_dim=8)
    layer.switch_to_attention(**settings)
    with torch.no_grad():
        layer.gate.copy_(torch.randn(layer.num_heads) * 2)
        layer.pos_weight.copy_(torch.randn(layer.num_heads, 3))
        layer.content_pos_weight.copy_(torch.randn(layer.num_heads, 3) * 0.5)
        layer.qk.weight.normal_(0, 0.5)
        if bias:
            layer.bias.normal_()
    x = torch.randn(2, 4, *size)
    torch.testing.assert_close(layer(x).double(), dense_gpsa_reference(layer, x), atol=1e-5, rtol=1e-5)
    # The dense maps the diagnostics use are the same operators.
    torch.testing.assert_close(layer.positional_attention(*size).double(), dense_positional(layer, *size))


def forward_flops(layer, size):
    """FLOPs of one forward pass of `layer` on a 1 x 8 x size x size input, as PyTorch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        layer(torch.randn(1, 8, size, size))
    return counter.get_total_flops()


def test_sigmoid_positional_term_costs_n_times_h_plus_w_not_n_squared():
    """The sigmoid form's positional map is applied as two small factors: multiply-adds grow as N (H + W)."""

    def attention_flops(size):
        layer = ReparamConv2d(8, 8)
        layer.switch_to_attention(**LEGACY)
        return forward_flops(layer, size)

    heads, c, d = 9, 8, 16
    for size in (8, 16):
        n = size * size
        content = 2 * heads * n * n * (d + c)  # q k^T and the attention-weighted values (SDPA)
        projections = 2 * n * c * 2 * heads * d + 2 * n * heads * c * c  # q/k and the value weights
        separable = 2 * heads * n * 2 * size * c
        assert attention_flops(size) == content + projections + separable


def test_linear_positional_term_costs_what_the_conv_cost():
    """The linear form's positional term is the convolution itself (taps scaled by the gate)."""
    flops = forward_flops

    heads, c, d = 9, 8, 16
    for size in (8, 16):
        n = size * size
        layer = ReparamConv2d(8, 8)
        conv = flops(layer, size)
        assert conv == 2 * n * c * c * heads
        layer.switch_to_attention(**LINEAR)
        content = 2 * heads * n * n * (d + c)
        projections = 2 * n * c * 2 * heads * d + 2 * n * heads * c * c
        bias = 2 * n * n * 3 * heads  # the relative-position bias, once per step (not per image)
        assert flops(layer, size) == conv + content + projections + bias


# ----------------------------------------------------------------------------- whole models: exactness


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
        for settings, exact in ((LINEAR, True), (SHARP, False)):
            switched = copy.deepcopy(model)
            reparam.switch_to_attention(switched, names, **settings)
            after = switched(x)
            assert reparam.attention_layers(switched) == names
            if exact:
                assert torch.equal(after, before), "the linear form is the convolution at the switch"
            else:
                assert (after - before).abs().max() <= 1e-5 * before.abs().max()


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_every_stage_and_any_subset(stage):
    """Each stage on its own (32, 16, 8 and 4 pixels: the 4x4 map is mostly border)."""
    torch.manual_seed(stage)
    model = randomize_batchnorm(models.create("hybrid_tiny", switchable_stages=[1, 2, 3, 4])).eval()
    names = [n for n in reparam.switchable_layers(model) if n.startswith(f"layer{stage}.")]
    assert names
    x = torch.randn(2, 3, 32, 32)
    subsets = itertools.chain.from_iterable(itertools.combinations(names, k) for k in range(1, len(names) + 1))
    assert_switches_keep_the_function(model, x, subsets)


def test_random_subsets_of_resnet18_hybrid():
    model, names, _ = _pair("hybrid_resnet18", lambda n: n)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    g = torch.Generator().manual_seed(3)
    subsets = [[n for n, keep in zip(names, torch.rand(len(names), generator=g) < 0.5) if keep] for _ in range(3)]
    assert_switches_keep_the_function(model, x, subsets)


def assert_switches_keep_the_function(model, x, subsets):
    """Switching each subset of layers (on a copy) leaves the output unchanged: bit for bit in the
    linear form, to fp32 rounding in the sharp sigmoid setting."""
    with torch.no_grad():
        before = model(x)
        for subset in subsets:
            for settings, exact in ((LINEAR, True), (SHARP, False)):
                switched = copy.deepcopy(model)
                reparam.switch_to_attention(switched, subset, **settings)
                after = switched(x)
                if exact:
                    assert torch.equal(after, before), (subset, settings)
                else:
                    assert (after - before).abs().max() <= 1e-5 * before.abs().max(), (subset, settings)


def test_channels_last_training_model_is_exact_too():
    """The engine trains convolutional models channels_last: the switch must be exact there as well."""
    model, names, _ = _pair("hybrid_resnet18", lambda n: n)
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        before = model(x)
        reparam.switch_to_attention(model, names, **LINEAR)
        assert torch.equal(model(x), before)


def test_sigmoid_default_setting_stays_within_its_bound():
    """The sigmoid form at its trainable setting is not exact; its deviation is small and bounded."""
    model, names, _ = _pair("hybrid_resnet18", lambda n: n)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        reparam.switch_to_attention(model, names, **LEGACY)
        after = model(x)
    rel = ((after - before).abs().max() / before.abs().max()).item()
    assert rel < 1e-3
    assert reparam.switch_deviation_bound(**LEGACY) < 1e-4
    # A looser setting deviates more: the bound orders them the same way.
    assert reparam.switch_deviation_bound("sigmoid", 6.0, 6.0) > reparam.switch_deviation_bound(**LEGACY)
    assert reparam.switch_deviation_bound(**LINEAR) == 0.0


def test_as_convolutions_puts_the_convs_back_and_restores_attention():
    model, names, _ = _pair("hybrid_tiny", lambda n: n)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cnn = model(x)
        reparam.switch_to_attention(model, names, **LINEAR)
        for name in names:
            model.get_parameter(f"{name}.gate").fill_(0.3)  # the layers now differ from their convs
        attention = model(x)
        assert (attention - cnn).abs().max() > 1e-3
        with reparam.as_convolutions(model) as reverted:
            assert len(reverted) == len(names) and reparam.attention_layers(model) == []
            assert torch.equal(model(x), cnn)
        assert reparam.attention_layers(model) == names
        assert torch.equal(model(x), attention)


# ----------------------------------------------------------------------------- trainability


def test_gradients_after_the_switch():
    """Linear form: at the switch the gate gets a full-size gradient and q/k none (their weight 1 - g
    is 0); once the gate has moved, q/k and the bias get gradient too. Sigmoid form: all get some."""
    torch.manual_seed(0)
    model = randomize_batchnorm(models.create("hybrid_tiny"))
    names = reparam.switchable_layers(model)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 100, (8,))
    F.cross_entropy(model(x), y).backward()
    layer = dict(model.named_modules())[names[0]]
    assert layer.weight.grad is not None
    assert layer.gate.grad is None and layer.qk.weight.grad is None  # unused as a conv
    sigmoid, linear = copy.deepcopy(model), model
    for m, settings in ((linear, LINEAR), (sigmoid, LEGACY)):
        m.zero_grad(set_to_none=True)
        reparam.switch_to_attention(m, names, **settings)
        F.cross_entropy(m(x), y).backward()
    for name in names:
        lin, sig = linear.get_submodule(name), sigmoid.get_submodule(name)
        assert lin.gate.grad.abs().min() > 0 and lin.weight.grad.abs().sum() > 0
        assert lin.qk.weight.grad.abs().sum() == 0 and lin.content_pos_weight.grad.abs().sum() == 0
        # Where the gate sits decides the rest: the linear gate's gradient is orders of magnitude larger.
        assert lin.gate.grad.abs().mean() > 100 * sig.gate.grad.abs().mean()
        for pname in ("weight", "gate", "pos_weight"):
            grad = getattr(sig, pname).grad
            assert grad is not None and grad.abs().sum() > 0, f"{name}.{pname} gets no gradient"
        assert sig.qk.weight.grad.abs().sum() > 0, f"{name}.qk gets no gradient"
    linear.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name in names:
            linear.get_parameter(f"{name}.gate").fill_(0.9)
    F.cross_entropy(linear(x), y).backward()
    for name in names:
        lin = linear.get_submodule(name)
        assert lin.qk.weight.grad.abs().sum() > 0 and lin.content_pos_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("settings", [LINEAR, LEGACY], ids=["linear", "sigmoid"])
def test_short_training_moves_gates_and_content_attention(settings):
    """An attention layer that cannot leave its convolution is a defect: train and look."""
    torch.manual_seed(0)
    model = randomize_batchnorm(models.create("hybrid_tiny"))
    names = reparam.switchable_layers(model)
    reparam.switch_to_attention(model, names, **settings)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 100, (16,))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = diagnostics.layer_diagnostics(model, inputs=x[:4])
    opt = build_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.0), gate_lr_scale=10.0)
    for _ in range(15):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    after = diagnostics.layer_diagnostics(model, inputs=x[:4])
    positional = "content_pos_weight" if settings["form"] == "linear" else "pos_weight"
    for name in names:
        moved_gate = (model.get_parameter(f"{name}.gate") - start[f"{name}.gate"]).abs().max()
        moved_qk = (model.get_parameter(f"{name}.qk.weight") - start[f"{name}.qk.weight"]).abs().max()
        moved_pos = (model.get_parameter(f"{name}.{positional}") - start[f"{name}.{positional}"]).abs().max()
        assert moved_gate > 0.1 and moved_qk > 0.01 and moved_pos > 0.1, name
    assert any(abs(a["content_distance"] - b["content_distance"]) > 1e-3 for a, b in zip(after, before))
    # The gate opens: the content share 1 - g moves by a clear amount.
    assert any(abs(a["content_fraction"] - b["content_fraction"]) > 0.05 or
               b["content_fraction"] > 0 and not 1 / 1.5 < a["content_fraction"] / b["content_fraction"] < 1.5
               for a, b in zip(after, before))


# ----------------------------------------------------------------------------- optimizer and state


def test_new_parameters_are_in_the_optimizer_and_decay_groups():
    model = randomize_batchnorm(models.create("hybrid_tiny"))
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05), gate_lr_scale=10.0,
                          qk_lr_scale=3.0)
    members = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert set(members) == {id(p) for p in named.values()}, "every parameter is in exactly one group"
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)
    switchable = reparam.switchable_layers(model)
    for name, p in named.items():
        owner = name.rpartition(".")[0]
        if owner in switchable and name.endswith(("gate", "pos_weight")):
            assert members[id(p)] == 0.0 and lrs[id(p)] == pytest.approx(1e-2), f"{name}: no decay, scaled LR"
        elif owner.removesuffix(".qk") in switchable and owner.endswith(".qk"):
            assert members[id(p)] == 0.05 and lrs[id(p)] == pytest.approx(3e-3), f"{name}: decay, q/k LR"
        elif p.ndim <= 1:
            assert members[id(p)] == 0.0, f"{name} must not decay"
        else:
            assert members[id(p)] == 0.05 and lrs[id(p)] == pytest.approx(1e-3), f"{name} must decay"
    # The LR schedule keeps the multipliers.
    from prs.lr_schedule import build_lr_scheduler

    sched = build_lr_scheduler(opt, TrainConfig(lr=1e-3, epochs=2, warmup_epochs=0.0), steps_per_epoch=4)
    sched.step_update(num_updates=4)
    assert opt.param_groups[2]["lr"] == pytest.approx(10 * opt.param_groups[0]["lr"])
    assert opt.param_groups[3]["lr"] == pytest.approx(3 * opt.param_groups[0]["lr"])
    # After the switch, steps update the attention parameters in place: same objects.
    reparam.switch_to_attention(model, switchable, **LINEAR)
    assert {id(p) for p in model.parameters()} == set(members)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):  # the first step moves the gates, the second reaches q/k through them
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 100, (4,))).backward()
        opt.step()
    for name in switchable:
        for pname in ("gate", "content_pos_weight", "qk.weight"):
            full = f"{name}.{pname}"
            assert not torch.equal(named[full], before[full]), f"{full} was not updated"


@pytest.mark.parametrize("settings", [LINEAR, LEGACY], ids=["linear", "sigmoid"])
def test_state_dict_round_trip_restores_mode_and_form(settings):
    model = randomize_batchnorm(models.create("hybrid_tiny")).eval()
    names = reparam.switchable_layers(model)
    reparam.switch_to_attention(model, names[:2], **settings)
    with torch.no_grad():
        for name in names[:2]:
            model.get_parameter(f"{name}.gate").add_(0.25)
    fresh = models.create("hybrid_tiny").eval()
    fresh.load_state_dict(model.state_dict())
    assert reparam.attention_layers(fresh) == names[:2]
    assert {fresh.get_submodule(n).form for n in names[:2]} == {settings["form"]}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_checkpoints_from_before_the_linear_form_load_as_the_sigmoid_form():
    """Old state dicts: the gate was 'gate_logit', there was no form flag and no content bias."""
    model = randomize_batchnorm(models.create("hybrid_tiny")).eval()
    names = reparam.switchable_layers(model)
    reparam.switch_to_attention(model, names, **LEGACY)
    old = {}
    for key, value in model.state_dict().items():
        if key.endswith((".linear_gate", ".content_bias", ".content_pos_weight")):
            continue
        old[key.replace(".gate", ".gate_logit") if key.endswith(".gate") else key] = value
    fresh = models.create("hybrid_tiny").eval()
    fresh.load_state_dict(old)
    assert all(fresh.get_submodule(n).form == "sigmoid" for n in names)
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
    layer = ReparamConv2d(3, 3)
    for bad, message in ((dict(form="cubic"), "switch.form"), (dict(form="sigmoid", locality=0.0), "switch.locality"),
                         (dict(content_locality=-1.0), "switch.content_locality"),
                         (dict(query_init="ones"), "switch.query_init")):
        with pytest.raises(ValueError, match=message):
            layer.switch_to_attention(**bad)
        assert not layer.is_attention


def test_non_hybrids_have_no_switchable_layers():
    for name in models.names():
        if models.family(name) != "hybrid" and not name.endswith(("small", "50")):
            assert reparam.switchable_layers(models.create(name)) == []
