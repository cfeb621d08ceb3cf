"""Mechanism diagnostics and the learning test of the switch.

* the collapse gap and its bookkeeping, on constructed logits;
* a run records the diagnostics in every history row from the switch on, and a checkpoint keeps
  the q/k weights at the switch;
* the bounded linear gate: projected into [0, 1] after a step, without blocking its gradient;
* a positive control at layer scale: on a task that a 3x3 convolution followed by global pooling
  provably cannot solve beyond 75 % (two dots too far apart for one window; the label is whether
  their colours match), a switched layer learns to use content attention: it solves the task, and
  putting the convolution back (same weights) costs accuracy.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prs import config, diagnostics, engine, models, reparam, train
from prs.config import TrainConfig
from prs.reparam import ReparamConv2d
from test_reparam import randomize_batchnorm


def test_collapse_gap_of_identical_and_of_different_logits():
    y = torch.tensor([0, 1, 2, 1])
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])  # 3 of 4 right
    same = diagnostics.CollapseGap(torch.device("cpu"))
    same.update(logits, logits.clone(), y)
    out = same.result()
    assert out["top1"] == out["top1_conv"] == 75.0 and out["top1_gap"] == 0.0 and out["loss_gap"] == 0.0
    assert out["agreement"] == 1.0 and out["logit_change"] == 0.0
    worse = diagnostics.CollapseGap(torch.device("cpu"))
    conv = logits.roll(1, dims=1)  # every prediction moves one class on: only the last image is now right
    worse.update(logits[:2], conv[:2], y[:2])
    worse.update(logits[2:], conv[2:], y[2:])  # accumulated over batches
    out = worse.result()
    assert out["top1"] == 75.0 and out["top1_conv"] == 25.0 and out["top1_gap"] == 50.0
    assert out["loss_gap"] > 0 and out["agreement"] == 0.0
    assert out["logit_change"] == torch.tensor(2.0).item()  # |roll - logits| averages 2, |logits| averages 1


def test_a_run_records_the_mechanism_from_the_switch_on(tiny_config, tmp_path):
    cfg = config.from_dict(tiny_config({"train": {"epochs": 2}, "schedule": {"name": "uniform", "epoch": 1},
                                        "run": {"root": str(tmp_path)}}))
    results = train.train(cfg, progress=False, verbose=False)
    before, after = results["history"]
    assert "collapse" not in before and "mechanism" not in before  # nothing switched in epoch 1
    assert before["mean_attention_distance_px"] > 0 and after["mean_attention_distance_px"] > 0
    assert set(after["collapse"]) >= {"loss_gap", "top1_gap", "logit_change", "agreement"}
    # The switched layers left their convolutions: putting the convolutions back changes the logits.
    assert after["collapse"]["logit_change"] > 0
    assert after["collapse"]["top1"] == after["test_top1"]
    layers = after["mechanism"]
    assert [row["name"] for row in layers] == results["model"]["switchable_layers"]
    for row in layers:
        assert row["form"] == "linear" and 0.0 <= row["gate"] <= 1.0 and len(row["gate_per_head"]) == 9
        assert row["qk_moved"] > 0, "q/k must have learned after the switch"
        assert row["gate"] < 1.0, "the gate must have moved off the convolution (weight decay alone moves q/k)"
        assert row["content_distance"] is not None and row["attention_distance"] is not None
    checkpoint = torch.load(Path(results["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert set(checkpoint["qk_at_switch"]) == set(results["model"]["switchable_layers"])


def test_attention_distance_orders_the_models_and_is_unchanged_by_the_switch():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)

    def reach(name):
        return diagnostics.mean_attention_distance_px(models.use_fused_attention(models.create(name)), x)

    # At initialisation: convolutions reach ~1 pixel per layer (more in deep, downsampled stages),
    # ConViT's local init less far than the ViT's near-uniform attention over 8x8 tokens of 4 px.
    assert reach("resnet_tiny") < reach("convit_smoke") < reach("vit_smoke")
    model = randomize_batchnorm(models.create("hybrid_tiny", switchable_stages=[3, 4]))
    conv = diagnostics.mean_attention_distance_px(model, x)
    assert conv == reach("resnet_tiny")  # the never-switched hybrid is the ResNet
    reparam.switch_to_attention(model, reparam.switchable_layers(model))
    assert diagnostics.mean_attention_distance_px(model, x) == pytest.approx(conv, rel=1e-6)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, ReparamConv2d):
                layer.gate.fill_(0.0)  # all content attention: it reaches beyond the taps
    assert diagnostics.mean_attention_distance_px(model, x) > conv + 0.5
    # One 3x3 convolution on a large map: its taps, about 1.07 px (a little less: the border).
    alone = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1))
    assert 1.0 < diagnostics.mean_attention_distance_px(alone, torch.randn(1, 3, 64, 64)) < 1.0725


def test_the_reach_of_a_switched_layer_matches_its_dense_attention_maps():
    """The O(K^2) tap bookkeeping equals the mass-weighted distance of the dense maps, head by head."""
    torch.manual_seed(0)
    for settings in (dict(), dict(form="sigmoid", gate_logit=0.5, locality=1.0)):
        layer = ReparamConv2d(4, 4)
        layer.switch_to_attention(**settings)
        with torch.no_grad():
            layer.gate.copy_(torch.rand(9) if layer.form == "linear" else torch.randn(9))
        x = torch.randn(2, 4, 5, 6)
        g = layer.gate_values().detach().double().view(-1, 1, 1)
        dense = g * layer.positional_attention(5, 6).double() + (1 - g) * layer.content_attention(x).double().mean(0)
        expected = (dense * diagnostics.pixel_distances(5, 6).double()).sum() / dense.sum()
        assert diagnostics._reach(layer, x) == pytest.approx(expected.item(), rel=1e-6), settings


def _switched_layer(**settings):
    torch.manual_seed(0)
    layer = ReparamConv2d(4, 4)
    layer.switch_to_attention(**settings)
    return layer


def test_bounded_gate_is_projected_into_the_unit_interval_after_each_step():
    model = nn.Sequential(_switched_layer())
    opt = engine.build_optimizer(model, TrainConfig(optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0),
                                 gate_lr_scale=1.0)
    gate = model[0].gate
    for sign in (1.0, -1.0):  # first push every gate down (below 0), then up (beyond 1)
        opt.zero_grad()
        (sign * 100.0 * gate.sum()).backward()
        opt.step()
        assert gate.min() >= 0.0 and gate.max() <= 1.0
    assert torch.equal(gate.detach(), torch.ones(9))  # pushed to 1 + 100, projected back to 1
    # A gate at its bound still moves as soon as the loss pushes it inwards: no blocked gradient.
    opt.zero_grad()
    (0.1 * gate.sum()).backward()
    opt.step()
    assert torch.allclose(gate.detach(), torch.full((9,), 0.9))


def test_free_linear_gate_and_sigmoid_gate_are_not_projected():
    for settings in (dict(bounded_gate=False), dict(form="sigmoid")):
        model = nn.Sequential(_switched_layer(**settings))
        opt = engine.build_optimizer(model, TrainConfig(optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0))
        start = model[0].gate.detach().clone()
        (-5.0 * model[0].gate.sum()).backward()
        opt.step()
        assert torch.allclose(model[0].gate.detach(), start + 5.0), settings


# ----------------------------------------------------------------------------- positive control, layer scale


def two_dot_images(n: int, generator: torch.Generator, size: int = 8):
    """(n, 2, size, size) images holding two dots, each a one-hot colour channel (red or green),
    at least 3 pixels apart on some axis, so that no 3x3 window sees both; label 1 if same colour.

    A 3x3 conv + ReLU + global average pooling sees each dot alone: for dots at p1, p2 its pooled
    features are k + a(c1) + b(c2) (a, b depend on the positions), so a linear read-out scores
    s(c1, c2) with s(r, r) + s(g, g) = s(r, g) + s(g, r): both "same" cases cannot score above both
    "different" ones, and at most 3 of the 4 colourings of any pair of positions are classified
    right - 75 % at best. A layer that carries one dot's colour to the other can be exact."""
    x = torch.zeros(n, 2, size, size)
    labels = torch.randint(0, 2, (n,), generator=generator)
    first = torch.randint(0, 2, (n,), generator=generator)
    second = torch.where(labels == 1, first, 1 - first)
    for i in range(n):
        while True:
            a = torch.randint(0, size, (2,), generator=generator)
            b = torch.randint(0, size, (2,), generator=generator)
            if (a - b).abs().max() >= 3:
                break
        x[i, first[i], a[0], a[1]] = 1.0
        x[i, second[i], b[0], b[1]] = 1.0
    return x, labels


class OneLayerNet(nn.Module):
    """A switchable 3x3 layer (2 -> 16 channels), ReLU, global average pooling, a linear read-out."""

    def __init__(self):
        super().__init__()
        self.mix = ReparamConv2d(2, 16, qk_dim=8)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(F.relu(self.mix(x)).mean(dim=(2, 3)))


def _train(model, x, y, steps, lr=1e-2):
    opt = engine.build_optimizer(model, TrainConfig(optimizer="adamw", lr=lr, weight_decay=0.0), gate_lr_scale=1.0)
    for step in range(steps):
        batch = slice((step * 64) % len(x), (step * 64) % len(x) + 64)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_positive_control_a_switched_layer_learns_what_the_convolution_cannot():
    g = torch.Generator().manual_seed(0)
    x, y = two_dot_images(512, g)
    x_test, y_test = two_dot_images(256, g)
    torch.manual_seed(0)
    cnn = OneLayerNet()
    _train(cnn, x, y, 50)  # the convolution first, as a schedule does
    hybrid = OneLayerNet()
    hybrid.load_state_dict(cnn.state_dict())
    reparam.switch_to_attention(hybrid, ["mix"])
    with torch.no_grad():
        assert torch.equal(hybrid(x_test), cnn(x_test)), "the switch keeps the function"
    _train(cnn, x, y, 100)  # equal steps after the switch point
    _train(hybrid, x, y, 100)
    gap = diagnostics.collapse_gap(hybrid, [(x_test, y_test)], torch.device("cpu"))
    cnn_top1 = diagnostics.collapse_gap(cnn, [(x_test, y_test)], torch.device("cpu"))["top1"]
    # 75 % is the convolution's ceiling on the task; 256 test images give it a few points of slack.
    assert cnn_top1 < 82.0, f"the convolution cannot solve this task, yet got {cnn_top1:.1f}%"
    assert gap["top1"] >= 95.0, f"the switched layer should learn the relation: {gap}"
    assert gap["top1_gap"] >= 30.0, f"putting the convolution back must cost accuracy: {gap}"
    assert hybrid.mix.gate.mean() < 0.9, "the gate must have opened"
