"""Train an egal classifier on labelled images with ROIs: cross-entropy + beta * Grad-CAM soft Dice.

Prototypical head: N-way K-shot episodes (prototypes from the episode's support
rows, loss on its query rows), then the model's stored prototypes are fitted to
all labelled rows. Linear head: plain shuffled mini-batches. In both, the Dice
term compares the differentiable Grad-CAM of the *true* class with the ROI and
skips rows whose ROI is empty.

With config.trainable_from the backbone is frozen before that module: the
frozen prefix runs once per image and view (egal.train.feature_cache, or a
cache the caller built for a whole experiment) and every step runs only the
trainable tail, which still ends in the Grad-CAM target layer, so the Dice
term trains the layers that make the map. Augmentation is then the choice of
a cached view per row (the image or its mirror, with its mirrored ROI).

Deterministic given config.seed: weights are initialised after
torch.manual_seed(seed), batches/episodes come from numpy's Generator(seed),
augmentation from a torch.Generator seeded from it.
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .._images import check_model_images
from ..errors import EgalError
from ..gradcam.extract import closed_form_applies
from ..models import EGALClassifier, build_model
from ..models.split import freeze_prefix, split_features
from .augment import augment_pair
from .config import TrainConfig
from .episodes import episodes_per_epoch, sample_episode
from .feature_cache import VIEWS, FeatureCache, build_feature_cache
from .losses import gradcam_dice_loss, project_masks


@dataclass
class TrainHistory:
    epoch_loss: list = field(default_factory=list)  # mean total loss per epoch
    epoch_ce: list = field(default_factory=list)
    epoch_dice: list = field(default_factory=list)  # mean Dice distance (NaN when no row had an ROI)
    seconds: float = 0.0
    images: int = 0  # images through the training steps (each episode's support and query), for images/s


def new_model(config: TrainConfig, classes: Sequence[str]) -> EGALClassifier:
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise EgalError(f"device {config.device!r} (--device): PyTorch sees no CUDA GPU on this machine")
    torch.manual_seed(config.seed)
    model = build_model(config.architecture, config.head, classes, weights=config.weights,
                        input_size=config.input_size, in_channels=config.in_channels,
                        embedding_dim=config.embedding_dim)
    if not closed_form_applies(model):  # the trainer takes Grad-CAM of the pooled map
        raise EgalError(f"training needs the target layer to be the pooled map, got {model.config.target_layer!r}")
    if config.trainable_from is not None:
        split_features(model, config.trainable_from)  # a clear error for a name that is not a cut point
        model.config.extra["trainable_from"] = config.trainable_from
    if min(config.input_size) < SMALL_INPUT:
        _check_input_fits(model, config)
    return model.to(config.device)


SMALL_INPUT = 64  # below this many pixels a side, a backbone may shrink the image to nothing: tried first


def _check_input_fits(model, config: TrainConfig) -> None:
    """EgalError, not a convolution's traceback after the pool is decoded, when the input is too small."""
    with torch.no_grad():
        try:
            model.eval().feature_map(torch.zeros(1, config.in_channels, *config.input_size))
        except RuntimeError as exc:
            raise EgalError(f"input size {config.input_size[0]}x{config.input_size[1]} (--input-size) is too small "
                            f"for {config.architecture}: {str(exc).splitlines()[0]}") from None
        finally:
            model.train()


def cached_views(config: TrainConfig) -> tuple:
    """The views a feature cache needs for this training: the mirror only when augmentation flips."""
    flips = config.augment and config.augment_settings.hflip
    return VIEWS if flips else VIEWS[:1]


def train_model(images, masks, labels, classes: Sequence[str], config: TrainConfig, *,
                features: FeatureCache | None = None,
                progress: Callable[[int, dict], None] | None = None) -> tuple:
    """Train a fresh model; returns (model in eval mode, TrainHistory).

    images: [N, C, H, W] float in [0, 1]; masks: [N, H, W] 0/1 (an all-zero mask
    is "no ROI"); labels: [N] int class indices into `classes`.
    features: with config.trainable_from, the frozen prefix's outputs for these
    N rows (build_feature_cache; images may then be None); built here when not given.
    progress(epoch, {"loss", "ce", "dice"}) is called after every epoch.
    """
    model = new_model(config, classes)
    tail = None
    if config.trainable_from is not None:
        prefix, tail = split_features(model, config.trainable_from)
        freeze_prefix(prefix)
        if features is None:
            if images is None:
                raise ValueError("train_model() needs images or a feature cache")
            features = build_feature_cache(model, images, config.trainable_from, views=cached_views(config))
        features.check_fits(model)
        if features.views[:len(cached_views(config))] != cached_views(config):
            raise ValueError(f"the feature cache holds views {features.views}; this training needs "
                             f"{cached_views(config)}")
        images = features
    elif features is not None:
        raise ValueError("a feature cache was given but config.trainable_from is None (nothing is frozen)")
    images, masks, labels = _check_data(images, masks, labels, classes, config)
    if tail is None:  # copied once to where the model runs (a GPU): each episode then indexes it there
        images, masks = images.to(config.device), masks.to(config.device)
    rois = _TrainingRois(masks, len(cached_views(config)) if tail is not None else 1, config.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * _steps_per_epoch(len(labels), config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    history, start = TrainHistory(), time.perf_counter()
    _train_mode(model, config)
    for epoch in range(config.epochs):
        totals = []
        for batch in _epoch_batches(labels, config, rng):
            parts = _step(model, tail, images, rois, labels, batch, config, generator)
            history.images += len(batch[0]) + len(batch[2]) if config.head == "prototypical" else len(batch)
            optimiser.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimiser.step()
            scheduler.step()
            totals.append({k: float(v.detach()) for k, v in parts.items()})
        summary = {k: _nanmean([t[k] for t in totals]) for k in ("loss", "ce", "dice")}
        if not totals:
            raise EgalError(f"epoch {epoch + 1} ran no training step ({len(labels)} rows): nothing was trained")
        broken = next((t["loss"] for t in totals if not math.isfinite(t["loss"])), None)
        if broken is not None:  # one such step leaves NaN weights: said now, not as a written model of NaNs
            raise EgalError(f"training diverged: a step of epoch {epoch + 1} has the loss {broken} "
                            f"({_divergence_suspects(config)}); no model is kept")
        history.epoch_loss.append(summary["loss"])
        history.epoch_ce.append(summary["ce"])
        history.epoch_dice.append(summary["dice"])
        if progress is not None:
            progress(epoch, summary)
    if config.head == "prototypical":
        if tail is None:
            model.fit_prototypes(images, labels)
        else:
            _fit_prototypes_from_features(model, tail, images, labels, config)
    _check_trained_model(model, tail, images, config)
    history.seconds = time.perf_counter() - start
    return model.eval(), history


@torch.no_grad()
def _check_trained_model(model, tail, images, config) -> None:
    """No loss sees the last step's update: weights, or logits on a few training rows, that are not finite after
    it are a divergence too (a model of finite 1e30 weights gives NaN logits, and was written)."""
    model.eval()
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    broken = next((f"the weights {name}" for name, t in tensors if t.is_floating_point() and not t.isfinite().all()),
                  None)
    if broken is None:
        if tail is not None:
            logits = model.head(model.pool(tail(images.identity()[:8].to(config.device, torch.float32))))
        else:
            logits = model(images[:8].to(config.device, torch.float32))
        broken = None if logits.isfinite().all() else "its logits on training rows"
    if broken is not None:
        raise EgalError(f"training diverged: after the last step, {broken} are not finite "
                        f"({_divergence_suspects(config)}); no model is kept")


def _divergence_suspects(config) -> str:
    return f"lr {config.lr} or beta {config.beta} too high?"


def _train_mode(model, config) -> None:
    model.train()
    if config.trainable_from is not None:
        freeze_prefix(split_features(model, config.trainable_from)[0])


def _step(model, tail, images, rois, labels, batch, config, generator) -> dict:
    if config.head == "prototypical":
        support, support_y, query, query_y = batch
        rows = np.concatenate([support, query])
    else:
        rows, query_y = batch, labels[batch]
    if tail is not None:
        x, view = _cached_view_batch(images, rows, config, generator)  # [B, K', h', w'], [B]
        with _autocast(config):
            activations = tail(_memory_format(x, config))  # [B, K, h, w]
        roi_weights, roi_area = rois.of_views(rows, view, activations.shape[2:])  # [B, h, w], [B]
    else:
        x = images[rows].to(config.device)  # [B, C, H, W]
        m = rois.masks[rows].to(config.device)  # [B, H, W]
        if config.augment:
            x, m = augment_pair(x, m, generator, config.augment_settings)
        with _autocast(config):
            activations = model.feature_map(_memory_format(x, config))  # [B, K, h, w]
        roi_weights, roi_area = project_masks(m, activations.shape[2:])  # [B, h, w], [B]
    # The head, the loss and the Grad-CAM Dice in float32 whatever the precision of the backbone: the map's
    # min-max normalisation and the soft Dice's sums lose too much in bfloat16.
    activations = activations.float()
    targets = torch.as_tensor(query_y, device=x.device).long()
    if config.head == "prototypical":
        # Prototypes from the episode's support rows, loss and Grad-CAM on its query rows.
        n_support = len(support)
        support_emb = model.head.embed(model.pool(activations[:n_support]))  # [S, D]
        sy = torch.as_tensor(support_y, device=x.device)
        n_classes = int(sy.max()) + 1
        prototypes = torch.zeros(n_classes, support_emb.shape[1], device=x.device, dtype=support_emb.dtype)
        prototypes = prototypes.index_add(0, sy, support_emb) / torch.bincount(sy, minlength=n_classes)[:, None]
        maps = activations[n_support:]  # [Q, K, h, w]
        query_emb = model.head.embed(model.pool(maps))  # [Q, D]
        logits = model.head.logits_against(query_emb, prototypes)  # [Q, n]
        logit_gradient = model.head.logit_gradient_against(query_emb, prototypes, targets)  # [Q, K]
        roi_weights, roi_area = roi_weights[n_support:], roi_area[n_support:]
    else:
        maps = activations
        pooled = model.pool(maps)  # [B, K]
        logits = model.head(pooled)  # [B, C]
        logit_gradient = model.head.logit_gradient(pooled, targets)  # [B, K]
    ce = F.cross_entropy(logits, targets)
    loss = ce
    dice = torch.tensor(float("nan"))
    if config.beta > 0:
        # Grad-CAM weights of the true class: d logit / d A is d logit / d pooled spread evenly over the grid.
        channel_weights = logit_gradient / (maps.shape[2] * maps.shape[3])
        dice_loss, contributing = gradcam_dice_loss(maps, channel_weights, roi_weights, roi_area, rois.roi_size)
        if contributing:
            loss = ce + config.beta * dice_loss
            dice = dice_loss.detach()
    return {"loss": loss, "ce": ce.detach(), "dice": dice}


def _autocast(config):
    """bfloat16 autocast for the backbone's forward pass with precision "bf16", else nothing."""
    return torch.autocast(device_type=torch.device(config.device).type, dtype=torch.bfloat16,
                          enabled=config.precision == "bf16")


def _memory_format(x, config):  # [B, C, H, W]
    return x.contiguous(memory_format=torch.channels_last) if config.channels_last else x


def _cached_view_batch(cache: FeatureCache, rows, config, generator):
    """Each row's features from a randomly chosen cached view (the image itself without augmentation),
    and which view it was (0: the image, 1: its mirror)."""
    n_views = len(cached_views(config))
    if n_views > 1:
        view = torch.randint(0, n_views, (len(rows),), generator=generator)
    else:
        view = torch.zeros(len(rows), dtype=torch.long)
    x = cache.features[view, torch.as_tensor(rows)].to(config.device, torch.float32)  # [B, K', h', w']
    return x, view


class _TrainingRois:
    """The training rows' ROIs: masks [N, H, W] as given, and their projections onto the CAM grid per cached
    view (the image's ROI and its mirror), computed once on the first step: the masks never change."""

    def __init__(self, masks, n_views: int, device, chunk: int = 256):
        self.masks = masks
        self.roi_size = tuple(masks.shape[1:])
        self._n_views, self._device, self._chunk = n_views, device, chunk
        self._weights = self._area = None  # [V, N, h, w], [N]

    def of_views(self, rows, view, cam_size):  # -> [B, h, w], [B] on the training device
        if self._weights is None or tuple(self._weights.shape[2:]) != tuple(cam_size):
            self._project(tuple(cam_size))
        rows = torch.as_tensor(rows, device=self._device)
        return self._weights[view.to(self._device), rows], self._area[rows]

    def _project(self, cam_size) -> None:
        weights, areas = [], []
        for start in range(0, len(self.masks), self._chunk):  # bounded float32 copies for large pools
            m = self.masks[start:start + self._chunk].to(self._device)
            views = [m, m.flip(-1)][:self._n_views]
            projected = [project_masks(v, cam_size) for v in views]
            weights.append(torch.stack([w for w, _ in projected]))
            areas.append(projected[0][1])
        self._weights, self._area = torch.cat(weights, dim=1), torch.cat(areas)


@torch.no_grad()
def _fit_prototypes_from_features(model, tail, cache: FeatureCache, labels, config, batch_size: int = 64) -> None:
    """model.fit_prototypes, from the cached identity view instead of the images."""
    model.eval()
    embeddings = []
    for start in range(0, len(cache), batch_size):
        x = cache.identity()[start:start + batch_size].to(config.device, torch.float32)
        embeddings.append(model.head.embed(model.pool(tail(x))))
    model.head.set_prototypes(torch.cat(embeddings), torch.as_tensor(labels))


def _epoch_batches(labels, config, rng):
    n = len(labels)
    if config.head == "prototypical":
        for _ in range(episodes_per_epoch(n, config.n_way, config.k_shot, config.n_query)):
            e = sample_episode(labels, config.n_way, config.k_shot, config.n_query, rng)
            yield e.support, e.support_labels, e.query, e.query_labels
        return
    order = rng.permutation(n)
    # Drop a last batch of one: BatchNorm cannot train on a single row.
    for start in range(0, n, config.batch_size):
        batch = order[start:start + config.batch_size]
        if len(batch) > 1:
            yield batch


def _steps_per_epoch(n, config) -> int:
    if config.head == "prototypical":
        return episodes_per_epoch(n, config.n_way, config.k_shot, config.n_query)
    return max(1, sum(1 for s in range(0, n, config.batch_size) if min(config.batch_size, n - s) > 1))


def _rows_not_finite(x: torch.Tensor) -> torch.Tensor:
    """The rows of x [N, ...] that hold a NaN or an infinity, in order.

    One such value makes every later loss NaN, silently. Checked in slices: a whole-array mask would cost a
    byte per value of the training set.
    """
    finite = [torch.isfinite(x[i:i + 256]).flatten(1).all(dim=1) for i in range(0, x.shape[0], 256)]
    return torch.nonzero(~torch.cat(finite or [torch.ones(0, dtype=torch.bool)])).flatten()


def _rows_outside_0_1(masks: torch.Tensor) -> torch.Tensor:
    """The rows of masks [N, H, W] with a value outside [0, 1] (NaN included), in slices as _rows_not_finite."""
    inside = [((m >= 0) & (m <= 1)).flatten(1).all(dim=1)
              for m in (masks[i:i + 256] for i in range(0, len(masks), 256))]
    return torch.nonzero(~torch.cat(inside or [torch.ones(0, dtype=torch.bool)])).flatten()


def _check_data(images, masks, labels, classes, config):
    # (contiguous: torch takes no numpy view with negative strides, such as images[::-1])
    masks = torch.as_tensor(np.ascontiguousarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    labels = np.asarray(labels)
    if isinstance(images, FeatureCache):
        n = len(images)
        bad = torch.unique(torch.cat([_rows_not_finite(view) for view in images.features]))
        if len(bad):
            dtype = str(images.features.dtype).replace("torch.", "")
            raise EgalError(f"{len(bad)} training row(s) have NaN or infinite cached features, "
                            f"first row {int(bad[0])}: their images hold such values, or the features overflow "
                            f"the cache's {dtype} (build it with dtype=torch.float32)")
    else:
        images = torch.as_tensor(np.ascontiguousarray(images) if not isinstance(images, torch.Tensor) else images)
        if images.ndim != 4 or images.shape[1] != config.in_channels:
            raise ValueError(f"images must be [N, {config.in_channels}, H, W], got {tuple(images.shape)}")
        check_model_images(images)
        n = images.shape[0]
        images = images.float()
        bad = _rows_not_finite(images)
        if len(bad):
            raise EgalError(f"{len(bad)} training image(s) hold NaN or infinite values, first row {int(bad[0])}: "
                            "decode or clean them before training")
    if masks.ndim != 3 or masks.shape[0] != n:
        raise ValueError(f"masks must be [N, H, W] with N = {n}, got {tuple(masks.shape)}")
    outside = _rows_outside_0_1(masks) if masks.dtype != torch.bool else []
    if len(outside):  # up front, by row: not mid-training by its position in a batch
        hint = " (a 0/255 mask: divide it by 255 or pass it as bool)" if masks.dtype == torch.uint8 else ""
        raise EgalError(f"{len(outside)} training mask(s) hold values outside [0, 1] (or NaN), first row "
                        f"{int(outside[0])}{hint}")
    if labels.shape != (n,):
        raise ValueError(f"labels must be [N] = [{n}], got {labels.shape}")
    if len(labels) == 0:
        raise EgalError("there are no labelled rows to train on")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"labels must be integer class indices in [0, {len(classes)})")
    if config.head == "prototypical":
        counts = np.bincount(labels, minlength=len(classes))
        if (counts >= 2).sum() < 2:
            raise EgalError("prototypical training needs >= 2 classes with >= 2 labelled rows each; class counts "
                            f"{counts.tolist()}")
        if (counts == 0).any():
            missing = [classes[i] for i in np.flatnonzero(counts == 0)]
            raise EgalError(f"every class needs a labelled row for its prototype; none for {missing}")
    return images, masks, labels.astype(np.int64)


def _nanmean(values) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")
