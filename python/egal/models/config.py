"""What it takes to rebuild a classifier: the part of a saved model that is not weights.

A `ModelConfig` travels inside every saved model file (and as metadata in every
exported ONNX graph), so it holds only plain values (str, int, float, lists):
`torch.load(weights_only=True)` can read it back without unpickling objects.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field

from .._checks import is_positive_int as _positive_int
from ..errors import EgalError

ARCHITECTURES = ("densenet121", "resnet18", "tiny_cnn", "efficientnet_lite0")
HEADS = ("linear", "prototypical")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# One-channel inputs (grey X-rays) fed to an ImageNet backbone whose first
# convolution was summed over RGB: the grey image stands for R = G = B, so it is
# normalised with the mean of the RGB statistics.
GREY_MEAN = (sum(IMAGENET_MEAN) / 3,)
GREY_STD = (sum(IMAGENET_STD) / 3,)


@dataclass(frozen=True)
class ModelConfig:
    architecture: str  # one of ARCHITECTURES
    head: str  # one of HEADS
    classes: tuple[str, ...]  # class names, index = logit position
    target_layer: str  # module name of the Grad-CAM target layer
    input_size: tuple[int, int]  # (H, W) the model is trained and exported at
    in_channels: int = 3  # 1 (grey) or 3 (RGB)
    mean: tuple[float, ...] = IMAGENET_MEAN  # per input channel, applied inside the model
    std: tuple[float, ...] = IMAGENET_STD
    embedding_dim: int | None = None  # prototypical head only (the paper uses 512)
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. where the weights came from)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __post_init__(self):
        # Frozen dataclass: normalise sequences to tuples through object.__setattr__.
        for name in ("classes", "input_size", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ModelConfigError(f"{name} must be a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ModelConfigError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.head not in HEADS:
            raise ModelConfigError(f"head must be one of {HEADS}, got {self.head!r}")
        if len(self.classes) < 2 or not all(isinstance(c, str) and c for c in self.classes):
            raise ModelConfigError(f"classes must be at least 2 non-empty names, got {list(self.classes)!r}")
        if len(set(self.classes)) != len(self.classes):
            raise ModelConfigError(f"classes must be distinct, got {list(self.classes)!r}")
        if not isinstance(self.target_layer, str) or not self.target_layer:
            raise ModelConfigError(f"target_layer must be a module name, got {self.target_layer!r}")
        if len(self.input_size) != 2 or not all(_positive_int(s) for s in self.input_size):
            raise ModelConfigError(f"input_size must be (H, W) positive integers, got {self.input_size!r}")
        if self.in_channels not in (1, 3) or isinstance(self.in_channels, bool):
            raise ModelConfigError(f"in_channels must be 1 or 3, got {self.in_channels!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != self.in_channels or not all(_real(v) for v in value):
                raise ModelConfigError(
                    f"{name} must hold {self.in_channels} number(s), one per input channel, got {list(value)!r}"
                )
        if not all(s > 0 for s in self.std):
            raise ModelConfigError(f"std must be positive, got {list(self.std)!r}")
        if self.head == "prototypical":
            if not _positive_int(self.embedding_dim):
                raise ModelConfigError(f"a prototypical head needs embedding_dim > 0, got {self.embedding_dim!r}")
        elif self.embedding_dim is not None:
            raise ModelConfigError(f"embedding_dim applies to the prototypical head only, got {self.embedding_dim!r}")
        if not isinstance(self.extra, dict):
            raise ModelConfigError(f"extra must be a dict, got {type(self.extra).__name__}")

    def to_dict(self) -> dict:
        """Plain, torch.load(weights_only=True)-safe values."""
        d = asdict(self)
        for name in ("classes", "input_size", "mean", "std"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d) -> ModelConfig:
        if not isinstance(d, dict):
            raise ModelConfigError(f"a model config must be a dict, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelConfigError(f"unknown model config field(s) {unknown}; known: {sorted(known)}")
        missing = sorted(k for k in ("architecture", "head", "classes", "target_layer", "input_size") if k not in d)
        if missing:
            raise ModelConfigError(f"model config lacks required field(s) {missing}")
        return cls(**d)


class ModelConfigError(EgalError):
    """A model configuration (given, or read from a file) is not valid."""


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and x == x
