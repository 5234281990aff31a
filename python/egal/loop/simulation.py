"""The active-learning simulation: seed set, then rounds of train -> score -> select -> reveal.

Every strategy of a seed starts from the same class-balanced seed set and
trains with the same per-round training seed; only the selection differs. The
loop keeps the pool's labels in a `HiddenLabels` oracle that hands out a label
only once its row has been selected; strategies get images, ROIs and ids.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import Optional

import numpy as np

from ..train import train_model
from .config import ExperimentConfig
from .data import Dataset, load_dataset
from .metrics import evaluate
from ..progress import Progress
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
                 config: ExperimentConfig, *, seed_set: np.ndarray, progress: Optional[Progress] = None) -> dict:
    """One (strategy, seed) run over all rounds, starting from `seed_set` (positions in pool,
    see draw_seed_set); returns its record (JSON-ready)."""
    loop = config.loop
    progress = progress or Progress(0, enabled=False)
    pool_labels = HiddenLabels(dataset.labels[pool])
    labelled = np.sort(np.asarray(seed_set, dtype=np.int64))
    pool_labels.reveal(labelled)
    selection_rng = np.random.default_rng([seed, 1])
    test_images, test_masks, test_labels = dataset.images[test], dataset.masks[test], dataset.labels[test]
    record = {"strategy": strategy.name, "kind": strategy.kind, "alpha": strategy.alpha, "seed": seed,
              "seed_set": dataset.ids[pool[labelled]].tolist(), "rounds": []}
    for r in range(loop.rounds + 1):
        rows = pool[labelled]
        train_config = replace(config.train, seed=seed * 1000 + r)
        model, history = train_model(dataset.images[rows], dataset.masks[rows], pool_labels.labels(labelled),
                                     dataset.classes, train_config)
        metrics = evaluate(model, test_images, test_masks, test_labels, batch_size=loop.score_batch_size)
        entry = {"round": r, "labels": int(len(labelled)), **metrics, "train_seconds": round(history.seconds, 2),
                 "final_train_loss": history.epoch_loss[-1] if history.epoch_loss else None, "selected": []}
        if r < loop.rounds:
            unlabelled = np.setdiff1d(np.arange(len(pool)), labelled)
            if len(unlabelled) == 0:
                record["rounds"].append(entry)
                break
            start = time.perf_counter()
            rows_u = pool[unlabelled]
            chosen = strategy.select(model, dataset.images[rows_u], dataset.masks[rows_u], dataset.ids[rows_u],
                                     loop.budget, selection_rng, batch_size=loop.score_batch_size)
            picked = unlabelled[chosen]
            pool_labels.reveal(picked)
            labelled = np.sort(np.concatenate([labelled, picked]))
            entry["selected"] = dataset.ids[pool[picked]].tolist()
            entry["select_seconds"] = round(time.perf_counter() - start, 2)
        record["rounds"].append(entry)
        progress.advance(1, f"{strategy.name} s{seed} r{r}")
        progress.log(f"{strategy.name} seed {seed} round {r}/{loop.rounds}: {entry['labels']} labels, "
                     f"acc {metrics['accuracy']:.3f} auc {metrics['auc']:.3f} dice {metrics['dice']:.3f} "
                     f"(train {history.seconds:.1f} s)")
    return record


def run_simulation(config: ExperimentConfig, out_dir, *, dataset: Optional[Dataset] = None,
                   progress: bool = True) -> dict:
    """Run every (strategy, seed) not already in out_dir/runs, then write the report.

    Returns {"ran": [...], "skipped": [...], "report": {...paths}}. Finished runs
    are written atomically, so a killed simulation resumes where it stopped.
    """
    from .report import write_report

    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, RUNS_DIR), exist_ok=True)
    _check_or_write_config(config, out_dir)
    if config.loop.threads:
        import torch

        torch.set_num_threads(config.loop.threads)
    if dataset is None:
        dataset = load_dataset(config.data.path, config.train.input_size, config.train.in_channels,
                               label_column=config.data.label_column, group_column=config.data.group_column,
                               cache_dir=config.data.cache_dir)
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
                 f"{len(todo)} run(s) to do, {len(skipped)} already done")
    ran = []
    try:
        for strategy, seed, path in todo:
            seed_set = draw_seed_set(dataset, pool, seed, config)
            record = run_strategy(dataset, pool, test, strategy, seed, config, seed_set=seed_set, progress=reporter)
            record["test_rows"] = int(len(test))
            record["pool_rows"] = int(len(pool))
            _write_json_atomic(path, record)
            ran.append((strategy.name, seed))
    finally:
        reporter.close()
    report = write_report(out_dir)
    return {"ran": ran, "skipped": [(s.name, seed) for s, seed, _ in skipped], "report": report}


def run_path(out_dir, strategy_name: str, seed: int) -> str:
    return os.path.join(out_dir, RUNS_DIR, f"{strategy_name}__seed{seed}.json")


def _check_or_write_config(config: ExperimentConfig, out_dir: str) -> None:
    path = os.path.join(out_dir, "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            stored = json.load(f)
        if stored.get("identity") != json.loads(json.dumps(config.identity())):
            raise ValueError(
                f"{out_dir!r} holds results of a different experiment configuration (see {path}); "
                "use another --out folder, or the same settings to resume"
            )
    _write_json_atomic(path, {"identity": config.identity(), "config": config.to_dict()})


def _write_json_atomic(path: str, payload) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)
