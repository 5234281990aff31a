"""The frozen prefix's output, computed once per image and view, and reused by every training and scoring pass.

With a backbone frozen up to `trainable_from` (egal.models.split), the prefix's
output for an image never changes: not across epochs, rounds, strategies or
seeds, since the prefix keeps its pretrained weights. Caching it turns each
training step and each scoring pass into a run of the trainable tail only.

Augmentation can then only use views that were cached: the image as it is
("identity", view 0, the one scoring and evaluation use) and its horizontal
mirror ("hflip"), whose ROI is the mirrored mask.

Features are kept in memory as float16 by default (the size is logged); with
`cache_dir` they are also written to disk, one file per prefix and view keyed
by a hash of each image's pixels, so later runs (and other experiments on the
same images, such as the shortcut benchmark's marked copies) compute only the
images they have not seen.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .._atomic import replaced_atomically
from ..models.split import freeze_prefix, split_features

VIEWS = ("identity", "hflip")
log = logging.getLogger("egal.train")


@dataclass
class FeatureCache:
    features: torch.Tensor  # [V, N, K, h, w] the frozen prefix's output for each view of each image
    views: tuple[str, ...]  # names of the V views; views[0] is "identity"
    trainable_from: str  # the cut that produced them (egal.models.split)
    fingerprint: str  # prefix weights + input settings: a cache only fits a model with the same prefix

    def __len__(self) -> int:
        return self.features.shape[1]

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()

    def subset(self, rows) -> FeatureCache:
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return FeatureCache(self.features[:, rows], self.views, self.trainable_from, self.fingerprint)

    def identity(self) -> torch.Tensor:  # [N, K, h, w]
        return self.features[0]

    def check_fits(self, model) -> None:
        expected = prefix_fingerprint(model, self.trainable_from)
        if expected != self.fingerprint:
            raise ValueError(
                "this feature cache was computed with another frozen prefix (other weights, input size, channels "
                f"or cut than {self.trainable_from!r} of this model): rebuild it with build_feature_cache"
            )


def prefix_fingerprint(model, trainable_from: str) -> str:
    """Hash of everything that determines the prefix's output: its weights, buffers and the input settings."""
    prefix, _ = split_features(model, trainable_from)
    h = hashlib.blake2b(digest_size=16)
    c = model.config
    h.update(repr((c.architecture, tuple(c.input_size), c.in_channels, tuple(c.mean), tuple(c.std),
                   trainable_from)).encode())
    for name, tensor in prefix.layers.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_feature_cache(model, images, trainable_from: str, *, views: Sequence[str] = VIEWS, batch_size: int = 32,
                        dtype: torch.dtype = torch.float16, cache_dir: str | None = None,
                        progress: Callable[[int, int], None] | None = None) -> FeatureCache:
    """Run the frozen prefix of `model` over every view of `images` [N, C, H, W] (float in [0, 1]).

    progress(done, total) is called after every batch of newly computed images.
    """
    views = tuple(views)
    if not views or views[0] != "identity" or any(v not in VIEWS for v in views) or len(set(views)) != len(views):
        raise ValueError(f"views must start with 'identity' and be distinct names from {VIEWS}, got {views}")
    prefix, _ = split_features(model, trainable_from)
    freeze_prefix(prefix)
    fingerprint = prefix_fingerprint(model, trainable_from)
    images = torch.as_tensor(images)
    n = images.shape[0]
    hashes = _row_hashes(images) if cache_dir else None
    per_view, todo = [], []
    for view in views:
        stored = _load(cache_dir, fingerprint, view) if cache_dir else {}
        missing = [i for i in range(n) if hashes is None or hashes[i] not in stored]
        per_view.append((view, stored, missing))
        todo.append(len(missing))
    total, done = sum(todo), 0
    device = next(model.parameters()).device
    out = None
    for v, (view, stored, missing) in enumerate(per_view):
        computed = {}
        for start in range(0, len(missing), batch_size):
            rows = missing[start:start + batch_size]
            batch = images[rows].to(device=device, dtype=torch.float32)
            if view == "hflip":
                batch = batch.flip(-1)
            with torch.no_grad():
                z = prefix(batch).to(dtype).cpu()  # [b, K, h, w]
            for i, row in enumerate(rows):
                computed[row] = z[i]
            done += len(rows)
            if progress is not None:
                progress(done, total)
        if out is None:
            sample = next(iter(computed.values())) if computed else torch.as_tensor(next(iter(stored.values())))
            out = torch.empty((len(views), n, *sample.shape), dtype=dtype)
        for i in range(n):
            out[v, i] = computed[i] if i in computed else torch.as_tensor(stored[hashes[i]]).to(dtype)
        if cache_dir and computed:
            stored.update({hashes[i]: computed[i].numpy() for i in computed})
            _save(cache_dir, fingerprint, view, stored)
    if out is None:
        raise ValueError("build_feature_cache() got no images")
    cache = FeatureCache(out, views, trainable_from, fingerprint)
    log.info("feature cache: %d image(s) x %d view(s) of %s, %.1f MiB (%s)", n, len(views),
             tuple(out.shape[2:]), cache.nbytes / 2**20, str(dtype).replace("torch.", ""))
    return cache


def _row_hashes(images) -> list:
    flat = images.detach().cpu().contiguous().numpy().reshape(images.shape[0], -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in flat]


def _path(cache_dir, fingerprint, view) -> str:
    return os.path.join(cache_dir, f"features-{fingerprint[:20]}-{view}.npz")


def _load(cache_dir, fingerprint, view) -> dict:
    path = _path(cache_dir, fingerprint, view)
    if not os.path.isfile(path):
        return {}
    with np.load(path, allow_pickle=False) as z:
        return dict(zip(z["hashes"].tolist(), z["features"], strict=True))


def _save(cache_dir, fingerprint, view, stored: dict) -> None:
    os.makedirs(cache_dir, exist_ok=True)
    path = _path(cache_dir, fingerprint, view)
    keys = sorted(stored)
    with replaced_atomically(path, ".npz") as tmp:
        np.savez(tmp, hashes=np.array(keys), features=np.stack([np.asarray(stored[k]) for k in keys]))
