"""Differentiable Grad-CAM and the soft Dice loss between it and the expert ROI.

The map is built exactly as docs/scoring.md defines it (channel weights = spatial mean
of d logit / d A, ReLU, min-max normalisation at low resolution with 1e-7,
bilinear upsampling with align_corners=False, soft Dice with eps 1e-6), but every
step stays in the autograd graph: the channel weights come from
torch.autograd.grad(..., create_graph=True), so the Dice term's gradient reaches
the backbone both through the activations and through the weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reference import DICE_EPS, NORM_EPS


def gradcam_of_class(activations, logits, classes):
    """Grad-CAM [B, h, w] (normalised to [0, 1], differentiable) of `classes` [B].

    activations: [B, K, h, w], the map the logits were computed from (it must be
    part of the graph that produced `logits`).
    logits: [B, C]. Samples do not interact through the head for a given set of
    prototypes/weights, so the gradient of the summed selected logits is each
    sample's own gradient.
    """
    selected = logits.gather(1, classes.long()[:, None]).sum()
    (gradients,) = torch.autograd.grad(selected, activations, create_graph=True)  # [B, K, h, w]
    weights = gradients.mean(dim=(2, 3))  # [B, K]
    cam = torch.einsum("bk,bkhw->bhw", weights, activations).clamp_min(0)  # [B, h, w]
    lo = cam.amin(dim=(1, 2), keepdim=True)
    hi = cam.amax(dim=(1, 2), keepdim=True)
    return (cam - lo) / (hi - lo + NORM_EPS)


def soft_dice_distance(cam, masks):
    """Per-sample 1 - soft Dice [B] between a low-resolution map [B, h, w] and ROIs [B, H, W].

    Samples with an empty ROI get NaN (docs/scoring.md's policy), so that callers
    must decide explicitly what to do with them.
    """
    masks = masks.to(cam.dtype)
    upsampled = F.interpolate(cam[:, None], size=masks.shape[1:], mode="bilinear",
                              align_corners=False)[:, 0]  # [B, H, W]
    intersection = (upsampled * masks).sum(dim=(1, 2))
    total = upsampled.sum(dim=(1, 2)) + masks.sum(dim=(1, 2))
    distance = 1 - (2 * intersection + DICE_EPS) / (total + DICE_EPS)
    empty = masks.sum(dim=(1, 2)) == 0
    return torch.where(empty, torch.full_like(distance, float("nan")), distance)


def gradcam_dice_loss(activations, logits, targets, masks):
    """Mean soft Dice distance between the true class's Grad-CAM and the ROI over rows with an ROI.

    Returns (loss, rows): a scalar tensor (0, still differentiable, when no row
    has an ROI) and the number of rows that contributed.
    """
    has_roi = masks.flatten(1).sum(dim=1) > 0  # [B]
    rows = int(has_roi.sum())
    if rows == 0:
        return activations.sum() * 0.0, 0
    cam = gradcam_of_class(activations, logits, targets)  # [B, h, w]
    distance = soft_dice_distance(cam[has_roi], masks[has_roi])  # [rows]
    return distance.mean(), rows
