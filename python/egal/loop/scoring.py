"""Run a trained model over many images in batches: the fused scorer's outputs plus class probabilities."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..api import score_batch
from ..gradcam import extract_gradcam_inputs
from ..gradcam.extract import full_float32, inputs_from_pooled_map
from ..models.split import split_features
from ..train.feature_cache import FeatureCache

# Rows per forward pass when scoring, evaluating or embedding many rows (LoopConfig.score_batch_size's default too):
# 64 keeps a batch's activations in the CPU's cache (2,400 rows through EfficientNet-Lite0's last block: 5.2 s at 64,
# 7.4-8.9 s at 256; same scores).
INFERENCE_BATCH = 64


@dataclass(frozen=True)
class ModelScores:
    score: np.ndarray  # [N] S = alpha * H_norm + (1 - alpha) * D
    entropy_norm: np.ndarray  # [N]
    misalignment: np.ndarray  # [N] soft Dice distance D (NaN: empty ROI)
    pred: np.ndarray  # [N] int64
    probs: np.ndarray  # [N, C] softmax of the logits
    cam: np.ndarray | None = None  # [N, h, w] normalised Grad-CAM of the predicted class, if asked


def score_in_batches(model, images, masks, *, alpha: float, batch_size: int = INFERENCE_BATCH,
                     features: FeatureCache | None = None, return_cam: bool = False) -> ModelScores:
    """Grad-CAM inputs for every image (extract_gradcam_inputs) scored by egal.score_batch.

    images: [N, C, H, W] float in [0, 1]; masks: [N, H', W'] 0/1.
    features: the frozen prefix's cached outputs for these rows (images may then
    be None): only the trainable tail runs, and the results equal the full model's.
    return_cam: also keep each row's normalised Grad-CAM map (egal.score_batch's return_cam).
    """
    tail = None
    if features is not None:
        features.check_fits(model)
        model.eval()
        _, tail = split_features(model, features.trainable_from)
    outputs = ("score", "entropy_norm", "misalignment", "pred") + (("cam",) if return_cam else ())
    parts = {k: [] for k in outputs + ("probs",)}
    device = next(model.parameters()).device
    for start in range(0, len(masks), batch_size):
        if tail is not None:
            with torch.no_grad(), full_float32(device):
                maps = tail(features.identity()[start:start + batch_size].to(device, torch.float32))  # [B, K, h, w]
                inputs = inputs_from_pooled_map(model, maps)
        else:
            inputs = extract_gradcam_inputs(model, torch.as_tensor(images[start:start + batch_size]))  # [B, C, H, W]
        # The scorer never moves data between devices: the ROIs go to where the activations are.
        roi = torch.as_tensor(np.ascontiguousarray(masks[start:start + batch_size]))  # [B, H, W]
        roi = roi.to(inputs.activations.device)
        result = score_batch(**inputs.scorer_kwargs(), masks=roi, alpha=alpha, return_cam=return_cam)
        for name in outputs:
            parts[name].append(getattr(result, name))
        parts["probs"].append(torch.softmax(inputs.logits.float(), dim=1).cpu().numpy())
    if not parts["score"]:
        C = model.config.num_classes
        return ModelScores(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                           np.zeros(0, np.int64), np.zeros((0, C), np.float32))
    return ModelScores(**{k: np.concatenate(v) for k, v in parts.items()})
