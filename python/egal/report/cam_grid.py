"""Grad-CAM of fixed test images after every round of an experiment (the paper's Fig. 4), kept as small arrays.

`egal simulate` records, for the first seed of its configuration, the predicted class's
normalised Grad-CAM map (at the CAM's own resolution, e.g. 7 x 7) of a few test images
after every round of every strategy; the experiment page draws them over the images, so
`egal report --experiment OUT` can rebuild the page without rerunning anything. In OUT/cam_grid/:

  images.npz                ids [n] str, labels [n] (class index), classes [C] str,
                            images [n, H, W] uint8 (grey, at the training resolution),
                            masks [n, H, W] uint8 0/1: the test images, the same for every run
  <strategy>__seed<k>.npz   rounds [R], labels [R] (labels used), cams [R, n, h, w] float32 in [0, 1],
                            pred [R, n] (class index), confidence [R, n] (softmax of pred),
                            misalignment [R, n] (soft Dice distance, docs/scoring.md)

Recording needs PyTorch (the model is a torch model); reading needs numpy alone.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .._atomic import replaced_atomically
from ..errors import EgalError

FOLDER = "cam_grid"
IMAGES_FILE = "images.npz"
PER_CLASS = 2  # test images per class in the grid
CHOICE_SEED = 0  # the generator that picks them: the same images for every run of a folder


def choose_test_images(labels, masks, test, per_class: int = PER_CLASS) -> np.ndarray:
    """Dataset positions of `per_class` test images of each class (in class order), drawn with a fixed
    generator among the test rows that have an ROI (among all of the class's test rows when too few do)."""
    labels, test = np.asarray(labels), np.asarray(test, dtype=np.int64)
    rng = np.random.default_rng(CHOICE_SEED)
    has_roi = np.array([bool(np.any(masks[i])) for i in test], dtype=bool)
    chosen = []
    for c in np.unique(labels[test]):
        of_class = labels[test] == c
        candidates = test[of_class & has_roi]
        if len(candidates) < per_class:
            candidates = test[of_class]
        chosen.extend(np.sort(rng.choice(candidates, size=min(per_class, len(candidates)), replace=False)))
    return np.asarray(chosen, dtype=np.int64)


class CamGridRecorder:
    """Holds the chosen test images of one experiment; `run(strategy, seed)` records one run's rounds."""

    def __init__(self, out_dir, dataset, test, *, features=None, per_class: int = PER_CLASS):
        """dataset: egal.loop.Dataset; test: its test positions; features: the frozen prefix's cached
        outputs for every dataset row (egal.train.feature_cache), when the experiment uses them."""
        self.folder = os.path.join(os.fspath(out_dir), FOLDER)
        rows = choose_test_images(dataset.labels, dataset.masks, test, per_class)
        self.ids = np.asarray(dataset.ids[rows]).astype(str)
        self.labels = np.asarray(dataset.labels[rows], dtype=np.int64)
        self.classes = np.asarray(dataset.classes, dtype=str)
        self.images = np.ascontiguousarray(dataset.images[rows], dtype=np.float32)  # [n, C, H, W]
        self.masks = np.ascontiguousarray(dataset.masks[rows])  # [n, H, W]
        self.features = None if features is None else features.subset(rows)

    def run(self, strategy: str, seed: int) -> RunCams:
        return RunCams(self, strategy, seed)

    def write_images(self) -> str:
        grey = self.images.mean(axis=1)  # [n, H, W]: what a reader sees of a grey or RGB input
        path = os.path.join(self.folder, IMAGES_FILE)
        images = np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8)
        _save_atomic(path, ids=self.ids, labels=self.labels, classes=self.classes, images=images,
                     masks=(self.masks > 0).astype(np.uint8))
        return path


class RunCams:
    """One (strategy, seed) run's Grad-CAMs of the grid images: `record` after every round, then `save`."""

    def __init__(self, grid: CamGridRecorder, strategy: str, seed: int):
        self.grid, self.strategy, self.seed = grid, strategy, int(seed)
        self.rounds, self.labels, self.cams, self.pred, self.confidence, self.misalignment = [], [], [], [], [], []

    def record(self, round_index: int, labels: int, model) -> None:
        from ..loop.scoring import score_in_batches

        grid = self.grid
        scores = score_in_batches(model, None if grid.features is not None else grid.images, grid.masks, alpha=0.5,
                                  features=grid.features, return_cam=True)
        self.rounds.append(int(round_index))
        self.labels.append(int(labels))
        self.cams.append(scores.cam.astype(np.float32))
        self.pred.append(scores.pred.astype(np.int64))
        self.confidence.append(scores.probs[np.arange(len(scores.pred)), scores.pred].astype(np.float32))
        self.misalignment.append(scores.misalignment.astype(np.float32))

    def save(self) -> str:
        """Writes images.npz (when absent) and this run's file, atomically; returns the run file's path."""
        if not os.path.isfile(os.path.join(self.grid.folder, IMAGES_FILE)):
            self.grid.write_images()
        path = os.path.join(self.grid.folder, run_file_name(self.strategy, self.seed))
        _save_atomic(path, rounds=np.asarray(self.rounds, np.int64), labels=np.asarray(self.labels, np.int64),
                     cams=np.stack(self.cams), pred=np.stack(self.pred), confidence=np.stack(self.confidence),
                     misalignment=np.stack(self.misalignment))
        return path


def run_file_name(strategy: str, seed: int) -> str:
    return f"{strategy}__seed{int(seed)}.npz"


@dataclass(frozen=True)
class RunGrid:
    """What one run recorded (see the module docstring)."""

    strategy: str
    seed: int
    rounds: np.ndarray  # [R]
    labels: np.ndarray  # [R]
    cams: np.ndarray  # [R, n, h, w]
    pred: np.ndarray  # [R, n]
    confidence: np.ndarray  # [R, n]
    misalignment: np.ndarray  # [R, n]


@dataclass(frozen=True)
class CamGrid:
    ids: np.ndarray  # [n]
    labels: np.ndarray  # [n]
    classes: tuple
    images: np.ndarray  # [n, H, W] uint8
    masks: np.ndarray  # [n, H, W] uint8
    runs: dict  # strategy name -> RunGrid (the first seed recorded)


def load_cam_grid(out_dir) -> CamGrid | None:
    """The recorded grid of an experiment folder, or None when the run did not record one (older egal); an
    EgalError naming the file when one of its files is damaged."""
    folder = os.path.join(os.fspath(out_dir), FOLDER)
    try:
        return _load_cam_grid(folder)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # cut short, edited
        raise EgalError(f"the Grad-CAM grid in {folder!r} is damaged ({type(exc).__name__}: {exc}): delete the "
                        "folder to write the page without it") from None


def _load_cam_grid(folder: str) -> CamGrid | None:
    images_path = os.path.join(folder, IMAGES_FILE)
    if not os.path.isfile(images_path):
        return None
    with np.load(images_path, allow_pickle=False) as z:
        base = {k: z[k] for k in ("ids", "labels", "classes", "images", "masks")}
    runs = {}
    for name in sorted(os.listdir(folder)):
        if name == IMAGES_FILE or not name.endswith(".npz") or "__seed" not in name:
            continue
        strategy, seed = name[:-len(".npz")].rsplit("__seed", 1)
        if strategy in runs and runs[strategy].seed <= int(seed):
            continue  # one seed per strategy: the lowest recorded
        with np.load(os.path.join(folder, name), allow_pickle=False) as z:
            runs[strategy] = RunGrid(strategy, int(seed), **{k: z[k] for k in
                                                             ("rounds", "labels", "cams", "pred", "confidence",
                                                              "misalignment")})
    return CamGrid(base["ids"], base["labels"], tuple(base["classes"].tolist()), base["images"], base["masks"], runs)


def _save_atomic(path: str, **arrays) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with replaced_atomically(path, ".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
