"""One strategy's rounds of a seed: seed set, then rounds of train -> score -> select -> reveal.

Every strategy of a seed starts from the same class-balanced seed set and
trains with the same per-round training seed; only the selection differs. The
loop keeps the pool's labels in a `HiddenLabels` oracle that hands out a label
only once its row has been selected; strategies get images, ROIs and ids.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ..progress import Progress
from ..train import train_model
from ..train.feature_cache import FeatureCache
from .config import ExperimentConfig
from .data import Dataset
from .first_rounds import FirstRounds
from .metrics import evaluate
from .shortcut import ShortcutData
from .splits import balanced_seed_set
from .strategies import Strategy


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

