"""Test-set metrics after each round: accuracy, macro one-vs-rest AUC, Grad-CAM / ROI Dice."""
from __future__ import annotations

import warnings

import numpy as np

from .scoring import INFERENCE_BATCH, score_in_batches


def evaluate(model, images, masks, labels, *, batch_size: int = INFERENCE_BATCH, features=None,
             with_predictions: bool = False) -> dict:
    """accuracy, auc (macro one-vs-rest over the classes present), dice (mean soft Dice
    coefficient between the predicted class's Grad-CAM and the ROI, over rows with an ROI:
    attention quality, higher is better); and "pred" [N] when with_predictions.

    features: the frozen prefix's cached outputs for these rows (images may then be None)."""
    labels = np.asarray(labels)
    scores = score_in_batches(model, images, masks, alpha=0.5, batch_size=batch_size, features=features)
    accuracy = float((scores.pred == labels).mean()) if len(labels) else float("nan")
    dice = 1.0 - scores.misalignment
    out = {
        "accuracy": accuracy,
        "auc": macro_ovr_auc(labels, scores.probs),
        "dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
    }
    if with_predictions:
        out["pred"] = scores.pred
    return out


def roi_cam_dice(masks, cam_size) -> float:
    """The Dice a Grad-CAM of `cam_size` (h, w) can reach: mean over rows with an ROI of the soft Dice
    between each ROI [N, H, W] and the ROI itself area-averaged onto the h x w grid, then normalised and
    upsampled exactly as docs/scoring.md treats a CAM (the fused scorer does those steps). A reference
    point for the Grad-CAM Dice figures, not a strict upper bound."""
    import torch

    import egal

    m = torch.as_tensor(np.asarray(masks)).float()  # [N, H, W]
    keep = m.flatten(1).sum(1) > 0
    m = m[keep]
    if len(m) == 0:
        return float("nan")
    projected = torch.nn.functional.adaptive_avg_pool2d(m[:, None], cam_size)  # [N, 1, h, w]
    logits = np.zeros((len(m), 2), np.float32)
    weights = np.ones((len(m), 1), np.float32)
    result = egal.score_batch(projected.numpy(), logits, m.numpy(), weights=weights, alpha=0.0)
    return float(np.mean(1.0 - result.misalignment))


def macro_ovr_auc(labels, probs) -> float:
    """Macro average of one-vs-rest ROC AUCs over the classes present in `labels` (NaN if < 2)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    present = np.unique(labels)
    if present.size < 2:
        return float("nan")
    aucs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in present:
            aucs.append(roc_auc_score(labels == c, probs[:, c]))
    return float(np.mean(aucs))
