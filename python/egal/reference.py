"""The pure-Python scorer: docs/scoring.md in vectorised PyTorch.

This is the benchmark baseline and a fallback backend, written the way one
would glue Grad-CAM and a Dice loss together by hand: materialise the upsampled
map with F.interpolate and the full-resolution mask, then reduce. It runs on the
device of its inputs (CPU or CUDA) in float32.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import _core
from ._result import ScoreResult
from ._score_inputs import ArraySpec, check_score_inputs, roi_size_of
from .api import bad_mask_error, require_array
from .combine import DEFAULT_ALPHA
from .roi import ProjectedROI

DICE_EPS = 1e-6
NORM_EPS = 1e-7


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised on torch-free nodes
        raise ImportError(
            "egal.reference needs PyTorch (pip install 'egal[torch]'); the compiled backends do not"
        ) from exc
    return torch


def as_tensor(x, name: str):
    """Any DLPack producer, numpy array or nested list as a torch tensor, zero-copy where possible."""
    torch = _torch()
    if x is None or isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray) and any(step < 0 for step in x.strides):  # (a reversed view: torch has none)
        x = np.ascontiguousarray(x)
    if isinstance(x, np.ndarray) and not x.dtype.isnative:  # big-endian data: DLPack has no byte order
        x = x.astype(x.dtype.newbyteorder("="))
    if hasattr(x, "__dlpack__"):
        return torch.from_dlpack(x)
    if hasattr(x, "data_ptr") and hasattr(x, "device_name"):  # onnxruntime OrtValue
        from ._dlpack import as_dlpack_producer

        return torch.from_dlpack(as_dlpack_producer(x, name))
    try:
        return torch.as_tensor(np.asarray(x))
    except Exception as exc:
        raise TypeError(f"{name} must be an array (numpy, torch, or any DLPack producer), "
                        f"got {type(x).__name__}") from exc


def spec_of(t) -> ArraySpec | None:
    if t is None:
        return None
    dtype = str(t.dtype).replace("torch.", "")
    return ArraySpec(tuple(t.shape), dtype, (t.device.type, t.device.index or 0))


def rasterise_boxes(boxes, roi_size):
    """[B, N, 4] boxes (x0, y0, x1, y1), NaN-padded, as [B, H, W] float32 masks (docs/scoring.md)."""
    torch = _torch()
    H, W = roi_size
    ys = torch.arange(H, device=boxes.device, dtype=torch.float32) + 0.5
    xs = torch.arange(W, device=boxes.device, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))  # [B, N, 1]
    in_y = (ys >= y0) & (ys < y1)  # NaN compares False: padding rows cover nothing
    in_x = (xs >= x0) & (xs < x1)
    covered = (in_y[..., :, None] & in_x[..., None, :]).any(dim=1)  # [B, H, W]
    return covered.to(torch.float32)


def gradient_means(G):
    """Step 2, [B, K, h, w] -> [B, K]: where finite float32 gradients' sum overflows, their mean (finite) is
    taken in float64, as the fused scorers do."""
    torch = _torch()
    means = G.float().mean(dim=(2, 3))
    overflowed = ~torch.isfinite(means)
    if overflowed.any():
        means = torch.where(overflowed, G.double().mean(dim=(2, 3)).float(), means)
    return means


def normalise_cam(raw):
    """docs/scoring.md steps 3-4 on a raw map [B, h, w]: ReLU, then min-max to [0, 1] (differentiable)."""
    cam = raw.clamp_min(0)
    lo = cam.amin(dim=(1, 2), keepdim=True)
    hi = cam.amax(dim=(1, 2), keepdim=True)
    return (cam - lo) / (hi - lo + NORM_EPS)


def projected_dice_distance(cam, roi_weights, roi_area, roi_size):
    """1 - soft Dice [B] of each normalised map [B, h, w], upsampled to roi_size, with its ROI given
    projected (roi_weights [B, h, w] = R_y^T M R_x, roi_area [B] = sum M; egal.roi). Exactly docs/scoring.md's
    steps 5-6 without building the H x W map, and differentiable in `cam`. An empty ROI is the caller's
    to handle (docs/scoring.md gives it no Dice)."""
    torch = _torch()
    cy, cx = (torch.tensor(upsampled_mass(n, m), device=cam.device, dtype=cam.dtype)
              for n, m in zip(roi_size, cam.shape[1:], strict=True))
    inter = (cam * roi_weights).sum(dim=(1, 2))
    sum_u = torch.einsum("bij,i,j->b", cam, cy, cx)  # the upsampled map's sum
    return 1 - (2 * inter + DICE_EPS) / (sum_u + roi_area + DICE_EPS)


def dice_sums_consistent(cam, roi_weights, roi_area, roi_size):
    """[B] bool: whether 0 <= I <= min(SU, SM), as every projection of masks in [0, 1] keeps them, up to the
    fused scorers' rounding tolerance (egal/score.h, kDiceSumsTolerance); the sums in float64, as they take them.
    A ProjectedROI that fails is refused as the fused scorers refuse it: its D would fall outside [0, 1]."""
    torch = _torch()
    cam = cam.double()
    cy, cx = (torch.tensor(upsampled_mass(n, m), device=cam.device, dtype=torch.float64)
              for n, m in zip(roi_size, cam.shape[1:], strict=True))
    inter = (cam * roi_weights.double()).sum(dim=(1, 2))
    sum_u = torch.einsum("bij,i,j->b", cam, cy, cx)
    area = roi_area.double()
    return (inter >= 0) & (inter <= torch.minimum(sum_u, area) + _core.DICE_SUMS_TOLERANCE * (sum_u + area))


@functools.lru_cache(maxsize=64)
def upsampled_mass(out_size: int, in_size: int) -> np.ndarray:
    """R^T 1 [in_size]: how much of the upsampled map each low-resolution cell makes (read-only)."""
    from .roi import interpolation_operator

    mass = interpolation_operator(out_size, in_size).sum(0)
    mass.flags.writeable = False
    return mass


def checked_masks(M):
    """Masks [B, H, W] as float32, once every value is in [0, 1] (NaN is not; a bool view of bytes other than
    0/1 is refused as the fused scorer refuses it); the fused scorers' error otherwise."""
    torch = _torch()
    bad = M.view(torch.uint8) > 1 if M.dtype == torch.bool else ~((M >= 0) & (M <= 1))
    if bool(bad.any()):
        first = int(bad.flatten(1).any(dim=1).nonzero()[0])
        raise bad_mask_error(first, str(M.dtype).removeprefix("torch."))
    return M.to(torch.float32)


def project_roi(masks=None, *, boxes=None, roi_size=None, cam_size):
    """Reference projection R_y^T M R_x, for tests and for torch-side caching."""
    torch = _torch()
    if (masks is None) == (boxes is None):
        raise ValueError("give exactly one of masks / boxes")
    if masks is not None:
        M = checked_masks(as_tensor(masks, "masks"))
    else:
        M = rasterise_boxes(as_tensor(boxes, "boxes").to(torch.float32), roi_size)
    H, W = M.shape[1:]
    h, w = cam_size
    from .roi import interpolation_operator

    Ry = torch.from_numpy(interpolation_operator(H, h)).to(M.device, torch.float32)
    Rx = torch.from_numpy(interpolation_operator(W, w)).to(M.device, torch.float32)
    weights = torch.einsum("yi,byx,xj->bij", Ry, M, Rx)
    return ProjectedROI(weights.contiguous(), M.sum(dim=(1, 2)), (H, W))


def score_batch(
    activations,
    logits,
    masks=None,
    *,
    gradients=None,
    weights=None,
    boxes=None,
    roi_size=None,
    roi: ProjectedROI | None = None,
    alpha: float = DEFAULT_ALPHA,
    return_cam: bool = False,
    backend: str = "reference",
) -> ScoreResult:
    """Score one batch exactly as docs/scoring.md defines it (see `egal.score_batch`)."""
    require_array(activations, "activations")
    require_array(logits, "logits")
    torch = _torch()
    F = torch.nn.functional
    A = as_tensor(activations, "activations")
    Z = as_tensor(logits, "logits")
    G = as_tensor(gradients, "gradients")
    Wt = as_tensor(weights, "weights")
    M = as_tensor(masks, "masks")
    Bx = as_tensor(boxes, "boxes")
    roi_w = as_tensor(roi.weights, "roi.weights") if roi is not None else None
    roi_a = as_tensor(roi.area, "roi.area") if roi is not None else None
    plan = check_score_inputs(
        spec_of(A), spec_of(Z), gradients=spec_of(G), weights=spec_of(Wt), masks=spec_of(M),
        boxes=spec_of(Bx), roi_weights=spec_of(roi_w), roi_area=spec_of(roi_a),
        roi_size=roi_size_of(roi, roi_size), alpha=alpha,
    )

    A = A.float()
    channel_weights = Wt.float() if Wt is not None else gradient_means(G)
    raw = torch.einsum("bk,bkhw->bhw", channel_weights, A)
    finite = torch.isfinite(raw).all(dim=(1, 2)) & torch.isfinite(channel_weights).all(dim=1)
    cam = normalise_cam(raw)

    if plan.roi_kind == "projected":
        sum_m = roi_a.float()
        bad = ~((roi_w >= 0) & (roi_w <= torch.finfo(torch.float32).max)).flatten(1).all(dim=1)
        bad |= ~((sum_m >= 0) & (sum_m <= torch.finfo(torch.float32).max))  # NaN fails both
        bad |= finite & ~dice_sums_consistent(cam, roi_w, sum_m, plan.roi_size)  # non-finite maps: no sums to judge
        if bool(bad.any()):
            raise bad_mask_error(int(bad.nonzero()[0]), None, projected=True)
        dice = projected_dice_distance(cam, roi_w, sum_m, plan.roi_size)
    else:
        if plan.roi_kind == "masks":
            M = checked_masks(M)
        else:
            M = rasterise_boxes(Bx, plan.roi_size)
        U = F.interpolate(cam[:, None], size=plan.roi_size, mode="bilinear", align_corners=False)[:, 0]
        inter = (U * M).sum(dim=(1, 2))
        sum_u = U.sum(dim=(1, 2))
        sum_m = M.sum(dim=(1, 2))
        dice = 1 - (2 * inter + DICE_EPS) / (sum_u + sum_m + DICE_EPS)
    empty = sum_m == 0
    dice = torch.where(empty | ~finite, torch.full_like(dice, math.nan), dice)

    Zf = Z.double()  # as docs/scoring.md's float64 definition: in float32, H_norm came out above 1 by rounding
    log_p = torch.log_softmax(Zf, dim=1)
    p = log_p.exp()
    entropy = -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=1)
    # -inf is a class of probability 0; NaN, +inf, or no class above -inf are bad input
    logits_ok = ~(Zf.isnan() | Zf.isposinf()).any(dim=1) & (Zf > -math.inf).any(dim=1)
    entropy = torch.where(logits_ok, entropy, torch.full_like(entropy, math.nan))
    entropy_norm = (entropy / math.log(plan.classes)).float()
    entropy = entropy.float()
    pred = torch.where(logits_ok, Zf.argmax(dim=1),
                       torch.full_like(Zf[:, 0], -1, dtype=torch.int64))

    score = plan.alpha * entropy_norm + (1 - plan.alpha) * dice
    score = torch.where(empty & finite, entropy_norm, score)

    def host(t):
        return t.detach().cpu().numpy()

    return ScoreResult(
        pred=host(pred).astype(np.int64),
        entropy=host(entropy),
        entropy_norm=host(entropy_norm),
        misalignment=host(dice),
        score=host(score),
        cam=host(torch.where(finite[:, None, None], cam, torch.full_like(cam, math.nan))) if return_cam else None,
    )
