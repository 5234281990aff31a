"""The scorer's inputs for a whole batch: activations, logits, and channel weights or gradients.

Two paths, both batched, both on the model's device:

* closed form (backward-free): when the target layer's output is exactly the
  map the classifier average-pools, the predicted class's Grad-CAM weights are
  (d logit / d pooled) / (h w), which the head computes in the forward pass
  (egal.models.heads). This is the default wherever it applies.
* autograd: one forward and one backward for the batch. The backward starts
  from the sum over samples of each sample's predicted-class logit; in eval
  mode samples do not interact, so sample b's gradient is exactly
  d logit_b[pred_b] / d A_b.

On a GPU both run in full float32: PyTorch lets cuDNN convolve float32 in TF32 (10 mantissa bits) by
default, and on an H100 that moved a pool's scores by up to 3e-4 against the CPU and reordered 62 of 512
rows; with TF32 off the difference was 1.8e-7 and no row moved (bench/README.md, "On a GPU").
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .._images import check_model_images
from ..models.classifier import EGALClassifier, check_target_layer
from ..reference import as_tensor
from .capture import capture_layer

METHODS = ("auto", "closed_form", "autograd")


@dataclass(frozen=True)
class GradCAMInputs:
    """What egal.score_batch needs, as detached tensors on the model's device."""

    activations: torch.Tensor  # [B, K, h, w] target-layer map
    logits: torch.Tensor  # [B, C]
    pred: torch.Tensor  # [B] int64, argmax of the logits
    weights: torch.Tensor | None = None  # [B, K] closed-form Grad-CAM weights, or
    gradients: torch.Tensor | None = None  # [B, K, h, w] d logit_pred / d activations
    method: str = "closed_form"  # which path produced them

    def channel_weights(self) -> torch.Tensor:  # [B, K]
        return self.weights if self.weights is not None else self.gradients.mean(dim=(2, 3))

    def scorer_kwargs(self) -> dict:
        kwargs = {"activations": self.activations, "logits": self.logits}
        if self.weights is not None:
            kwargs["weights"] = self.weights
        else:
            kwargs["gradients"] = self.gradients
        return kwargs


def closed_form_applies(model: EGALClassifier, target_layer: str | None = None) -> bool:
    """True when the target layer's output is exactly what the classifier pools."""
    return (target_layer or model.config.target_layer) in model.pooled_layer_names()


def extract_gradcam_inputs(model: EGALClassifier, images, *, target_layer: str | None = None,
                           method: str = "auto") -> GradCAMInputs:
    """Grad-CAM inputs for the predicted class of every image in the batch.

    images: [B, in_channels, H, W] in [0, 1] (torch tensor or numpy array); moved
    to the model's device and dtype. The model is run in eval mode (restored
    afterwards): BatchNorm with batch statistics would couple the samples.
    method: "auto" (closed form where it applies, else autograd),
    "closed_form" (error where it does not apply) or "autograd".
    """
    if not isinstance(model, EGALClassifier):
        raise TypeError("model must be an egal EGALClassifier (egal.models.build_model / load_model), got "
                        f"{type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    target_layer = target_layer or model.config.target_layer
    check_target_layer(model, target_layer)
    model.head.require_prototypes()
    exact = closed_form_applies(model, target_layer)
    if method == "closed_form" and not exact:
        raise ValueError(
            f"the closed-form Grad-CAM weights need the target layer's output to be exactly the pooled map "
            f"(one of {list(model.pooled_layer_names())}); {target_layer!r} is not: use method='autograd' or 'auto'"
        )
    images = _as_model_input(model, images)
    was_training = model.training
    model.eval()
    try:
        with full_float32(images.device):
            if method != "autograd" and exact:
                return _closed_form(model, images)
            return _autograd(model, images, target_layer)
    finally:
        model.train(was_training)


@contextlib.contextmanager
def full_float32(device: torch.device):
    """Float32 convolutions and matrix products without TF32 on a CUDA device, restored afterwards (the
    switches are process-wide: a thread training meanwhile would run without TF32 too).

    Through PyTorch's fp32_precision switches where it has them (2.9 and later): once anything in the
    process has used those, reading the older allow_tf32 flags raises."""
    if device.type != "cuda":
        yield
        return
    switches = _precision_switches()
    saved = [getattr(owner, name) for owner, name, _ in switches]
    for owner, name, exact in switches:
        setattr(owner, name, exact)
    try:
        yield
    finally:
        for (owner, name, _), value in zip(switches, saved, strict=True):
            setattr(owner, name, value)


def _precision_switches() -> list:
    """(object, attribute, its value for full float32) for cuDNN convolutions and CUDA matrix products."""
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        return [(cudnn_conv, "fp32_precision", "ieee"), (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    return [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]


@torch.no_grad()
def _closed_form(model: EGALClassifier, images) -> GradCAMInputs:
    return inputs_from_pooled_map(model, model.feature_map(images))


@torch.no_grad()
def inputs_from_pooled_map(model: EGALClassifier, activations) -> GradCAMInputs:
    """Closed-form Grad-CAM inputs from the map the classifier pools [B, K, h, w], however it was computed
    (the whole backbone, or a trainable tail over cached features)."""
    pooled = model.pool(activations)  # [B, K]
    logits = model.head(pooled)  # [B, C]
    pred = logits.argmax(dim=1)
    h, w = activations.shape[2:]
    weights = model.head.logit_gradient(pooled, pred) / (h * w)  # [B, K]
    return GradCAMInputs(activations, logits, pred, weights=weights, method="closed_form")


def _autograd(model: EGALClassifier, images, target_layer: str) -> GradCAMInputs:
    with torch.no_grad(), capture_layer(model, target_layer, grad_from_here=True) as capture:
        logits = model(images)  # [B, C]
        capture.check_single_call()
        if not logits.requires_grad:
            raise RuntimeError(
                f"the logits do not depend on target layer {target_layer!r} through autograd "
                "(does a module after it run under torch.no_grad()?)"
            )
        pred = logits.argmax(dim=1)
        selected = logits.gather(1, pred[:, None]).sum()
        (gradients,) = torch.autograd.grad(selected, capture.activations)
    return GradCAMInputs(capture.activations.detach(), logits.detach(), pred, gradients=gradients, method="autograd")


def _as_model_input(model: EGALClassifier, images):  # -> [B, in_channels, H, W] on the model's device
    reference = next(model.parameters())
    images = as_tensor(images, "images")
    check_model_images(images)
    return images.to(device=reference.device, dtype=reference.dtype)
