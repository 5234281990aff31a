"""Pictures for the pages, with numpy and Pillow alone (no matplotlib, no PyTorch): perceptual colour
maps, Grad-CAM overlays, ROI outlines, and PNG data URIs that keep a page self-contained."""
from __future__ import annotations

import base64
import io

import numpy as np

# matplotlib's viridis and inferno sampled at 33 evenly spaced points (interpolated linearly in between:
# at most 5/255 from the 256-entry originals). Perceptually uniform, readable in grey and by most
# colour-blind readers; inferno for Grad-CAM (dark = no attention), viridis for densities.
_COLORMAPS = {
    "viridis": "440154 470d60 48186a 482374 472d7b 453781 424086 3e4989 3b528b 375b8d 33638d 2f6b8e 2c728e 297a8e "
               "26828e 23898e 21918c 1f988b 1fa088 22a785 28ae80 32b67a 3fbc73 4ec36b 5ec962 70cf57 84d44b 98d83e "
               "addc30 c2df23 d8e219 ece51b fde725",
    "inferno": "000004 040312 0b0724 150b37 210c4a 2f0a5b 3d0965 4a0c6b 57106e 64156e 71196e 7d1e6d 8a226a 972766 "
               "a32c61 b0315b bc3754 c73e4c d24644 db503b e45a31 eb6628 f1731d f68013 f98e09 fb9d07 fcac11 fbbc21 "
               "f9cb35 f5db4c f2ea69 f3f68a fcffa4",
}
CAM_COLORMAP = "inferno"
DENSITY_COLORMAP = "viridis"
ROI_COLOUR = (0, 229, 255)  # cyan: apart from every colour of inferno
CAM_OPACITY = 0.5  # the Grad-CAM colour's share in an overlay pixel


def colormap_stops(name: str) -> np.ndarray:
    """[33, 3] uint8 RGB stops of a colour map."""
    if name not in _COLORMAPS:
        raise ValueError(f"colour map must be one of {sorted(_COLORMAPS)}, got {name!r}")
    return np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in _COLORMAPS[name].split()], dtype=np.uint8)


def colorize(values, name: str) -> np.ndarray:
    """values [...] in [0, 1] (clipped; NaN as 0) -> RGB uint8 [..., 3]."""
    stops = colormap_stops(name).astype(np.float32)
    v = np.nan_to_num(np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0), nan=0.0)
    position = v * (len(stops) - 1)
    low = np.minimum(position.astype(np.int64), len(stops) - 2)
    t = (position - low)[..., None]
    return np.round(stops[low] * (1 - t) + stops[low + 1] * t).astype(np.uint8)


def grey_to_rgb(image) -> np.ndarray:
    """[H, W] grey (float in [0, 1], or uint8) -> RGB uint8 [H, W, 3]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=-1)


def upsample_cam(cam, size) -> np.ndarray:
    """A normalised Grad-CAM map [h, w] -> [H, W], bilinear (as the pool's images are resized)."""
    from ..pool.images import resize_bilinear

    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0)
    return resize_bilinear(cam[None], tuple(size))[0]


def cam_overlay(grey, cam) -> np.ndarray:
    """The image [H, W] with the Grad-CAM map [h, w] (upsampled) blended over it in CAM_COLORMAP."""
    base = grey_to_rgb(grey).astype(np.float32)
    colour = colorize(upsample_cam(cam, base.shape[:2]), CAM_COLORMAP).astype(np.float32)
    return np.round(base * (1 - CAM_OPACITY) + colour * CAM_OPACITY).astype(np.uint8)


def draw_outline(rgb, mask, colour=ROI_COLOUR) -> np.ndarray:
    """A copy of rgb [H, W, 3] with the border pixels of mask [H, W] (nonzero = ROI) painted `colour`."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    inside = np.asarray(mask) > 0
    if inside.shape != out.shape[:2]:
        raise ValueError(f"mask {inside.shape} and image {out.shape[:2]} differ in size")
    padded = np.pad(inside, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out[inside & ~interior] = colour
    return out


def png_bytes(rgb) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_data_uri(rgb) -> str:
    return data_uri(png_bytes(rgb))
