"""Differentiable Grad-CAM and the soft Dice loss between it and the expert ROI.

The map is built exactly as docs/scoring.md defines it (channel weights = spatial mean
of d logit / d A, ReLU, min-max normalisation at low resolution with 1e-7,
bilinear upsampling with align_corners=False, soft Dice with eps 1e-6), and every
step stays in the autograd graph, so the Dice term's gradient reaches the backbone
both through the activations and through the channel weights.

Two equivalent forms, as in scoring:
* `gradcam_of_class` + `soft_dice_distance`: weights from torch.autograd.grad(...,
  create_graph=True) and the map upsampled to the ROI's resolution. Any head; the
  definition the tests hold the trainer to.
* `gradcam_dice_loss`, what the trainer runs: channel weights given in closed form
  (the head's d logit / d pooled over h w, differentiable) and the ROI projected onto
  the CAM grid once (egal.roi), so a step never builds an H x W map or a second
  backward graph through the pooling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reference import DICE_EPS, normalise_cam, project_roi, projected_dice_distance


def gradcam_of_class(activations, logits, classes):
    """Grad-CAM [B, h, w] (normalised to [0, 1], differentiable) of `classes` [B], weights by autograd.

    activations: [B, K, h, w], the map the logits were computed from (it must be
    part of the graph that produced `logits`).
    logits: [B, C]. Samples do not interact through the head for a given set of
    prototypes/weights, so the gradient of the summed selected logits is each
    sample's own gradient.
    """
    selected = logits.gather(1, classes.long()[:, None]).sum()
    (gradients,) = torch.autograd.grad(selected, activations, create_graph=True)  # [B, K, h, w]
    return gradcam_from_weights(activations, gradients.mean(dim=(2, 3)))


def gradcam_from_weights(activations, channel_weights):
    """Normalised Grad-CAM [B, h, w] of activations [B, K, h, w] with channel weights [B, K]."""
    return normalise_cam(torch.einsum("bk,bkhw->bhw", channel_weights, activations))


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


def project_masks(masks, cam_size):
    """ROIs [B, H, W] (0/1 or soft) projected onto the CAM grid: (weights [B, h, w], area [B]), float32 on
    the masks' device, ready for `gradcam_dice_loss`."""
    projected = project_roi(masks, cam_size=tuple(cam_size))
    return projected.weights, projected.area


def gradcam_dice_loss(activations, channel_weights, roi_weights, roi_area, roi_size):
    """Mean soft Dice distance between Grad-CAM and the ROI over the rows that have an ROI.

    activations: [B, K, h, w]; channel_weights: [B, K], the true class's d logit / d A
    averaged over space (differentiable); roi_weights [B, h, w] and roi_area [B]: the
    ROIs projected onto the grid (project_masks), of size roi_size (H, W).
    Returns (loss, rows): a scalar tensor (0, still differentiable, when no row
    has an ROI) and the number of rows that contributed.
    """
    if tuple(roi_weights.shape[1:]) != tuple(activations.shape[2:]):
        raise ValueError(f"the ROIs were projected onto a {tuple(roi_weights.shape[1:])} grid, the Grad-CAM is "
                         f"{tuple(activations.shape[2:])}")
    has_roi = roi_area > 0  # [B]
    rows = int(has_roi.sum())
    if rows == 0:
        return activations.sum() * 0.0, 0
    cam = gradcam_from_weights(activations[has_roi], channel_weights[has_roi])  # [rows, h, w]
    distance = projected_dice_distance(cam, roi_weights[has_roi], roi_area[has_roi], roi_size)  # [rows]
    return distance.mean(), rows
