"""Cut a classifier's backbone into a frozen prefix and a trainable tail.

Fine-tuning only the last stages of a pretrained backbone keeps most of its
ImageNet features and costs a fraction of full training; when the prefix is
frozen, its output for an image never changes, so it can be computed once and
cached (egal.train.feature_cache). The cut is named by the first trainable
module, e.g. "features.blocks.11" (EfficientNet-Lite0's sixth stage) or
"features.denseblock4": every module of `features` before it in forward order
is frozen, it and everything after it train.

`tail(prefix(images))` is exactly `model.feature_map(images)`: the two halves
are plain nn.Sequentials over the model's own modules (shared, not copied).
"""
from __future__ import annotations

from torch import nn

from ..errors import EgalError


class FrozenPrefix(nn.Module):
    """Input normalisation plus the backbone's modules before the cut."""

    def __init__(self, model, layers: nn.Sequential):
        super().__init__()
        self._model = [model]  # a list keeps the model out of this module's children (no double registration)
        self.layers = layers

    def forward(self, images):  # [B, in_channels, H, W] in [0, 1] -> [B, K', h', w']
        return self.layers(self._model[0].normalise(images))


def split_features(model, trainable_from: str) -> tuple[FrozenPrefix, nn.Sequential]:
    """(prefix, tail) of model.features, cut before the module named `trainable_from`."""
    if not isinstance(trainable_from, str) or not trainable_from.startswith("features."):
        raise EgalError(f"trainable_from must name a module inside the backbone, like 'features.blocks.11', "
                        f"got {trainable_from!r}")
    path = trainable_from.split(".")[1:]
    prefix, tail = _cut(model.features, path, "features")
    if not prefix:
        raise EgalError(f"trainable_from {trainable_from!r} is the first module of the backbone: nothing would be "
                        "frozen")
    return FrozenPrefix(model, nn.Sequential(*prefix)), nn.Sequential(*tail)


def cut_points(model) -> list[str]:
    """Every name split_features accepts for this model, in forward order (for messages and --help)."""
    names: list[str] = []

    def walk(seq, name):
        for child_name, child in seq.named_children():
            full = f"{name}.{child_name}"
            names.append(full)
            if type(child) is nn.Sequential:
                walk(child, full)

    walk(model.features, "features")
    leading = _leading_chain(model)
    return [n for n in names if n not in leading]


def freeze_prefix(prefix: FrozenPrefix) -> None:
    """No gradients, and inference-mode BatchNorm (ImageNet statistics), now and after model.train()."""
    prefix.layers.requires_grad_(False)
    prefix.layers.eval()


def _cut(seq: nn.Sequential, path: list[str], name: str):
    """Modules before / from path inside seq, recursing through nested Sequentials."""
    children = list(seq.named_children())
    names = [n for n, _ in children]
    if type(seq) is not nn.Sequential or path[0] not in names:
        options = ", ".join(f"{name}.{n}" for n in names) if type(seq) is nn.Sequential else "none (not a Sequential)"
        raise EgalError(f"{name} has no child {path[0]!r} to cut at; its children are {options}")
    i = names.index(path[0])
    before = [m for _, m in children[:i]]
    after = [m for _, m in children[i + 1:]]
    if len(path) == 1:
        return before, [children[i][1]] + after
    inner_before, inner_after = _cut(children[i][1], path[1:], f"{name}.{path[0]}")
    return before + inner_before, inner_after + after


def _leading_chain(model) -> set:
    """Names of the modules that start the backbone (cutting there would freeze nothing)."""
    chain, name, module = set(), "features", model.features
    while type(module) is nn.Sequential and len(module):
        child_name, module = next(iter(module.named_children()))
        name = f"{name}.{child_name}"
        chain.add(name)
    return chain
