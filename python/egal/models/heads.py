"""Classification heads on the globally average-pooled feature vector f [B, K].

Each head also gives, in closed form, the gradient of its predicted-class logit
with respect to f. Because f is the spatial mean of the target-layer map A
[B, K, h, w], d logit / d A_kij = (d logit / d f_k) / (h w) at every (i, j), so
that gradient divided by h*w *is* the Grad-CAM channel weight of the predicted
class: no backward pass is needed (see egal.gradcam).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import EgalError


class LinearHead(nn.Module):
    """logits = W f + b."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, pooled):  # [B, K] -> [B, C]
        return self.fc(pooled)

    def logit_gradient(self, pooled, pred):  # [B, K], [B] -> [B, K]
        """d logit_pred / d f: the predicted class's weight row."""
        return self.fc.weight[pred]

    def require_prototypes(self) -> None:
        """A linear head is always ready."""

    unchecked_logits = forward
    unchecked_logit_gradient = logit_gradient


class PrototypicalHead(nn.Module):
    """Prototypes p_c (the class means of labelled embeddings e = E f + e0) and logits_c = -||e - p_c||^2,
    whose gradient is that of 2 e.p_c - ||p_c||^2.

    -||e - p_c||^2 = 2 e.p_c - ||p_c||^2 - ||e||^2, and the last term is the same for every class: the
    logits carry it as a constant (its value, no gradient). Nothing the softmax sees changes, so the
    probabilities, predictions, entropy and cross-entropy gradients are the prototypical network's (the
    linear model that Snell et al., 2017, show it to be). Grad-CAM changes: with the term's gradient,
    -2 E^T e, in every class's weights, a pull that grows with the image's own embedding, sum_k w_k A_k fell
    below zero and Grad-CAM's ReLU left an all-zero map for most images (measured on Figshare validation
    rows: scripts/cam_liveness.py, docs/experiments.md). The value is computed from e - p_c, which keeps
    float32's precision where the expanded form would cancel.

    The embedding is a single linear layer so that the closed-form Grad-CAM weights hold.
    Prototypes live in a buffer (saved with the model); they are NaN until
    `set_prototypes` has been called, and a forward pass refuses NaN prototypes.
    """

    def __init__(self, num_features: int, num_classes: int, embedding_dim: int):
        super().__init__()
        self.embedding = nn.Linear(num_features, embedding_dim)
        self.register_buffer("prototypes", torch.full((num_classes, embedding_dim), float("nan")))

    @property
    def has_prototypes(self) -> bool:
        return bool(torch.isfinite(self.prototypes).all())

    def embed(self, pooled):  # [B, K] -> [B, D]
        return self.embedding(pooled)

    def forward(self, pooled):  # [B, K] -> [B, C]
        self.require_prototypes()
        return self.unchecked_logits(pooled)

    def logit_gradient(self, pooled, pred):  # [B, K], [B] -> [B, K]
        """d logit_pred / d f = 2 E^T p_pred (||e||^2 is a constant of the logits)."""
        self.require_prototypes()
        return self.unchecked_logit_gradient(pooled, pred)

    # The unchecked forms carry no data-dependent Python branch, so graph capture
    # (ONNX export) can trace them; callers check the prototypes once beforehand.
    def unchecked_logits(self, pooled):  # [B, K] -> [B, C]
        return self.logits_against(self.embed(pooled), self.prototypes)

    def unchecked_logit_gradient(self, pooled, pred):  # [B, K], [B] -> [B, K]
        return self.logit_gradient_against(self.embed(pooled), self.prototypes, pred)

    # Against any prototypes: the stored ones, or a training episode's (its support rows' class means).
    @staticmethod
    def logits_against(embeddings, prototypes):  # [B, D], [C, D] -> [B, C]
        diff = embeddings[:, None, :] - prototypes[None, :, :]  # [B, C, D]
        # |e|^2 - detached |e|^2 is 0 in value and adds 2 e to the gradient: 2 p in all, as in the closed form.
        norm = (embeddings * embeddings).sum(dim=-1, keepdim=True)  # [B, 1]
        return -(diff * diff).sum(dim=-1) + (norm - norm.detach())

    def logit_gradient_against(self, embeddings, prototypes, classes):  # [B, D], [C, D], [B] -> [B, K]
        """d logit_class / d f = 2 E^T p_class; differentiable, so training can use it as Grad-CAM weights."""
        return 2.0 * prototypes[classes] @ self.embedding.weight  # [B, D] @ [D, K]

    @torch.no_grad()
    def set_prototypes(self, embeddings, labels) -> None:
        """Prototypes = per-class mean of labelled embeddings [N, D] with labels [N] in [0, C)."""
        embeddings = torch.as_tensor(embeddings, dtype=self.prototypes.dtype, device=self.prototypes.device)
        labels = torch.as_tensor(labels, device=self.prototypes.device).long()
        C, D = self.prototypes.shape
        if embeddings.ndim != 2 or embeddings.shape[1] != D:
            raise ValueError(f"embeddings must be [N, {D}], got {tuple(embeddings.shape)}")
        if labels.shape != (embeddings.shape[0],):
            raise ValueError(f"labels must be [N] = [{embeddings.shape[0]}], got {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= C):
            raise ValueError(f"labels must lie in [0, {C}), got values in [{int(labels.min())}, {int(labels.max())}]")
        counts = torch.bincount(labels, minlength=C)
        if bool((counts == 0).any()):
            empty = (counts == 0).nonzero().flatten().tolist()
            raise EgalError("every class needs at least one labelled sample to form its prototype; none for class(es) "
                            f"{empty}")
        sums = torch.zeros_like(self.prototypes).index_add_(0, labels, embeddings)
        self.prototypes.copy_(sums / counts[:, None].to(sums.dtype))

    def require_prototypes(self) -> None:
        if not self.has_prototypes:
            raise RuntimeError(
                "the prototypical head has no prototypes yet: call model.fit_prototypes(images, labels) "
                "on labelled data first (they are saved with the model)"
            )


def build_head(kind: str, num_features: int, num_classes: int, embedding_dim=None) -> nn.Module:
    if kind == "linear":
        return LinearHead(num_features, num_classes)
    if kind == "prototypical":
        return PrototypicalHead(num_features, num_classes, embedding_dim)
    raise EgalError(f"unknown head {kind!r}")
