"""Every registered model: forward/backward, shapes, uniform interface."""

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
    assert models.family(model) in ("resnet", "hybrid", "vit", "convit")


@pytest.mark.parametrize("name", [n for n in models.names() if n.startswith("hybrid")])
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
