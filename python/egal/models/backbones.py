"""Convolutional backbones as one `nn.Sequential` named `features`.

Every backbone ends in a post-ReLU feature map [B, K, h, w] that the classifier
global-average-pools. Keeping torchvision's module names under `features`
means layer names from other code (the paper's
`features.denseblock4.denselayer16.conv2`) are valid target layers here.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from ..errors import EgalError
from .weights import load_backbone_weights


@dataclass
class Backbone:
    features: nn.Sequential  # [B, in_channels, H, W] -> [B, num_features, h, w], post-ReLU
    num_features: int  # K
    default_target_layer: str  # name relative to the classifier (starts with "features")
    weights_source: str = "random"  # where the initial weights came from, for the config


def build_backbone(architecture: str, in_channels: int, weights) -> Backbone:
    if architecture == "efficientnet_lite0":  # adapts its own stem to 1 channel (static 'same' padding)
        from .efficientnet_lite import efficientnet_lite0

        return Backbone(*efficientnet_lite0(in_channels, weights))
    if architecture == "densenet121":
        backbone = _densenet121(weights)
    elif architecture == "resnet18":
        backbone = _resnet18(weights)
    elif architecture == "tiny_cnn":
        backbone = _tiny_cnn(weights)
    else:  # ModelConfig has already rejected this; kept for direct callers
        raise EgalError(f"unknown architecture {architecture!r}")
    if in_channels == 1:
        _make_grey(backbone.features)
    return backbone


def _densenet121(weights) -> Backbone:
    import torchvision

    net = torchvision.models.densenet121(weights=None)
    source = load_backbone_weights(net, "densenet121", weights)
    features = net.features
    # torchvision applies this ReLU functionally in DenseNet.forward; as a module
    # it becomes a nameable target layer: the last post-ReLU feature map.
    features.add_module("relu5", nn.ReLU(inplace=True))
    return Backbone(features, net.classifier.in_features, "features.relu5", source)


def _resnet18(weights) -> Backbone:
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    source = load_backbone_weights(net, "resnet18", weights)
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    features = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
    # layer4 ends in BasicBlock's ReLU(out + identity): already post-ReLU.
    return Backbone(features, net.fc.in_features, "features.layer4", source)


def _tiny_cnn(weights) -> Backbone:
    """Three conv-BN-ReLU stages, stride 8 in all: for tests, demos and CPU runs."""
    layers = OrderedDict()
    channels = (3, 16, 32, 64)
    for i, (cin, cout) in enumerate(pairwise(channels), start=1):
        layers[f"conv{i}"] = nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1, bias=False)
        layers[f"norm{i}"] = nn.BatchNorm2d(cout)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
    features = nn.Sequential(layers)
    source = load_backbone_weights(features, "tiny_cnn", weights)
    return Backbone(features, channels[-1], f"features.relu{len(channels) - 1}", source)


def _make_grey(features: nn.Sequential) -> None:
    """Swap the first convolution for a 1-channel one with the RGB kernels summed.

    A grey image x stands for the RGB image (x, x, x), whose response is the
    summed kernel applied to x, so pretrained filters keep their meaning.
    """
    for name, module in features.named_children():
        if isinstance(module, nn.Conv2d):
            grey = nn.Conv2d(
                1, module.out_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, module.groups, module.bias is not None, module.padding_mode,
            )
            with torch.no_grad():
                grey.weight.copy_(module.weight.sum(dim=1, keepdim=True))
                if module.bias is not None:
                    grey.bias.copy_(module.bias)
            setattr(features, name, grey)
            return
    raise ValueError("backbone has no leading Conv2d to adapt to 1-channel input")
