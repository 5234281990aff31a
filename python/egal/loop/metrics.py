"""Test-set metrics after each round: accuracy, macro one-vs-rest AUC, Grad-CAM / ROI Dice."""
from __future__ import annotations

import warnings

import numpy as np

from .scoring import score_in_batches


def evaluate(model, images, masks, labels, *, batch_size: int = 256) -> dict:
    """accuracy, auc (macro one-vs-rest over the classes present), dice (mean soft Dice
    coefficient between the predicted class's Grad-CAM and the ROI, over rows with an ROI:
    attention quality, higher is better)."""
    labels = np.asarray(labels)
    scores = score_in_batches(model, images, masks, alpha=0.5, batch_size=batch_size)
    accuracy = float((scores.pred == labels).mean()) if len(labels) else float("nan")
    dice = 1.0 - scores.misalignment
    return {
        "accuracy": accuracy,
        "auc": macro_ovr_auc(labels, scores.probs),
        "dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
    }


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
