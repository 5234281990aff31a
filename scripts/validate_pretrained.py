"""Choose the pretrained CPU configuration on a validation split: folds 1-3 train, fold 4 validates.

Fold 5 (the experiments' test set) is never read for a decision: its rows are only
run through the frozen prefix so that the experiment can reuse the feature cache.
For each trainable depth, trains EfficientNet-Lite0 (ImageNet, 224 px grey) on
150, 570 and all labelled rows of folds 1-3 and reports fold-4 accuracy and the
seconds per training, the two things the configuration is chosen by.

    python scripts/validate_pretrained.py --out results/validation
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np
import torch

from egal.loop import load_config
from egal.loop.data import load_experiment_dataset
from egal.loop.metrics import evaluate
from egal.loop.splits import balanced_seed_set
from egal.train import build_feature_cache, train_model
from egal.train.trainer import cached_views, new_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/figshare_pretrained_cpu.toml")
    parser.add_argument("--cuts", default="features.head,features.blocks.15")
    parser.add_argument("--epochs", default="15")
    parser.add_argument("--sizes", default="150,570,all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/validation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    data = load_experiment_dataset(config)
    train_rows = np.flatnonzero(np.isin(data.groups, ["1", "2", "3"]))
    val_rows = np.flatnonzero(data.groups == "4")
    os.makedirs(args.out, exist_ok=True)
    results = []
    for cut in args.cuts.split(","):
        train_config = replace(config.train, trainable_from=cut)
        model = new_model(train_config, data.classes)
        start = time.perf_counter()
        cache = build_feature_cache(model, data.images, cut, views=cached_views(train_config),
                                    cache_dir=config.data.cache_dir)
        cache_seconds = time.perf_counter() - start
        for epochs in (int(e) for e in args.epochs.split(",")):
            for size in args.sizes.split(","):
                rng = np.random.default_rng([0, 0])
                if size == "all":
                    rows = train_rows
                else:
                    rows = train_rows[balanced_seed_set(data.labels[train_rows], int(size), rng)]
                tc = replace(train_config, epochs=epochs, seed=0)
                start = time.perf_counter()
                model, _ = train_model(None, data.masks[rows], data.labels[rows], data.classes, tc,
                                       features=cache.subset(rows))
                seconds = time.perf_counter() - start
                metrics = evaluate(model, None, data.masks[val_rows], data.labels[val_rows],
                                   features=cache.subset(val_rows))
                row = {"trainable_from": cut, "epochs": epochs, "labels": len(rows),
                       "val_accuracy": metrics["accuracy"],
                       "val_auc": metrics["auc"], "val_dice": metrics["dice"], "train_seconds": round(seconds, 1),
                       "cache_seconds": round(cache_seconds, 1), "threads": args.threads}
                print(json.dumps(row), flush=True)
                results.append(row)
                with open(os.path.join(args.out, "validation.json"), "w") as f:
                    json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
