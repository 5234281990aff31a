"""The active-learning simulation: every (strategy, seed) run of an experiment not yet in its folder, in this
process or in worker processes (egal.loop.workers), then the report.

The experiment's shared part (the data, its split, the shortcut benchmark's marked copy, the frozen prefix's
features) is prepared once for all its runs. A run's rounds: egal.loop.rounds; its seed's round 0, trained once
for all its strategies: egal.loop.first_rounds; the output folder's rules: egal.loop.folder.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .._paths import check_writable
from ..errors import EgalError
from ..progress import Progress
from ..report.cam_grid import CamGridRecorder
from ..train.feature_cache import FeatureCache, build_feature_cache
from .config import ExperimentConfig
from .data import Dataset, check_data_columns, load_experiment_dataset
from .first_rounds import FirstRounds
from .folder import (
    RUNS_DIR,
    check_folder_path,
    experiment_folder,
    refuse_foreign_folder,
    report_lock,
    run_path,
    write_json_atomic,
)
from .metrics import roi_cam_dice
from .rounds import draw_seed_set, run_strategy
from .shortcut import ShortcutData, build_shortcut
from .splits import split_test
from .strategies import Strategy


def run_simulation(config: ExperimentConfig, out_dir, *, dataset: Dataset | None = None,
                   progress: bool = True) -> dict:
    """Run every (strategy, seed) not already in out_dir/runs, then write the report.

    Returns {"ran": [...], "skipped": [...], "report": {...paths}}. Finished runs
    are written atomically, so a killed simulation resumes where it stopped.
    With config.loop.workers > 1 the runs are shared out to that many processes
    (egal.loop.workers); they then read the pool from config.data.path, not `dataset`.
    """
    if dataset is None and not config.data.path:
        raise EgalError("no pool given: config.data.path is empty (pass --pool or a --config with [data] path)")
    out_dir = os.fspath(out_dir)
    strategies = config.loop.strategy_objects()
    if config.loop.rounds == 0 and len(strategies) > 1:  # (here, once a config file's and the options' are one)
        raise EgalError(f"rounds = 0 trains the shared round-0 model only: the {len(strategies)} strategies would "
                        "give one and the same run; ask for at least 1 round (0 is for one strategy: the seed set's "
                        "model alone)")
    grouped = [s.name for s in strategies if s.per_group is not None]
    if grouped and config.data.group_column is None:  # said before anything runs or is written
        raise EgalError(f"strategy {grouped[0]} caps a round's rows per group, but the data has no group column: "
                        "give it (group_column, --group-column), or drop the +group modifier")
    for name, folder in (("out (--out)", out_dir), ("data.cache_dir (--cache-dir)", config.data.cache_dir)):
        if folder:
            check_folder_path(name, os.fspath(folder))
    check_writable(out_dir, "out (--out)", inside=True)  # before the pool is read and the first model trained
    if dataset is None:  # a mistyped column named before the folder is made (and not by each worker process)
        from ..pool import open_pool

        check_data_columns(open_pool(config.data.path), config.data.label_column, config.data.group_column)
    refuse_foreign_folder(out_dir)  # before a lock file or runs/ is made in it
    os.makedirs(out_dir, exist_ok=True)
    with experiment_folder(config, out_dir) as warning:
        os.makedirs(os.path.join(out_dir, RUNS_DIR), exist_ok=True)
        return _run_simulation(config, out_dir, strategies, dataset, progress, warning)


class DecodeRulesChanged(UserWarning):
    """An experiment folder's runs were made by an egal that decoded images by other rules."""


class ExperimentWarning(UserWarning):
    """A setting that runs but does not measure what it seems to (a test split far from its fraction, strategies
    that read an ROI on a pool without any)."""


def _run_simulation(config: ExperimentConfig, out_dir: str, strategies: list, dataset: Dataset | None,
                    progress: bool, warning: str | None = None) -> dict:
    from ..report.experiment_page import write_experiment_page
    from .report import read_run, write_report

    todo, skipped = [], []
    for seed in config.loop.seeds:
        for strategy in strategies:
            path = run_path(out_dir, strategy.name, seed)
            if os.path.isfile(path):
                read_run(path)  # a damaged record is named now, not when the report reads it
            (skipped if os.path.isfile(path) else todo).append((strategy, seed, path))
    if todo and config.train.trainable_from is not None and config.train.weights is None:
        raise EgalError(
            f"trainable_from = {config.train.trainable_from!r} freezes the backbone, but its weights are random "
            "(weights = none): every seed and round would freeze a different random prefix, so no feature cache "
            "could be shared. Freeze a pretrained backbone (weights = 'imagenet' or a weights file), or train it all")
    workers = min(config.loop.workers, len(todo))
    if workers > 1 and dataset is not None:
        raise EgalError("workers > 1 start processes that read the pool from config.data.path; run with "
                        "dataset=None (or workers = 1 to use the dataset given)")
    if config.loop.threads and workers <= 1:
        import torch

        torch.set_num_threads(config.loop.threads)
    reporter = Progress(len(todo) * (config.loop.rounds + 1), enabled=progress)
    if warning and todo:  # new runs beside the old ones
        if progress:
            reporter.log(f"warning: {warning}")
        else:
            warnings.warn(warning, DecodeRulesChanged, stacklevel=3)
    ran = []
    try:
        if not todo:
            reporter.log(f"all {len(skipped)} run(s) already done in {out_dir}")
        elif workers > 1:
            from .workers import run_in_workers

            if config.data.cache_dir:  # decoded and through the frozen prefix once, here; the workers read the caches
                prepare_experiment(config, out_dir, None, reporter, todo=len(todo), skipped=len(skipped))
            else:
                reporter.log(f"{len(todo)} run(s) to do, {len(skipped)} already done; no cache_dir, so each worker "
                             "decodes the pool (and runs any frozen prefix) itself")
            ran = run_in_workers(config, out_dir, [(s.name, seed) for s, seed, _ in todo], reporter, workers,
                                 warn=not config.data.cache_dir)  # (with a cache, prepared and warned above)
        else:
            experiment = prepare_experiment(config, out_dir, dataset, reporter, todo=len(todo), skipped=len(skipped))
            first_rounds = FirstRounds()
            for strategy, seed, path in todo:
                run_unit(experiment, strategy, seed, path, first_rounds, reporter)
                ran.append((strategy.name, seed))
                first_rounds.keep_only(seed)  # a finished seed's model can go
    finally:
        reporter.close()
    with report_lock(out_dir):  # another process running other seeds into this folder may be writing it too
        report = write_report(out_dir)
        report["report_html"] = write_experiment_page(out_dir).path  # the experiment page, from the files just written
    return {"ran": ran, "skipped": [(s.name, seed) for s, seed, _ in skipped], "report": report}


@dataclass
class Experiment:
    """Everything the runs of one experiment share: the data, its split, the shortcut benchmark's marked
    copy, the frozen prefix's features, the Grad-CAM grid's test images and the Dice reference point."""

    config: ExperimentConfig
    dataset: Dataset
    pool: np.ndarray  # dataset positions of the pool
    test: np.ndarray  # dataset positions of the test set
    shortcut: ShortcutData | None
    features: FeatureCache | None
    marker_features: FeatureCache | None
    cam_grid: CamGridRecorder
    roi_cam_dice: float


def _warn_of_settings_that_measure_nothing(config: ExperimentConfig, dataset: Dataset, pool, test) -> None:
    loop = config.loop
    if loop.init + loop.rounds * loop.budget > len(pool):  # (a budget that round 1 cannot fill is refused)
        full = -(-(len(pool) - loop.init) // loop.budget)  # the first round whose model trains on the whole pool
        warnings.warn(f"init {loop.init} + rounds {loop.rounds} x budget {loop.budget} = "
                      f"{loop.init + loop.rounds * loop.budget} labels, more than the pool's {len(pool)} rows: round "
                      f"{full} trains on every pool row, the same for every strategy"
                      + (f", and rounds {full + 1}-{loop.rounds} are not run" if full < loop.rounds else "")
                      + f"; {(len(pool) - loop.init) // loop.budget} round(s) of this budget fit (--rounds, --budget)",
                      ExperimentWarning, stacklevel=3)
    share = len(test) / len(dataset)
    wanted = config.data.test_fraction
    if dataset.groups is not None and not config.data.test_groups and abs(share - wanted) > wanted / 2:
        warnings.warn(f"the test split holds {share:.0%} of the rows, not the test_fraction's {wanted:.0%}: whole "
                      f"groups of {config.data.group_column!r} are drawn until the fraction is reached, and these "
                      "are few or large; name the test groups (--test-groups) to choose", ExperimentWarning,
                      stacklevel=3)
    reading_roi = sorted(s.name for s in config.loop.strategy_objects() if s.kind != "random" and s.alpha != 1)
    if not dataset.masks[pool].any() and (reading_roi or config.train.beta > 0):
        uses = (([f"strategies {', '.join(reading_roi)} rank by misalignment"] if reading_roi else [])
                + ([f"beta {config.train.beta:g} trains on a Grad-CAM/ROI Dice"] if config.train.beta > 0 else []))
        warnings.warn(f"no pool row has an ROI (mask or box), but {' and '.join(uses)}: without an ROI these are "
                      "entropy alone and cross-entropy alone (docs/scoring.md, empty ROI)", ExperimentWarning,
                      stacklevel=3)


def prepare_experiment(config: ExperimentConfig, out_dir: str, dataset: Dataset | None, reporter: Progress, *,
                       todo: int = 0, skipped: int = 0, announce: bool = True, warn: bool | None = None) -> Experiment:
    """The shared part of an experiment: loaded (from the decoded-array cache where there is one), split, marked
    for the shortcut benchmark, and run through the frozen prefix (from the feature cache where there is one)."""
    if dataset is None:
        dataset = load_experiment_dataset(config)
    pool, test = split_test(dataset.labels, dataset.groups, test_groups=config.data.test_groups,
                            test_fraction=config.data.test_fraction, seed=config.data.split_seed)
    if config.loop.init >= len(pool):
        raise EgalError(f"init (--init) {config.loop.init} is not smaller than the pool's {len(pool)} rows: the seed "
                        "set would label the whole pool, and every strategy would give the same run")
    left = len(pool) - config.loop.init  # what the rounds choose from
    if config.loop.rounds > 0 and config.loop.budget > left:  # (later rounds that it cannot fill: warned)
        raise EgalError(f"budget (--budget) {config.loop.budget} is more than the {left} pool rows that the seed set "
                        f"of init (--init) {config.loop.init} leaves of the pool's {len(pool)}: round 1 cannot select "
                        "that many, and would label the whole pool, the same run for every strategy; choose a budget "
                        f"below {left}, so that the rounds have rows to choose between")
    if announce if warn is None else warn:  # (workers: one of them warns, through the parent)
        _warn_of_settings_that_measure_nothing(config, dataset, pool, test)
    if announce:
        reporter.log(f"{len(dataset)} rows ({len(pool)} pool, {len(test)} test), classes {list(dataset.classes)}; "
                     f"seeds {', '.join(map(str, config.loop.seeds))} x strategies "
                     f"{', '.join(config.loop.strategies)}: {todo} run(s) to do, {skipped} already done")
    shortcut = marker_features = features = None
    if config.shortcut.enabled:
        shortcut = build_shortcut(dataset.images, dataset.masks, dataset.labels, dataset.classes, pool, test,
                                  config.shortcut)
        dataset = Dataset(dataset.ids, shortcut.images, dataset.masks, dataset.labels, dataset.classes, dataset.groups)
        reporter.log(f"shortcut benchmark: a {config.shortcut.marker} marker in {int(shortcut.marked.sum())} pool "
                     f"image(s) of {config.shortcut.target_class!r} ({shortcut.unplaced} had no room outside the ROI); "
                     f"marker test copy: {int(shortcut.marker_test_marked.sum())} of {len(test)} test image(s) marked")
    if config.train.trainable_from is not None:
        features, marker_features = _feature_caches(config, dataset, shortcut, reporter)
    return Experiment(config, dataset, pool, test, shortcut, features, marker_features,
                      CamGridRecorder(out_dir, dataset, test, features=features),
                      roi_cam_dice(dataset.masks[test], _cam_size(config)))


def run_unit(experiment: Experiment, strategy: Strategy, seed: int, path: str, first_rounds: FirstRounds,
             reporter: Progress) -> None:
    """One (strategy, seed) run of the experiment, written atomically to `path`."""
    e, config = experiment, experiment.config
    seed_set = draw_seed_set(e.dataset, e.pool, seed, config)
    cams = e.cam_grid.run(strategy.name, seed) if seed == config.loop.seeds[0] else None
    record = run_strategy(e.dataset, e.pool, e.test, strategy, seed, config, seed_set=seed_set, progress=reporter,
                          features=e.features, shortcut=e.shortcut, marker_features=e.marker_features,
                          first_rounds=first_rounds, cam_record=cams)
    if cams is not None:
        cams.save()
    record["test_rows"] = int(len(e.test))
    record["pool_rows"] = int(len(e.pool))
    record["roi_cam_dice"] = e.roi_cam_dice
    write_json_atomic(path, record)


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

