"""ROIs for the Dice sums' consistency check (cpp/src/score_math.h, dice_sums_consistent), on the CPU
(test_roi_consistency.py) and the GPU (test_scorer_cuda.py): valid ROIs whose I meets min(SU, SM), which rounding
must never take for bad masks, and ProjectedROIs of finite weights >= 0 that no masks in [0, 1] give."""
import numpy as np
import torch

import egal
import scoring_f64
from egal import reference

# How roi_arguments passes a case's ROI: masks of a dtype, soft masks, boxes, or projected by either scorer
ROI_FORMS = ["uint8", "bool", "float16", "float32", "soft", "boxes", "projected", "reference-projected"]
TIGHT = ["ones", "inside-plateau", "ones-on-plateau"]  # tight_case's kinds


def tight_case(rng, B, h, w, H, W, kind, features="float32"):
    """Inputs [B, 1, h, w] with weights [B, 1], logits [B, 3], masks [B, H, W] and boxes [B, 2, 4] (the masks'
    pixels where they are boxes) whose I meets min(SU, SM): "ones", a mask of ones under a random map (I = SU);
    "inside-plateau", a map at 1 but in cell (0, 0) and a mask on the pixels that do not read that cell (I = SM);
    "ones-on-plateau", that map under a mask of ones."""
    plateau = kind != "ones"
    if plateau:
        A = np.full((B, 1, h, w), 100.0, np.float32)  # 100 / (100 + 1e-7) is 1 in float32: the map is exactly 1
        A[:, :, 0, 0] = 0
    else:
        A = np.abs(rng.standard_normal((B, 1, h, w))).astype(np.float32)
    A = torch.from_numpy(A).to(getattr(torch, features))
    lo_y, lo_x = scoring_f64._axis(H, h)[0], scoring_f64._axis(W, w)[0]
    masks = np.ones((B, H, W), np.float32)
    boxes = np.tile(np.array([[0, 0, W, H], [np.nan] * 4], np.float32), (B, 1, 1))
    if kind == "inside-plateau":
        masks[:, (lo_y == 0)[:, None] & (lo_x == 0)[None, :]] = 0
        x1, y1 = int((lo_x == 0).sum()), int((lo_y == 0).sum())  # the first column and row past cell (0, 0)
        boxes[:] = [[x1, 0, W, H], [0, y1, W, H]]
    return dict(activations=A, weights=np.ones((B, 1), np.float32),
                logits=rng.standard_normal((B, 3)).astype(np.float32), masks=masks, boxes=boxes)


def roi_arguments(case, form, rng, cam_size):
    """score_batch's ROI arguments for a tight_case, in one of ROI_FORMS (host arrays)."""
    masks = case["masks"]
    H, W = masks.shape[1:]
    if form == "soft":  # random values where the mask is 1, and 1 in the first sample
        soft = masks * rng.random(masks.shape, dtype=np.float32)
        soft[0] = masks[0]
        return {"masks": soft}
    if form == "boxes":
        return {"boxes": case["boxes"], "roi_size": (H, W)}
    if form == "projected":
        return {"roi": egal.project_roi(masks.astype(np.uint8), cam_size=cam_size)}
    if form == "reference-projected":
        return {"roi": reference.project_roi(torch.from_numpy(masks), cam_size=cam_size)}
    return {"masks": masks.astype(form)}


def has_plateau(h, w, H, W):
    """Whether some pixel of the H x W grid does not read the map's cell (0, 0): a mask for "inside-plateau"."""
    return h * w > 1 and (scoring_f64._axis(H, h)[0] > 0).any() | (scoring_f64._axis(W, w)[0] > 0).any()


def inconsistent_roi(rng, which):
    """Activations [4, 8, 7, 7] and a ProjectedROI of finite weights >= 0 whose sums no mask in [0, 1] gives in
    sample 2."""
    B, h, w, H, W = 4, 7, 7, 224, 224
    A = np.abs(rng.standard_normal((B, 8, h, w))).astype(np.float32)
    roi = egal.project_roi((rng.random((B, H, W)) < 0.3).astype(np.uint8), cam_size=(h, w))
    weights, area = roi.weights.copy(), roi.area.copy()
    if which == "weights ten times their area":  # I > SM
        weights[2] *= 10
    elif which == "an area a tenth of the weights":  # I > SM
        area[2] /= 10
    else:  # weights that sum to the area, all of it on the map's one cell above 0: I > SU
        A[2] = 0.01
        A[2, :, 3, 3] = 10
        weights[2] = 0
        weights[2, 3, 3] = area[2]
    return A, egal.ProjectedROI(weights, area, roi.roi_size)


INCONSISTENT = ["weights ten times their area", "an area a tenth of the weights", "the area on one cell"]
