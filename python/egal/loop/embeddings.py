"""The selection embedding (EGALClassifier.selection_embedding) of many images, in batches, for the
diversity strategies (egal+kcenter, egal+cluster). A second pass beside egal.loop.scoring's: over cached
features it runs only the trainable tail, which costs little next to a round's training."""
from __future__ import annotations

import numpy as np
import torch

from ..models.split import split_features
from ..train.feature_cache import FeatureCache
from .scoring import INFERENCE_BATCH


@torch.no_grad()
def embed_in_batches(model, images, *, batch_size: int = INFERENCE_BATCH,
                     features: FeatureCache | None = None) -> np.ndarray:
    """[N, D] float32: images [N, C, H, W] in [0, 1], or (images None) the frozen prefix's cached outputs."""
    was_training = model.training
    model.eval()
    try:
        tail = None
        if features is not None:
            features.check_fits(model)
            _, tail = split_features(model, features.trainable_from)
        device = next(model.parameters()).device
        rows = len(features) if features is not None else len(images)
        parts = []
        for start in range(0, rows, batch_size):
            if tail is not None:
                maps = tail(features.identity()[start:start + batch_size].to(device, torch.float32))
            else:
                maps = model.feature_map(torch.as_tensor(images[start:start + batch_size]).to(device, torch.float32))
            parts.append(model.selection_embedding(maps).float().cpu().numpy())
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(parts)
    finally:
        model.train(was_training)
