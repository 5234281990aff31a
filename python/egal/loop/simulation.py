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
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import _json as strict_json
from .._atomic import replaced_atomically
from ..errors import EgalError
from ..pool.decode import DECODE_RULES

try:
    import fcntl
except ImportError:  # Windows: no report lock, so run seeds in parallel into separate folders there
    fcntl = None
from ..progress import Progress
from ..report.cam_grid import CamGridRecorder
from ..train import train_model
from ..train.feature_cache import FeatureCache, build_feature_cache
from .config import ExperimentConfig, comparable_identity
from .data import Dataset, content_digest, load_experiment_dataset
from .metrics import evaluate, roi_cam_dice
from .shortcut import ShortcutData, build_shortcut
from .splits import balanced_seed_set, split_test
from .strategies import Strategy

RUNS_DIR = "runs"
CONFIG_LOCK = ".config.lock"  # held while config.json is checked or written
ACTIVE_LOCK = ".active.lock"  # held (shared) by every simulate running in the folder
REPORT_LOCK = ".report.lock"  # held while the report is written
LOCK_FILES = (CONFIG_LOCK, ACTIVE_LOCK, REPORT_LOCK)


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
                 marker_features: FeatureCache | None = None, first_rounds: FirstRounds | None = None,
                 cam_record=None) -> dict:
    """One (strategy, seed) run over all rounds, starting from `seed_set` (positions in pool,
    see draw_seed_set); returns its record (JSON-ready).

    features: the frozen prefix's cached outputs for every dataset row (config.train.trainable_from).
    shortcut / marker_features: the shortcut benchmark's marked data and the marker test copy's features.
    cam_record: an egal.report.cam_grid.RunCams that keeps the Grad-CAM of fixed test images after every round.
    first_rounds: a FirstRounds shared by the strategies of one seed: their round 0 is the same training on the
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
    def train_and_test(rows, r):
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
        return model, history, metrics

    for r in range(loop.rounds + 1):
        rows = pool[labelled]
        shared, round0_scores = False, {}
        if r == 0 and first_rounds is not None:
            with first_rounds.hold(seed) as slot:
                shared = slot.value is not None
                if not shared:
                    slot.value = (*train_and_test(rows, r), {})
                model, history, metrics, round0_scores = slot.value
        else:
            model, history, metrics = train_and_test(rows, r)
        if cam_record is not None:  # egal.report.cam_grid.RunCams: the experiment page's Grad-CAM grid
            cam_record.record(r, len(labelled), model)
        entry = {"round": r, "labels": int(len(labelled)), **metrics, "train_seconds": round(history.seconds, 2),
                 "train_images_per_second": round(history.images / history.seconds, 1) if history.seconds else None,
                 "final_train_loss": history.epoch_loss[-1] if history.epoch_loss else None, "selected": []}
        if shared:
            entry["shared_with_other_strategies"] = True
        if shortcut is not None:
            entry["marked_labelled"] = int(shortcut.marked[rows].sum())
        exhausted = False
        if r < loop.rounds:
            unlabelled = np.setdiff1d(np.arange(len(pool)), labelled)
            exhausted = len(unlabelled) == 0
        if exhausted:  # every pool row is labelled: the rounds asked for beyond this one cannot run
            record["pool_exhausted_after_round"] = r
        elif r < loop.rounds:
            reused_scores = r == 0 and bool(round0_scores)  # another strategy's round-0 scores: none made here
            start = time.perf_counter()
            rows_u = pool[unlabelled]
            chosen = strategy.select(model, None if features is not None else dataset.images[rows_u],
                                     dataset.masks[rows_u], dataset.ids[rows_u], loop.budget, selection_rng,
                                     batch_size=loop.score_batch_size,
                                     features=None if features is None else features.subset(rows_u),
                                     scored=round0_scores if r == 0 else None,
                                     groups=None if dataset.groups is None else dataset.groups[rows_u])
            picked = unlabelled[chosen]
            shortfall = min(loop.budget, len(unlabelled)) - len(picked)
            if shortfall > 0:  # a group cap with fewer groups than the budget: said in the run and the summary
                entry["budget_shortfall"] = int(shortfall)
                progress.log(f"warning: {strategy.name} seed {seed} round {r}: selected {len(picked)} rows, "
                             f"{shortfall} fewer than the budget of {loop.budget} (its group cap leaves no more)")
            pool_labels.reveal(picked)
            labelled = np.sort(np.concatenate([labelled, picked]))
            entry["selected"] = dataset.ids[pool[picked]].tolist()
            seconds = time.perf_counter() - start
            entry["select_seconds"] = round(seconds, 2)
            if not reused_scores and seconds > 0:
                entry["select_rows_per_second"] = round(len(unlabelled) / seconds, 1)  # the pool rows it ranked
            if shortcut is not None:
                entry["selected_marked_share"] = float(shortcut.marked[pool[picked]].mean())
                entry["unlabelled_marked_share"] = float(shortcut.marked[rows_u].mean())
        record["rounds"].append(entry)
        progress.advance(1 + (loop.rounds - r if exhausted else 0), f"{strategy.name} s{seed} r{r}")
        extra = ""
        if shortcut is not None:
            extra = f" marker-test acc {metrics['marker_accuracy']:.3f}"
            if "selected_marked_share" in entry:
                extra += f", marked in selection {entry['selected_marked_share']:.2f}"
        progress.log(f"{strategy.name} seed {seed} round {r}/{loop.rounds}: {entry['labels']} labels, "
                     f"acc {metrics['accuracy']:.3f} auc {metrics['auc']:.3f} dice {metrics['dice']:.3f}{extra} "
                     f"(train {history.seconds:.1f} s{', shared' if shared else ''}{_speeds(entry)})")
        if exhausted:
            progress.log(f"{strategy.name} seed {seed}: every pool row is labelled after round {r}; rounds "
                         f"{r + 1}-{loop.rounds} not run (init + rounds x budget exceeds the pool's {len(pool)} rows)")
            break
    return record


def _speeds(entry: dict) -> str:
    """The round's throughput for the log: training images/s and, when it selected, pool rows ranked/s."""
    text = ""
    if entry.get("train_images_per_second"):
        text += f", {entry['train_images_per_second']:,.0f} img/s"
    if entry.get("select_rows_per_second"):
        text += f"; select {entry['select_seconds']:.1f} s, {entry['select_rows_per_second']:,.0f} rows/s"
    return text


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
            _check_folder_path(name, os.fspath(folder))
    _refuse_foreign_folder(out_dir)  # before a lock file or runs/ is made in it
    os.makedirs(out_dir, exist_ok=True)
    with _experiment_folder(config, out_dir) as warning:
        os.makedirs(os.path.join(out_dir, RUNS_DIR), exist_ok=True)
        return _run_simulation(config, out_dir, strategies, dataset, progress, warning)


def _check_folder_path(name: str, folder: str) -> None:
    """EgalError, before anything is written, when `folder` or a folder on the way to it is a file or a dangling
    symbolic link (the folder could not be made: an OS error after the output folder was begun). Component by
    component, as the OS walks it: "afile/../x" goes through afile."""
    parts = Path(folder).parts
    for end in range(1, len(parts) + 1):
        prefix = os.path.join(*parts[:end])
        if os.path.lexists(prefix) and not os.path.exists(prefix):
            raise EgalError(f"{name} {folder!r}: {prefix!r} is a symbolic link to nothing; choose a folder")
        if os.path.exists(prefix) and not os.path.isdir(prefix):
            where = "is a file" if end == len(parts) else f"goes through {prefix!r}, a file"
            raise EgalError(f"{name} {folder!r} {where}, not a folder: it is left as it is; choose a folder")


class DecodeRulesChanged(UserWarning):
    """An experiment folder's runs were made by an egal that decoded images by other rules."""


class ExperimentWarning(UserWarning):
    """A setting that runs but does not measure what it seems to (a test split far from its fraction, strategies
    that read an ROI on a pool without any)."""


def _run_simulation(config: ExperimentConfig, out_dir: str, strategies: list, dataset: Dataset | None,
                    progress: bool, warning: str | None = None) -> dict:
    from ..report.experiment_page import experiment_report
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
    with _report_lock(out_dir):  # another process running other seeds into this folder may be writing it too
        report = write_report(out_dir)
        report["report_html"] = experiment_report(out_dir).path  # the experiment page, from the files just written
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
    _write_json_atomic(path, record)


class FirstRounds:
    """Round 0 of each seed, shared by its strategies: (model, TrainHistory, test metrics, pool scores by alpha).

    In memory by default. With `folder`, also kept there (the model file and a JSON record per seed, written
    under a per-seed lock), so that worker processes train each seed's round 0 once between them: whoever
    holds the lock first trains it, the others wait and load it.
    """

    def __init__(self, folder: str | None = None, device: str = "cpu"):
        self.folder, self.device = folder, device
        self._memory: dict = {}

    @contextlib.contextmanager
    def hold(self, seed: int):
        """A slot whose .value is the seed's round 0 or None; set it to share a round 0 just trained."""
        lock = contextlib.nullcontext() if self.folder is None else _file_lock(self._path(seed, ".lock"))
        with lock:
            value = self._memory.get(seed)
            if value is None and self.folder is not None:
                value = self._load(seed)
            slot = _Slot(value)
            yield slot
            if slot.value is not None:
                if value is None and self.folder is not None:
                    self._save(seed, slot.value)
                self._memory[seed] = slot.value

    def keep_only(self, seed: int) -> None:
        self._memory = {k: v for k, v in self._memory.items() if k == seed}

    def _path(self, seed: int, suffix: str) -> str:
        return os.path.join(self.folder, f"seed{int(seed)}{suffix}")

    def _save(self, seed: int, value) -> None:
        from ..models import save_model

        model, history, metrics, _ = value
        with replaced_atomically(self._path(seed, ".pt")) as tmp:
            save_model(model, tmp)
        _write_json_atomic(self._path(seed, ".json"), {"history": asdict(history), "metrics": metrics})

    def _load(self, seed: int):
        from ..models import load_model
        from ..train import TrainHistory

        if not (os.path.isfile(self._path(seed, ".pt")) and os.path.isfile(self._path(seed, ".json"))):
            return None
        try:
            with open(self._path(seed, ".json")) as f:
                record = json.load(f)
            record = strict_json.nan_for_null(record)  # a NaN metric (a Dice without ROIs) was written as null
            return (load_model(self._path(seed, ".pt"), map_location=self.device),
                    TrainHistory(**record["history"]), record["metrics"], {})
        except (OSError, ValueError, KeyError, TypeError):  # damaged (a copy cut short): trained again, replaced
            return None


@dataclass
class _Slot:
    value: object


@contextlib.contextmanager
def _file_lock(path: str):
    if fcntl is None:
        raise EgalError("worker processes need file locks (fcntl), which this platform lacks: use workers = 1")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    with _file_lock(os.path.join(out_dir, REPORT_LOCK)):
        yield


def _differences(before: dict, now: dict, prefix: str = "") -> list[str]:
    """What differs between two configuration identities, key by key ("loop.budget: 5 there, 6 here")."""
    out = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key, "(absent)"), now.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} there, {b!r} here")
    return out


def _holds_results(out_dir: str) -> bool:
    """Whether a run or a shared round 0 has been written into out_dir."""
    for folder, suffix in ((RUNS_DIR, ".json"), ("round0", ".json")):
        path = os.path.join(out_dir, folder)
        if os.path.isdir(path) and any(n.endswith(suffix) and ".tmp-" not in n for n in os.listdir(path)):
            return True
    return False


@contextlib.contextmanager
def _experiment_folder(config: ExperimentConfig, out_dir: str):
    """Held while a simulate uses out_dir: its configuration checked (or written) under a lock, then a shared
    lock on ACTIVE_LOCK for as long as it runs, so that another simulate can tell a running experiment from
    one whose first start failed (the only kind whose folder takes a new configuration)."""
    if fcntl is None:  # no locks: the check alone
        yield _check_or_write_config(config, out_dir, folder_idle=lambda: True)
        return
    # Two simulates started at one instant with different configurations would otherwise both find the folder
    # free, both pass, and write their runs into one table.
    with _file_lock(os.path.join(out_dir, CONFIG_LOCK)):
        warning = _check_or_write_config(config, out_dir, folder_idle=lambda: _no_other_simulate(out_dir))
        active = open(os.path.join(out_dir, ACTIVE_LOCK), "a")
        fcntl.flock(active, fcntl.LOCK_SH)
    try:
        yield warning
    finally:
        active.close()  # releases the lock


def _no_other_simulate(out_dir: str) -> bool:
    """Whether no other simulate holds out_dir's ACTIVE_LOCK (called under CONFIG_LOCK, before this one takes it)."""
    with open(os.path.join(out_dir, ACTIVE_LOCK), "a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(probe, fcntl.LOCK_UN)
    return True


def _check_or_write_config(config: ExperimentConfig, out_dir: str, folder_idle) -> str | None:
    """The folder holds this experiment's results or none: the same configuration and the same pool content
    (a pool edited in place would mix two experiments in one table), and no files of anything else.
    folder_idle(): whether no other simulate is using the folder now. Returns a warning when the folder's runs
    were made by an egal that decoded images by other rules (egal.pool.decode.DECODE_RULES)."""
    path = os.path.join(out_dir, "config.json")
    pool = config.data.path
    digest = content_digest(pool) if pool and os.path.exists(pool) else None
    rules, warning = DECODE_RULES, None
    if os.path.isfile(path):
        try:
            with open(path) as f:
                stored = json.load(f)
            if not isinstance(stored, dict):
                raise ValueError(f"a JSON {type(stored).__name__}, not an object")
            identity = stored.get("identity")
            if not (identity is None or (isinstance(identity, dict)
                                         and all(isinstance(v, dict) for v in identity.values()))):
                raise ValueError("its identity is not a table of sections")
        except (OSError, ValueError) as exc:
            raise EgalError(f"{path!r} is damaged ({exc}): use another --out folder") from None
        before = comparable_identity(stored.get("identity") or {})
        now = json.loads(json.dumps(config.identity()))
        older = content_digest(pool, with_files=False) if digest else None  # how an egal before 2026-11-27 had it
        if digest and stored.get("pool_digest") in (digest, older):  # the same pool content, wherever the file is now
            for identity in (before, now):
                identity.get("data", {}).pop("path", None)
        changed = _differences(before, now)
        listed = f"{'; '.join(changed[:4])}{'; ...' if len(changed) > 4 else ''}"
        if changed and _holds_results(out_dir):
            raise EgalError(
                f"{out_dir!r} holds results of a different experiment configuration ({listed}; see {path}): use "
                "another --out folder, or the same settings to resume")
        if changed and not folder_idle():
            raise EgalError(
                f"another egal simulate is running in {out_dir!r} with a different experiment configuration "
                f"({listed}): use another --out folder, or the same settings to run other seeds beside it")
        if not changed:  # (else a folder whose first start failed before any result: it takes this configuration)
            # An egal before 2026-11-27 recorded a pool of image files by its Parquet bytes alone: the same pool.
            if digest and stored.get("pool_digest") not in (None, digest, older):
                raise EgalError(f"the pool {pool!r} has changed since the runs in {out_dir!r} were made (its "
                                "content differs): use another --out folder, or the pool those runs were made with")
            digest = digest or stored.get("pool_digest")
            if _holds_results(out_dir):  # the rules its runs were made by stay recorded (None: before the record)
                rules = stored.get("decode_rules")
                if rules != DECODE_RULES:
                    warning = (f"the runs in {out_dir!r} were made by an egal that decoded images by other rules "
                               f"({'not recorded' if rules is None else f'version {rules}'}; now version "
                               f"{DECODE_RULES}, egal.pool.decode says what changed): new runs may see some images "
                               "otherwise than the old ones did. A pool of 8-bit images without EXIF orientation "
                               "decodes the same; for others, start a new --out folder")
    else:
        _refuse_foreign_folder(out_dir)  # again under the lock: files may have come since
    _write_json_atomic(path, {"identity": config.identity(), "config": config.to_dict(), "pool_digest": digest,
                              "decode_rules": rules})
    return warning


def _refuse_foreign_folder(out_dir: str) -> None:
    """EgalError when out_dir exists and holds files of something else than an egal simulate (it has no
    config.json and files other than egal's own: the lock files, an empty runs/, config.json's temporary name,
    which another simulate may be writing at this moment where there are no locks)."""
    if not os.path.isdir(out_dir) or os.path.isfile(os.path.join(out_dir, "config.json")):
        return
    runs, own = os.path.join(out_dir, RUNS_DIR), ("config.json",) + LOCK_FILES
    foreign = [n for n in os.listdir(out_dir)
               if not ((n == RUNS_DIR and os.path.isdir(runs) and not os.listdir(runs)) or n in own or ".tmp-" in n)]
    if foreign:
        raise EgalError(f"--out {out_dir!r} holds files ({', '.join(sorted(foreign)[:5])}) but no egal simulate "
                        "config.json: choose a new or empty folder, which simulate never overwrites")


def _write_json_atomic(path: str, payload) -> None:
    with replaced_atomically(path) as tmp, open(tmp, "w") as f:
        strict_json.dump(payload, f, indent=1)
