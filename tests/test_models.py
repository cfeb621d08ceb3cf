"""Every registered model: forward/backward, shapes, uniform interface."""

import copy

import pytest
import torch

from prs import models, reparam
from prs.errors import UserError



@pytest.mark.parametrize("name", models.names())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = models.create(name, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert models.family(name) in ("resnet", "hybrid", "vit", "convit")
    assert not hasattr(model, "prs_family") and not hasattr(model, "prs_name"), "the registry stamps no instance"
    # Exactly the hybrids have layers a schedule can switch.
    assert bool(reparam.switchable_layers(model)) == (models.family(name) == "hybrid")


def test_registry_knows_each_models_family():
    assert models.names(family="hybrid") == ["hybrid_resnet18", "hybrid_resnet50", "hybrid_tiny"]
    assert models.names(family="convit") == ["convit_small", "convit_smoke", "convit_tiny"]
    assert sorted(n for f in models.FAMILIES for n in models.names(family=f)) == models.names()
    assert [models.family(n) for n in ("resnet18", "hybrid_tiny", "deit_tiny", "convit_tiny")] == \
        ["resnet", "hybrid", "vit", "convit"]
    with pytest.raises(UserError, match="unknown model 'resnet19'"):
        models.family("resnet19")
    with pytest.raises(UserError, match="--model: unknown model"):
        models.check_name("resnet19", setting="--model")


def test_register_refuses_an_unknown_family_and_a_second_name():
    with pytest.raises(ValueError, match="family 'cnn'"):
        models.register(family="cnn")
    with pytest.raises(ValueError, match="registered twice"):
        models.register(family="resnet")(models.resnet.resnet18)


@pytest.mark.parametrize("name", models.names(family="hybrid"))
def test_hybrids_forward_backward_after_switching_everything(name):
    model = models.create(name, num_classes=10)
    reparam.switch_to_attention(model, reparam.switchable_layers(model))
    model(torch.randn(2, 3, 32, 32)).sum().backward()


def test_resnet_stages_run_at_32_16_8_4():
    model = models.create("resnet_tiny")
    sizes = []
    hooks = [getattr(model, f"layer{i}").register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
             for i in range(1, 5)]
    model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert sizes == [32, 16, 8, 4]
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)


def test_hybrid_default_stages_and_stride2_kept_as_conv():
    model = models.create("hybrid_resnet18")
    names = reparam.switchable_layers(model)
    assert {n.split(".")[0] for n in names} == {"layer2", "layer3", "layer4"}
    # The first conv of stages 2-4 has stride 2: it stays a convolution.
    assert all(f"layer{s}.0.conv1" not in names for s in (2, 3, 4))
    assert len(names) == 9
    one = models.create("hybrid_tiny", switchable_stages=[4])
    assert reparam.switchable_layers(one) == ["layer4.0.conv2"]


def test_hybrid_and_cnn_have_the_same_function_before_switching():
    torch.manual_seed(0)
    cnn = models.create("resnet_tiny")
    torch.manual_seed(0)
    hybrid = models.create("hybrid_tiny")
    hybrid_state = hybrid.state_dict()
    shared = {k: v for k, v in cnn.state_dict().items()}
    hybrid.load_state_dict({**hybrid_state, **shared})
    x = torch.randn(2, 3, 32, 32)
    cnn.eval(), hybrid.eval()
    with torch.no_grad():
        assert torch.allclose(cnn(x), hybrid(x), atol=1e-6)


@pytest.mark.parametrize("bad", [{"switchable_stages": [5]}, {"switchable_stages": []}])
def test_bad_hybrid_stages(bad):
    with pytest.raises(UserError, match="switchable_stages"):
        models.create("hybrid_tiny", **bad)


def test_unknown_model_and_stages_on_a_non_hybrid():
    with pytest.raises(UserError, match="unknown model 'resnet19'"):
        models.create("resnet19")
    with pytest.raises(UserError, match="only hybrid models"):
        models.create("deit_tiny", switchable_stages=[2])


def test_vit_patch_size_is_a_parameter():
    model = models.create("vit_smoke", patch_size=2)
    assert model.patch_embed.num_patches == 256


def _perturb_gpsa(model, seed=0):
    """Move ConViT's gates and positional weights off their init, so that both terms matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "gating_param"):
                m.gating_param.copy_(torch.randn(m.gating_param.shape, generator=g) * 2)
                m.pos_proj.weight.copy_(torch.randn(m.pos_proj.weight.shape, generator=g))
    return model


@pytest.mark.parametrize("name", models.names(family="convit"))
def test_fused_convit_attention_computes_timms_function(name):
    """Same state dict keys, logits and gradients as timm's materialised GPSA/MHSA (in float64,
    so that any difference beyond rounding shows)."""
    torch.manual_seed(0)
    stock = _perturb_gpsa(models.create(name)).double().train()
    fused = models.use_fused_attention(copy.deepcopy(stock))
    kinds = {type(b.attn).__name__ for b in fused.blocks}
    assert kinds == {"FusedGPSA", "FusedMHSA"}, kinds
    assert list(fused.state_dict()) == list(stock.state_dict())
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    out_stock, out_fused = stock(x), fused(x)
    torch.testing.assert_close(out_fused, out_stock, atol=1e-10, rtol=1e-10)
    out_stock.square().sum().backward()
    out_fused.square().sum().backward()
    stock_grads = {n: p.grad for n, p in stock.named_parameters()}
    scale = max(g.abs().max().item() for g in stock_grads.values())
    for pname, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, stock_grads[pname], atol=1e-10 * scale, rtol=1e-8,
                                   msg=lambda m, n=pname: f"{n}: {m}")


def test_fused_attention_leaves_other_models_alone():
    for name in ("resnet_tiny", "vit_smoke", "hybrid_tiny"):
        model = models.create(name)
        before = [type(m) for m in model.modules()]
        assert models.use_fused_attention(model) is model
        assert [type(m) for m in model.modules()] == before


def test_training_engine_uses_fused_convit_attention():
    from prs.config import Config, ModelConfig
    from prs.train import build_model

    model = build_model(Config(model=ModelConfig(name="convit_smoke")), num_classes=10)
    assert all(type(b.attn).__name__.startswith("Fused") for b in model.blocks)
