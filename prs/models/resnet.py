"""CIFAR ResNets (timm's ResNet with a 3x3 stride-1 stem and no max-pool) and the hybrids.

Stages run at 32/16/8/4 pixels for 32x32 inputs. A hybrid is the same network with every
stride-1 3x3 convolution of `switchable_stages` replaced by a `ReparamConv2d`. Stride-2
convolutions (the first conv of stages 2-4) and 1x1 shortcuts stay convolutions: they have
no attention form that preserves the function (a documented choice).
"""

from __future__ import annotations

from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from prs.errors import UserError
from prs.models import register
from prs.reparam import ReparamConv2d

DEFAULT_SWITCHABLE_STAGES = (2, 3, 4)


def cifar_resnet(block, layers, channels=(64, 128, 256, 512), num_classes=100, drop_path=0.0,
                 switchable_stages=None, hybrid=False) -> ResNet:
    if switchable_stages is not None and not hybrid:
        raise UserError("model.switchable_stages: only hybrid models have switchable stages; set it to null")
    model = ResNet(block, layers, channels=channels, num_classes=num_classes, drop_path_rate=drop_path)
    stem = model.conv1.out_channels
    if block is BasicBlock and channels[0] != stem:
        # timm's plain stem is always 64 wide; for narrow nets make it as wide as stage 1.
        stem = channels[0]
        first = model.layer1[0]
        model.layer1[0] = BasicBlock(stem, stem, drop_path=first.drop_path)
    model.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=1, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(stem)
    model.maxpool = nn.Identity()
    if hybrid:
        stages = DEFAULT_SWITCHABLE_STAGES if switchable_stages is None else tuple(switchable_stages)
        bad = [s for s in stages if s not in (1, 2, 3, 4)]
        if bad or not stages:
            raise UserError(f"model.switchable_stages: stages are 1, 2, 3, 4; got {list(stages)}")
        make_switchable(model, stages)
    return model


def make_switchable(model: ResNet, stages) -> None:
    """Replace every stride-1 3x3 conv in the given stages by a ReparamConv2d (weights kept)."""
    for stage in stages:
        for block in getattr(model, f"layer{stage}"):
            for attr in ("conv1", "conv2", "conv3"):
                conv = getattr(block, attr, None)
                if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1):
                    setattr(block, attr, ReparamConv2d.from_conv(conv))


# -- plain CIFAR ResNets -------------------------------------------------------------------

@register(family="resnet")
def resnet_tiny(**kwargs):
    """CPU smoke model: one BasicBlock per stage, widths 16/32/64/128."""
    return cifar_resnet(BasicBlock, [1, 1, 1, 1], (16, 32, 64, 128), **kwargs)


@register(family="resnet")
def resnet18(**kwargs):
    return cifar_resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register(family="resnet")
def resnet50(**kwargs):
    return cifar_resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


# -- hybrids: the same networks with switchable convolutions --------------------------------

@register(family="hybrid")
def hybrid_tiny(**kwargs):
    return cifar_resnet(BasicBlock, [1, 1, 1, 1], (16, 32, 64, 128), hybrid=True, **kwargs)


@register(family="hybrid")
def hybrid_resnet18(**kwargs):
    return cifar_resnet(BasicBlock, [2, 2, 2, 2], hybrid=True, **kwargs)


@register(family="hybrid")
def hybrid_resnet50(**kwargs):
    return cifar_resnet(Bottleneck, [3, 4, 6, 3], hybrid=True, **kwargs)
