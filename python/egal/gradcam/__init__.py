"""Batched Grad-CAM inputs for egal's scorer (needs PyTorch).

    from egal.gradcam import extract_gradcam_inputs, score_images
    result = score_images(model, images, masks)          # egal.ScoreResult
"""
from .capture import capture_layer
from .extract import METHODS, GradCAMInputs, closed_form_applies, extract_gradcam_inputs
from .score import score_images

__all__ = ["METHODS", "GradCAMInputs", "capture_layer", "closed_form_applies", "extract_gradcam_inputs",
           "score_images"]
