"""Grad-CAM scoring of a batch of images in one call: extraction, then the fused scorer."""
from __future__ import annotations

from ..api import score_batch
from ..combine import DEFAULT_ALPHA
from ..models.classifier import EGALClassifier
from .extract import extract_gradcam_inputs


def score_images(model: EGALClassifier, images, masks=None, *, boxes=None, roi_size=None, roi=None,
                 alpha: float = DEFAULT_ALPHA, target_layer: str | None = None, method: str = "auto",
                 return_cam: bool = False):
    """EG-AL scores (egal.ScoreResult) of images [B, in_channels, H, W] in [0, 1].

    The ROI is given as for egal.score_batch (masks [B, H, W], or boxes with
    roi_size, or a ProjectedROI). Activations, logits and weights/gradients stay
    on the model's device and go to egal.score_batch without a host copy.
    """
    inputs = extract_gradcam_inputs(model, images, target_layer=target_layer, method=method)
    return score_batch(**inputs.scorer_kwargs(), masks=masks, boxes=boxes, roi_size=roi_size, roi=roi,
                       alpha=alpha, return_cam=return_cam)
