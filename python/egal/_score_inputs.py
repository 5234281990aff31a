"""The scorer's input contract, the same for every backend.

Each backend first describes its inputs as `ArraySpec`s (shape, dtype, device),
then calls `check_score_inputs`, so a bad call gets the same message whichever
backend would have run it; `check_masks` / `check_boxes` are its ROI checks.
Messages name the argument and what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._checks import check_alpha, exactly_one
from .errors import EgalError, EgalTypeError

FLOAT_MAPS = ("float32", "float16", "bfloat16")
LOGIT_DTYPES = ("float32", "float16")
MASK_DTYPES = ("bool", "uint8", "float16", "float32")


@dataclass(frozen=True)
class ArraySpec:
    shape: tuple[int, ...]
    dtype: str  # numpy-style name: "float32", "bfloat16", "uint8", "bool", ...
    device: tuple[str, int]  # ("cpu", 0) or ("cuda", ordinal)


@dataclass(frozen=True)
class ScorePlan:
    """What a validated call asks for; backends read sizes from here."""

    batch: int
    channels: int  # K
    cam_size: tuple[int, int]  # (h, w)
    classes: int  # C
    roi_kind: str  # "masks" | "boxes" | "projected"
    roi_size: tuple[int, int]  # (H, W)
    weights_given: bool
    device: tuple[str, int]
    alpha: float


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _require_rank(name: str, spec: ArraySpec, rank: int, layout: str) -> None:
    if len(spec.shape) != rank:
        raise EgalError(f"{name} must have rank {rank} {layout}, got shape {_fmt_shape(spec.shape)}")


def _require_dtype(name: str, spec: ArraySpec, allowed) -> None:
    if spec.dtype not in allowed:
        raise EgalTypeError(f"{name} must have dtype {' / '.join(allowed)}, got {spec.dtype}")


# The largest side of a grid the scoring API takes: larger than any scan's, small enough that a mistaken size
# fails here, not as an out-of-memory kill (the boxes path builds operators of H x h and W x w).
MAX_GRID_SIDE = 65536


# The largest Grad-CAM grid (h x w cells) the scorer takes: maps are 7 x 7 to a few hundred a side, and each
# scoring thread keeps 16 bytes a cell, so a size mistaken for an image's fails here, not as an allocation.
MAX_CAM_CELLS = 1 << 22


def check_cam_grid(h: int, w: int, name: str) -> None:
    if h * w > MAX_CAM_CELLS:
        raise EgalError(f"{name} gives a Grad-CAM grid of {h} x {w} = {h * w:,} cells, more than egal scores "
                        f"({MAX_CAM_CELLS:,}; Grad-CAM maps are 7 x 7 to a few hundred a side): is it an image's size?")


def roi_size_of(roi, roi_size):
    """The ROI grid of a score_batch call: a ProjectedROI's own, or roi_size; both, when they differ, is an error
    (a projection made for other masks would be scored silently)."""
    if roi is None:
        return roi_size
    if roi_size is not None and check_roi_size(roi_size) != check_roi_size(roi.roi_size, "roi.roi_size"):
        raise EgalError(f"roi_size={tuple(roi_size)!r} differs from the roi's own {tuple(roi.roi_size)!r} (the grid "
                        "its masks or boxes were projected from): give roi alone")
    return roi.roi_size


def check_roi_size(size, name: str = "roi_size") -> tuple[int, int]:
    """A grid size (H, W) of the scoring API: a pair of positive ints (numpy ints too), each at most
    MAX_GRID_SIDE; `name` is the argument's (roi_size, cam_size)."""
    try:
        H, W = size
        H, W = int(H), int(W)
        ok = H == size[0] and W == size[1]
    except (TypeError, ValueError):
        raise EgalTypeError(f"{name} must be a pair of positive ints (H, W), got {size!r}") from None
    if not ok or H < 1 or W < 1:
        raise EgalError(f"{name} must be a pair of positive ints (H, W), got {size!r}")
    if max(H, W) > MAX_GRID_SIDE:
        raise EgalError(f"{name} {size!r} has a side over {MAX_GRID_SIDE}: is it a size in pixels (H, W)?")
    return H, W


def check_masks(masks: ArraySpec, roi_size, *, batch: int | None = None) -> tuple[int, int]:
    """Masks [B, H, W] of a mask dtype (and B = batch when given); returns (H, W), checked against roi_size if given."""
    _require_rank("masks", masks, 3, "[B, H, W]")
    _require_dtype("masks", masks, MASK_DTYPES)
    if batch is not None and masks.shape[0] != batch:
        raise EgalError(f"masks has batch size {masks.shape[0]} but activations has {batch}")
    H, W = masks.shape[1:]
    if H < 1 or W < 1:
        raise EgalError(f"masks must have H, W >= 1, got shape {_fmt_shape(masks.shape)}")
    if roi_size is not None and check_roi_size(roi_size) != (H, W):
        raise EgalError(f"roi_size {tuple(roi_size)} disagrees with the masks' (H, W) = ({H}, {W})")
    return H, W


def check_boxes(boxes: ArraySpec, roi_size, *, batch: int | None = None) -> tuple[int, int]:
    """Boxes [B, N, 4] float32 (and B = batch when given) with the roi_size (H, W) they are measured on; returns it."""
    _require_rank("boxes", boxes, 3, "[B, N, 4]")
    _require_dtype("boxes", boxes, ("float32",))
    if (batch is not None and boxes.shape[0] != batch) or boxes.shape[2] != 4:
        with_b = f" with B = {batch}" if batch is not None else ""
        raise EgalError(f"boxes must have shape (B, N, 4){with_b}, got {_fmt_shape(boxes.shape)}")
    if roi_size is None:
        raise EgalError("boxes need roi_size=(H, W), the pixel grid the boxes are measured on")
    return check_roi_size(roi_size)


def check_score_inputs(
    activations: ArraySpec,
    logits: ArraySpec,
    *,
    gradients: ArraySpec | None,
    weights: ArraySpec | None,
    masks: ArraySpec | None,
    boxes: ArraySpec | None,
    roi_weights: ArraySpec | None,
    roi_area: ArraySpec | None,
    roi_size,
    alpha,
) -> ScorePlan:
    """Validate one score_batch call; raise EgalError / EgalTypeError naming the argument."""
    alpha = check_alpha(alpha)
    exactly_one([("gradients", gradients), ("weights", weights)], "the Grad-CAM channel weights source")
    roi_kind = exactly_one([("masks", masks), ("boxes", boxes), ("roi", roi_weights)], "the expert ROI")

    _require_rank("activations", activations, 4, "[B, K, h, w]")
    _require_dtype("activations", activations, FLOAT_MAPS)
    B, K, h, w = activations.shape
    if K < 1 or h < 1 or w < 1:
        raise EgalError(f"activations must have K, h, w >= 1, got shape {_fmt_shape(activations.shape)}")
    check_cam_grid(h, w, f"activations of shape {_fmt_shape(activations.shape)}")

    if gradients is not None:
        _require_rank("gradients", gradients, 4, "[B, K, h, w]")
        _require_dtype("gradients", gradients, FLOAT_MAPS)
        if tuple(gradients.shape) != tuple(activations.shape):
            raise EgalError(
                f"gradients must have the shape of activations {_fmt_shape(activations.shape)}, "
                f"got {_fmt_shape(gradients.shape)}"
            )
        if gradients.dtype != activations.dtype:
            raise EgalTypeError(
                f"gradients must have the dtype of activations ({activations.dtype}), got {gradients.dtype}"
            )
    else:
        _require_rank("weights", weights, 2, "[B, K]")
        _require_dtype("weights", weights, FLOAT_MAPS)
        if tuple(weights.shape) != (B, K):
            raise EgalError(f"weights must have shape (B, K) = ({B}, {K}), got {_fmt_shape(weights.shape)}")

    _require_rank("logits", logits, 2, "[B, C]")
    _require_dtype("logits", logits, LOGIT_DTYPES)
    if logits.shape[0] != B:
        raise EgalError(f"logits has batch size {logits.shape[0]} but activations has {B}")
    C = logits.shape[1]
    if C < 2:
        raise EgalError(f"logits must have C >= 2 classes, got C = {C}")

    if roi_kind == "masks":
        H, W = check_masks(masks, roi_size, batch=B)
    elif roi_kind == "boxes":
        H, W = check_boxes(boxes, roi_size, batch=B)
    else:
        _require_rank("roi.weights", roi_weights, 3, "[B, h, w]")
        _require_dtype("roi.weights", roi_weights, ("float32",))
        if roi_weights.shape[0] != B:
            raise EgalError(f"roi holds {roi_weights.shape[0]} sample(s) but the batch has {B}: slice the ProjectedROI "
                            "as the batch (roi[i:j])")
        if tuple(roi_weights.shape) != (B, h, w):
            raise EgalError(
                f"roi was projected to shape {_fmt_shape(roi_weights.shape)} but the batch needs "
                f"(B, h, w) = ({B}, {h}, {w}); project it with cam_size=({h}, {w})"
            )
        _require_rank("roi.area", roi_area, 1, "[B]")
        _require_dtype("roi.area", roi_area, ("float32",))
        if roi_area.shape[0] != B:
            raise EgalError(f"roi.area must have shape ({B},), got {_fmt_shape(roi_area.shape)}")
        H, W = check_roi_size(roi_size)

    named = [("activations", activations), ("logits", logits), ("gradients", gradients), ("weights", weights),
             ("masks", masks), ("boxes", boxes), ("roi.weights", roi_weights), ("roi.area", roi_area)]
    device = activations.device
    for name, spec in named:
        if spec is None:
            continue
        if spec.device[0] not in ("cpu", "cuda"):
            raise EgalError(f"{name} is on an unsupported device {spec.device[0]}; egal scores on cpu or cuda")
        if spec.device != device:
            raise EgalError(
                f"{name} is on {spec.device[0]}:{spec.device[1]} but activations is on {device[0]}:{device[1]}; "
                "put every input of one batch on the same device"
            )
    roi_kind = "projected" if roi_kind == "roi" else roi_kind
    return ScorePlan(B, K, (h, w), C, roi_kind, (H, W), weights is not None, device, alpha)
