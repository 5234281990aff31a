"""The active-learning simulation: seed set, then rounds of train -> score -> select -> reveal.

Every strategy of a seed starts from the same class-balanced seed set and
trains with the same per-round training seed; only the selection differs. The
loop keeps the pool's labels in a `HiddenLabels` oracle that hands out a label
only once its row has been selected; strategies get images, ROIs and ids.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, replace

import numpy as np

from .._atomic import temporary_path
from ..errors import EgalError

try:
    import fcntl
except ImportError:  # Windows: no report lock, so run seeds in parallel into separate folders there
    fcntl = None
from ..progress import Progress
from ..report.cam_grid import CamGridRecorder
from ..train import train_model
from ..train.feature_cache import FeatureCache, build_feature_cache
from .config import ExperimentConfig
from .data import Dataset, load_experiment_dataset
from .metrics import evaluate, roi_cam_dice
from .shortcut import ShortcutData, build_shortcut
from .splits import balanced_seed_set, split_test
from .strategies import Strategy

RUNS_DIR = "runs"


class HiddenLabels:
    """The annotator: knows every pool label, tells one only for rows that were selected."""

    def __init__(self, labels):
        self._labels = np.asarray(labels).copy()
        self._revealed = np.zeros(len(self._labels), dtype=bool)

    def reveal(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        self._revealed[rows] = True
        return self._labels[rows]

    def labels(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if not self._revealed[rows].all():
            raise RuntimeError("asked for the label of a row that has not been annotated")
        return self._labels[rows]


def draw_seed_set(dataset: Dataset, pool: np.ndarray, seed: int, config: ExperimentConfig) -> np.ndarray:
    """Positions in `pool` of the class-balanced seed set of `seed`.

    Part of the experimental design, like the test set: drawn with the labels (a
    team commissions a balanced first batch), once per seed, and handed to every
    strategy. After this, labels reach the loop only through HiddenLabels.
    """
    return balanced_seed_set(dataset.labels[pool], min(config.loop.init, len(pool)), np.random.default_rng([seed, 0]))


def run_strategy(dataset: Dataset, pool: np.ndarray, test: np.ndarray, strategy: Strategy, seed: int,
                 config: ExperimentConfig, *, seed_set: np.ndarray, progress: Progress | None = None,
                 features: FeatureCache | None = None, shortcut: ShortcutData | None = None,
                 marker_features: FeatureCache | None = None, first_rounds: dict | None = None,
                 cam_record=None) -> dict:
    """One (strategy, seed) run over all rounds, starting from `seed_set` (positions in pool,
    see draw_seed_set); returns its record (JSON-ready).

    features: the frozen prefix's cached outputs for every dataset row (config.train.trainable_from).
    shortcut / marker_features: the shortcut benchmark's marked data and the marker test copy's features.
    cam_record: an egal.report.cam_grid.RunCams that keeps the Grad-CAM of fixed test images after every round.
    first_rounds: a dict shared by the strategies of one seed: their round 0 is the same training on the
    same seed set, so it runs once and the model, its metrics and its pool scores (per alpha) are reused.
    """
    loop = config.loop
    progress = progress or Progress(0, enabled=False)
    pool_labels = HiddenLabels(dataset.labels[pool])
    labelled = np.sort(np.asarray(seed_set, dtype=np.int64))
    pool_labels.reveal(labelled)
    selection_rng = np.random.default_rng([seed, 1])
    test_set = _TestSet(dataset.images[test], dataset.masks[test], dataset.labels[test],
                        None if features is None else features.subset(test))
    marker_set = None
    if shortcut is not None:
        marker_set = _TestSet(shortcut.marker_test_images, dataset.masks[test], dataset.labels[test], marker_features)
    record = {"strategy": strategy.name, "kind": strategy.kind, "alpha": strategy.alpha, "combine": strategy.combine,
              "seed": seed, "seed_set": dataset.ids[pool[labelled]].tolist(), "rounds": []}
    for r in range(loop.rounds + 1):
        rows = pool[labelled]
        shared = first_rounds is not None and r == 0 and seed in first_rounds
        if shared:
            model, history, metrics, round0_scores = first_rounds[seed]
        else:
            train_config = replace(config.train, seed=seed * 1000 + r)
            model, history = train_model(None if features is not None else dataset.images[rows], dataset.masks[rows],
                                         pool_labels.labels(labelled), dataset.classes, train_config,
                                         features=None if features is None else features.subset(rows))
            metrics = test_set.evaluate(model, loop.score_batch_size)
            if marker_set is not None:
                marked = marker_set.evaluate(model, loop.score_batch_size)
                metrics["marker_accuracy"] = marked["accuracy"]
                marked_pred = marked["pred"][shortcut.marker_test_marked]
                metrics["marker_as_target"] = float(np.mean(marked_pred == shortcut.target))
            metrics.pop("pred", None)
            round0_scores = {}
            if first_rounds is not None and r == 0:
                first_rounds[seed] = (model, history, metrics, round0_scores)
        if cam_record is not None:  # egal.report.cam_grid.RunCams: the experiment page's Grad-CAM grid
            cam_record.record(r, len(labelled), model)
        entry = {"round": r, "labels": int(len(labelled)), **metrics, "train_seconds": round(history.seconds, 2),
                 "final_train_loss": history.epoch_loss[-1] if history.epoch_loss else None, "selected": []}
        if shared:
            entry["shared_with_other_strategies"] = True
        if shortcut is not None:
            entry["marked_labelled"] = int(shortcut.marked[rows].sum())
        if r < loop.rounds:
            unlabelled = np.setdiff1d(np.arange(len(pool)), labelled)
            if len(unlabelled) == 0:
                record["rounds"].append(entry)
                break
            start = time.perf_counter()
            rows_u = pool[unlabelled]
            chosen = strategy.select(model, None if features is not None else dataset.images[rows_u],
                                     dataset.masks[rows_u], dataset.ids[rows_u], loop.budget, selection_rng,
                                     batch_size=loop.score_batch_size,
                                     features=None if features is None else features.subset(rows_u),
                                     scored=round0_scores if r == 0 else None,
                                     groups=None if dataset.groups is None else dataset.groups[rows_u])
            picked = unlabelled[chosen]
            pool_labels.reveal(picked)
            labelled = np.sort(np.concatenate([labelled, picked]))
            entry["selected"] = dataset.ids[pool[picked]].tolist()
            entry["select_seconds"] = round(time.perf_counter() - start, 2)
            if shortcut is not None:
                entry["selected_marked_share"] = float(shortcut.marked[pool[picked]].mean())
                entry["unlabelled_marked_share"] = float(shortcut.marked[rows_u].mean())
        record["rounds"].append(entry)
        progress.advance(1, f"{strategy.name} s{seed} r{r}")
        extra = ""
        if shortcut is not None:
            extra = f" marker-test acc {metrics['marker_accuracy']:.3f}"
            if "selected_marked_share" in entry:
                extra += f", marked in selection {entry['selected_marked_share']:.2f}"
        progress.log(f"{strategy.name} seed {seed} round {r}/{loop.rounds}: {entry['labels']} labels, "
                     f"acc {metrics['accuracy']:.3f} auc {metrics['auc']:.3f} dice {metrics['dice']:.3f}{extra} "
                     f"(train {history.seconds:.1f} s{', shared' if shared else ''})")
    return record


@dataclass
class _TestSet:
    images: np.ndarray | None  # [T, C, H, W], or None when features are given
    masks: np.ndarray  # [T, H, W]
    labels: np.ndarray  # [T]
    features: FeatureCache | None = None

    def evaluate(self, model, batch_size: int) -> dict:
        return evaluate(model, None if self.features is not None else self.images, self.masks, self.labels,
                        batch_size=batch_size, features=self.features, with_predictions=True)


def run_simulation(config: ExperimentConfig, out_dir, *, dataset: Dataset | None = None,
                   progress: bool = True) -> dict:
    """Run every (strategy, seed) not already in out_dir/runs, then write the report.

    Returns {"ran": [...], "skipped": [...], "report": {...paths}}. Finished runs
    are written atomically, so a killed simulation resumes where it stopped.
    """
    from ..report.experiment_page import experiment_report
    from .report import write_report

    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, RUNS_DIR), exist_ok=True)
    _check_or_write_config(config, out_dir)
    if config.loop.threads:
        import torch

        torch.set_num_threads(config.loop.threads)
    if dataset is None:
        dataset = load_experiment_dataset(config)
    pool, test = split_test(dataset.labels, dataset.groups, test_groups=config.data.test_groups,
                            test_fraction=config.data.test_fraction, seed=config.data.split_seed)
    strategies = config.loop.strategy_objects()
    todo, skipped = [], []
    for seed in config.loop.seeds:
        for strategy in strategies:
            path = run_path(out_dir, strategy.name, seed)
            (skipped if os.path.isfile(path) else todo).append((strategy, seed, path))
    reporter = Progress(len(todo) * (config.loop.rounds + 1), enabled=progress)
    reporter.log(f"{len(dataset)} rows ({len(pool)} pool, {len(test)} test), classes {list(dataset.classes)}; "
                 f"seeds {', '.join(map(str, config.loop.seeds))} x strategies "
                 f"{', '.join(s.name for s in strategies)}: {len(todo)} run(s) to do, {len(skipped)} already done")
    shortcut = marker_features = features = None
    if todo and config.shortcut.enabled:
        shortcut = build_shortcut(dataset.images, dataset.masks, dataset.labels, dataset.classes, pool, test,
                                  config.shortcut)
        dataset = Dataset(dataset.ids, shortcut.images, dataset.masks, dataset.labels, dataset.classes, dataset.groups)
        reporter.log(f"shortcut benchmark: a {config.shortcut.marker} marker in {int(shortcut.marked.sum())} pool "
                     f"image(s) of {config.shortcut.target_class!r} ({shortcut.unplaced} had no room outside the ROI); "
                     f"marker test copy: {int(shortcut.marker_test_marked.sum())} of {len(test)} test image(s) marked")
    if todo and config.train.trainable_from is not None:
        if config.train.weights is None:
            raise EgalError(
                f"trainable_from = {config.train.trainable_from!r} freezes the backbone, but its weights are random "
                "(weights = none): every seed and round would freeze a different random prefix, so no feature cache "
                "could be shared. Freeze a pretrained backbone (weights = 'imagenet' or a weights file), or train it "
                "all")
        features, marker_features = _feature_caches(config, dataset, shortcut, reporter)
    ran, first_rounds = [], {}
    cam_grid = CamGridRecorder(out_dir, dataset, test, features=features) if todo else None
    ceiling = roi_cam_dice(dataset.masks[test], _cam_size(config)) if todo else None
    try:
        for strategy, seed, path in todo:
            seed_set = draw_seed_set(dataset, pool, seed, config)
            cams = cam_grid.run(strategy.name, seed) if seed == config.loop.seeds[0] else None
            record = run_strategy(dataset, pool, test, strategy, seed, config, seed_set=seed_set, progress=reporter,
                                  features=features, shortcut=shortcut, marker_features=marker_features,
                                  first_rounds=first_rounds, cam_record=cams)
            if cams is not None:
                cams.save()
            record["test_rows"] = int(len(test))
            record["pool_rows"] = int(len(pool))
            record["roi_cam_dice"] = ceiling
            _write_json_atomic(path, record)
            ran.append((strategy.name, seed))
            first_rounds = {k: v for k, v in first_rounds.items() if k == seed}  # a finished seed's model can go
    finally:
        reporter.close()
    with _report_lock(out_dir):  # another process running other seeds into this folder may be writing it too
        report = write_report(out_dir)
        report["report_html"] = experiment_report(out_dir).path  # the experiment page, from the files just written
    return {"ran": ran, "skipped": [(s.name, seed) for s, seed, _ in skipped], "report": report}


def _feature_caches(config: ExperimentConfig, dataset: Dataset, shortcut: ShortcutData | None, reporter: Progress):
    """The frozen prefix's outputs for every dataset row (and the marker test copy), computed once for all runs."""
    from ..train.trainer import cached_views, new_model

    model = new_model(config.train, dataset.classes)  # the prefix has its pretrained weights whatever the seed
    started = time.perf_counter()

    def tick(done, total):
        if done == total or done % 512 < 32:
            reporter.log(f"frozen prefix ({config.train.trainable_from}): {done}/{total} image views")

    features = build_feature_cache(model, dataset.images, config.train.trainable_from, views=cached_views(config.train),
                                   cache_dir=config.data.cache_dir, progress=tick)
    marker = None
    if shortcut is not None:
        marker = build_feature_cache(model, shortcut.marker_test_images, config.train.trainable_from,
                                     views=("identity",), cache_dir=config.data.cache_dir, progress=tick)
    size = features.nbytes + (marker.nbytes if marker is not None else 0)
    reporter.log(f"feature cache ready: {len(features)} rows x {len(features.views)} view(s), "
                 f"{size / 2**20:.0f} MiB float16 in memory, {time.perf_counter() - started:.0f} s")
    return features, marker


def _cam_size(config: ExperimentConfig):
    from ..models import build_model

    model = build_model(config.train.architecture, config.train.head, ("a", "b"), weights=None,
                        input_size=config.train.input_size, in_channels=config.train.in_channels,
                        embedding_dim=config.train.embedding_dim)
    import torch

    with torch.no_grad():
        shape = model.eval().feature_map(torch.zeros(1, config.train.in_channels, *config.train.input_size)).shape
    return tuple(shape[2:])


def run_path(out_dir, strategy_name: str, seed: int) -> str:
    return os.path.join(out_dir, RUNS_DIR, f"{strategy_name}__seed{seed}.json")


@contextlib.contextmanager
def _report_lock(out_dir: str):
    """Held while the report is written. Seeds can run in parallel as processes with disjoint --seeds
    and one --out: each writes its own run files, and the report of whichever ends last holds them all."""
    if fcntl is None:
        yield
        return
    with open(os.path.join(out_dir, ".report.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_or_write_config(config: ExperimentConfig, out_dir: str) -> None:
    path = os.path.join(out_dir, "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            stored = json.load(f)
        if stored.get("identity") != json.loads(json.dumps(config.identity())):
            raise EgalError(
                f"{out_dir!r} holds results of a different experiment configuration (see {path}); "
                "use another --out folder, or the same settings to resume"
            )
    _write_json_atomic(path, {"identity": config.identity(), "config": config.to_dict()})


def _write_json_atomic(path: str, payload) -> None:
    tmp = temporary_path(path)
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)
