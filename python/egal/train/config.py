"""Training settings: the part of an experiment that says how one model is trained."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .._checks import check_device, is_finite_real, show_number
from .._checks import is_int as _is_int
from .._checks import is_positive_int as _positive_int
from ..errors import EgalError
from ..models.config import ARCHITECTURES, HEADS
from .augment import AugmentSettings

PRECISIONS = ("fp32", "bf16")
NO_WEIGHTS = ("none", "random")  # weights that name no pretrained backbone: random initialisation
FLOAT32_MAX = 3.4028234663852886e38

@dataclass(frozen=True)
class TrainConfig:
    architecture: str = "tiny_cnn"
    head: str = "prototypical"
    weights: str | None = None  # None ("none", "random"), "imagenet" or a path to a torchvision state dict
    # First trainable module of the backbone (e.g. "features.blocks.11"); everything before it is
    # frozen and its output cached (egal.models.split, egal.train.feature_cache). None: train it all.
    trainable_from: str | None = None
    input_size: tuple[int, int] = (128, 128)
    in_channels: int = 1
    embedding_dim: int | None = 128  # prototypical head only
    epochs: int = 20
    batch_size: int = 32  # linear head: rows per step
    lr: float = 1e-3
    weight_decay: float = 1e-4
    beta: float = 0.5  # weight of the Grad-CAM soft Dice term; 0 is plain training
    n_way: int = 3  # prototypical episodes (the paper: 5-shot)
    k_shot: int = 5
    n_query: int = 10
    augment: bool = True
    augment_settings: AugmentSettings = field(default_factory=AugmentSettings)
    seed: int = 0
    device: str = "cpu"
    # The training forward pass in bfloat16 autocast ("bf16"; the Grad-CAM Dice term and the loss stay in
    # float32) or all float32 ("fp32"); channels_last: activations in NHWC, which GPUs' convolutions prefer.
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self):
        try:
            if isinstance(self.input_size, (str, bytes)):
                raise TypeError
            object.__setattr__(self, "input_size", tuple(self.input_size))
        except TypeError:  # one number, a string, a 0-d array
            raise EgalError(f"input_size must be (H, W) positive integers, got {self.input_size!r}") from None
        for name in ("augment", "channels_last"):
            if isinstance(getattr(self, name), np.bool_):  # numpy's booleans are booleans
                object.__setattr__(self, name, bool(getattr(self, name)))
        if isinstance(self.augment_settings, dict):
            object.__setattr__(self, "augment_settings", AugmentSettings.from_dict(self.augment_settings))
        if self.head == "linear":
            object.__setattr__(self, "embedding_dim", None)
        if isinstance(self.weights, str) and self.weights.lower() in NO_WEIGHTS:
            object.__setattr__(self, "weights", None)  # what a TOML config (which has no null) and the CLI say
        self._validate()

    def _validate(self):
        if self.architecture not in ARCHITECTURES:
            raise EgalError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.head not in HEADS:
            raise EgalError(f"head must be one of {HEADS}, got {self.head!r}")
        if len(self.input_size) != 2 or not all(_positive_int(v) for v in self.input_size):
            raise EgalError(f"input_size must be (H, W) positive integers, got {self.input_size!r}")
        if not _is_int(self.in_channels) or self.in_channels not in (1, 3):  # (True == 1, 3.0 == 3)
            raise EgalError(f"in_channels must be 1 or 3, got {show_number(self.in_channels)}")
        for name in ("epochs", "batch_size", "n_way", "k_shot", "n_query"):
            if not _positive_int(getattr(self, name)):
                raise EgalError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.trainable_from is not None and (not isinstance(self.trainable_from, str)
                                                or not self.trainable_from.startswith("features.")):
            raise EgalError("trainable_from must name a backbone module like 'features.blocks.11', got "
                            f"{self.trainable_from!r}")
        if self.precision not in PRECISIONS:
            raise EgalError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("channels_last", "augment"):  # ("false" as a string would switch it on)
            if not isinstance(getattr(self, name), bool):
                raise EgalError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.n_way < 2:
            raise EgalError(f"n_way must be at least 2, got {self.n_way}")
        if self.head == "linear" and self.batch_size < 2:  # every batch would be dropped: no step would run
            raise EgalError(f"batch_size must be at least 2 for the linear head (BatchNorm cannot train on one row), "
                            f"got {self.batch_size}")
        for name in ("lr", "weight_decay", "beta"):
            value = getattr(self, name)
            if not is_finite_real(value) or value < 0:
                raise EgalError(f"{name} must be a finite non-negative number, got {show_number(value)}")
            if value > FLOAT32_MAX:  # the optimiser and the loss compute in float32
                raise EgalError(f"{name} must be at most {FLOAT32_MAX:.4g} (float32's largest number), got {value!r}")
        if not isinstance(self.augment_settings, AugmentSettings):
            raise EgalError(f"augment_settings must be a table of settings, got {self.augment_settings!r}")
        if self.lr <= 0:
            raise EgalError(f"lr must be positive, got {self.lr}")
        if not (_is_int(self.seed) and self.seed >= 0):
            raise EgalError(f"seed must be a non-negative integer, got {self.seed!r}")
        check_device(self.device, "device", mps=True)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        check_known_settings(cls, d, "[train]")
        return cls(**d)


def check_known_settings(cls, values, where: str) -> None:
    """EgalError naming the keys of `values` that are no field of the settings dataclass `cls` (a config section, or
    overrides of one), the field a typo most likely meant, and the known ones: as a keyword argument a typo would be
    a bare TypeError, and in a config file a setting left unread. where: "[train]", "the train overrides"."""
    import difflib

    known = sorted(f.name for f in fields(cls))
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        meant = f" (did you mean {close[0]!r}?)" if close else ""
        raise EgalError(f"unknown setting(s) {unknown} in {where}{meant}; known: {known}")
