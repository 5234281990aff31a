"""The one rule for the images a model takes: floating point, pixel values in [0, 1], as egal's decoders give
them (the models normalise inside: egal.models.config). An array of 8-bit values or of normalised values would
run, and every score would be wrong, so both are refused with what to do; a NaN or infinite pixel is left to the
scorer, which marks that sample alone (docs/scoring.md)."""
from __future__ import annotations

import numpy as np

from ._checks import bad_argument
from .errors import EgalError, EgalTypeError

# Bilinear resizing and the augmentations keep values in [0, 1]; this only absorbs float rounding.
PIXEL_SLACK = 1e-4


def check_model_images(images, name: str = "images") -> None:
    """EgalTypeError for images that are not floating point, EgalError when a finite value leaves [0, 1].
    images: a numpy array or a torch tensor (on any device: one reduction, one synchronisation)."""
    if type(images).__module__.split(".")[0] == "torch":
        import torch

        if not images.is_floating_point():
            raise _not_floating(name, str(images.dtype).replace("torch.", ""))
        x = images.detach()
        if x.numel() == 0:
            return
        lo, hi = (float(v) for v in torch.aminmax(torch.where(torch.isfinite(x), x, 0.5)))
    else:
        x = np.asarray(images)
        if not np.issubdtype(x.dtype, np.floating):
            raise _not_floating(name, str(x.dtype))
        inside = np.where(np.isfinite(x), x, 0.5)
        lo, hi = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 1.0)
    if lo < -PIXEL_SLACK or hi > 1 + PIXEL_SLACK:
        raise bad_argument(EgalError, name, f"must hold pixel values in [0, 1] (egal's models normalise inside), got "
                           f"values from {lo:g} to {hi:g}{_hint(lo, hi)}")


def _not_floating(name: str, dtype: str) -> Exception:
    return bad_argument(EgalTypeError, name, f"must be floating point in [0, 1], got dtype {dtype}"
                        + (": divide 8-bit pixels by 255" if dtype == "uint8" else ""))


def _hint(lo: float, hi: float) -> str:
    if lo < -PIXEL_SLACK:
        return ": normalised images (a mean and std taken away) go in as the [0, 1] pixels they came from"
    if hi <= 255 + PIXEL_SLACK:
        return ": 8-bit pixels, divide them by 255"
    if hi <= 65535 + PIXEL_SLACK:
        return ": 16-bit pixels, divide them by 65535"
    return ""
