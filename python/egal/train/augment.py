"""Augmentation that moves image and ROI together, reproducible from a torch.Generator.

One random affine transform per sample (flip, rotation, scale, shift) is applied
to the image (bilinear) and to its mask (bilinear, then kept soft in [0, 1]) with
the same sampling grid, so the ROI still outlines the lesion after augmentation.
Intensity jitter touches the image only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from .._checks import is_finite_real, show_number
from ..errors import EgalError

# The largest value each magnitude may take (the smallest is 0): a rotation beyond 180 degrees repeats, a zoom
# factor 1 - scale must stay positive, and a shift, brightness or contrast beyond the whole image or range
# leaves nothing of it.
AUGMENT_LIMITS = {"rotate_degrees": (180.0, True), "scale": (1.0, False), "shift": (1.0, True),
                  "brightness": (1.0, True), "contrast": (1.0, True)}  # name -> (limit, limit allowed)


@dataclass(frozen=True)
class AugmentSettings:
    hflip: bool = True
    vflip: bool = False
    rotate_degrees: float = 10.0
    scale: float = 0.1  # zoom factor drawn from [1 - scale, 1 + scale]
    shift: float = 0.05  # fraction of the image size
    brightness: float = 0.1  # additive, fraction of the [0, 1] range
    contrast: float = 0.1  # multiplicative around the image mean

    def __post_init__(self):
        for name in ("hflip", "vflip"):
            if not isinstance(getattr(self, name), bool):
                raise EgalError(f"augment_settings.{name} must be true or false, got {getattr(self, name)!r}")
        for name, (limit, inclusive) in AUGMENT_LIMITS.items():
            value = getattr(self, name)
            if not is_finite_real(value) or value < 0 or value > limit or (value == limit and not inclusive):
                bound = f"{limit:g}" if inclusive else f"below {limit:g}"
                raise EgalError(f"augment_settings.{name} must be a number from 0 to {bound}, got {show_number(value)}")

    @classmethod
    def from_dict(cls, d: dict) -> AugmentSettings:
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in set(d) - set(known))
        if unknown:
            raise EgalError(f"unknown augment_settings {unknown}; known: {known}")
        return cls(**d)

    @property
    def geometric(self) -> bool:
        return self.hflip or self.vflip or self.rotate_degrees > 0 or self.scale > 0 or self.shift > 0


def augment_pair(images, masks, generator: torch.Generator, settings: AugmentSettings = AugmentSettings()):
    """images [B, C, H, W] in [0, 1], masks [B, H, W] -> transformed (float32 images, float32 soft masks).

    Draws all random numbers from `generator` on the CPU, so the result depends
    only on the generator's state, not on the device.
    """
    B = images.shape[0]
    masks = masks.to(images.dtype)
    if settings.geometric:
        theta = _random_affine(B, generator, settings).to(images.device, images.dtype)  # [B, 2, 3]
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # [B, H, W, 2]
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        same_size = masks.shape[1:] == images.shape[2:]
        mask_grid = grid if same_size else F.affine_grid(theta, [B, 1, *masks.shape[1:]], align_corners=False)
        masks = F.grid_sample(masks[:, None], mask_grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)[:, 0]
    if settings.brightness > 0 or settings.contrast > 0:
        u = torch.rand(B, 2, generator=generator).to(images.device, images.dtype) * 2 - 1  # [B, 2] in [-1, 1]
        gain = (1 + settings.contrast * u[:, 0]).view(B, 1, 1, 1)
        offset = (settings.brightness * u[:, 1]).view(B, 1, 1, 1)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = ((images - mean) * gain + mean + offset).clamp(0, 1)
    return images, masks.clamp(0, 1)


def _random_affine(B, generator, s: AugmentSettings):  # -> [B, 2, 3] output->input sampling matrices
    u = torch.rand(B, 6, generator=generator, dtype=torch.float64)  # [B, 6] in [0, 1)
    angle = (u[:, 0] * 2 - 1) * math.radians(s.rotate_degrees)
    zoom = 1 + (u[:, 1] * 2 - 1) * s.scale
    tx = (u[:, 2] * 2 - 1) * s.shift * 2  # affine_grid coordinates span [-1, 1]: 2 units per image
    ty = (u[:, 3] * 2 - 1) * s.shift * 2
    fx = torch.where((u[:, 4] < 0.5) & torch.tensor(s.hflip), -1.0, 1.0)
    fy = torch.where((u[:, 5] < 0.5) & torch.tensor(s.vflip), -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([
        torch.stack([cos * fx, -sin * fy, tx], dim=1),
        torch.stack([sin * fx, cos * fy, ty], dim=1),
    ], dim=1)
    return theta.float()
