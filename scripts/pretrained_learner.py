"""Learner quality of an experiment configuration: train on every pool row, measure on the test fold.

Trains the configuration's model on all labelled pool rows (Figshare: folds 1-4,
2,400 slices) for each seed and beta, and reports test accuracy, macro AUC and
Grad-CAM/ROI Dice, next to the Dice that the ROI itself reaches at the CAM's
resolution (egal.loop.metrics.roi_cam_dice). Nothing here feeds back into the
settings: they were fixed on the validation split (scripts/validate_pretrained.py).

    python scripts/pretrained_learner.py --config configs/figshare_pretrained_cpu.toml --seeds 0,1,2 --betas 0.5,0
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np
import torch

from egal.loop import load_config, split_test
from egal.loop.data import load_experiment_dataset
from egal.loop.metrics import evaluate, roi_cam_dice
from egal.loop.simulation import _cam_size
from egal.train import build_feature_cache, train_model
from egal.train.trainer import cached_views, new_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/figshare_pretrained_cpu.toml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--betas", default="0.5,0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/pretrained_learner.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    data = load_experiment_dataset(config)
    pool, test = split_test(data.labels, data.groups, test_groups=config.data.test_groups,
                            test_fraction=config.data.test_fraction, seed=config.data.split_seed)
    cache = None
    if config.train.trainable_from:
        cache = build_feature_cache(new_model(config.train, data.classes), data.images, config.train.trainable_from,
                                    views=cached_views(config.train), cache_dir=config.data.cache_dir)
    results = {"config": args.config, "pool_rows": int(len(pool)), "test_rows": int(len(test)),
               "roi_cam_dice": roi_cam_dice(data.masks[test], _cam_size(config)), "runs": []}
    for beta in (float(b) for b in args.betas.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            train_config = replace(config.train, beta=beta, seed=seed)
            start = time.perf_counter()
            model, _ = train_model(None if cache else data.images[pool], data.masks[pool], data.labels[pool],
                                   data.classes, train_config, features=cache.subset(pool) if cache else None)
            seconds = time.perf_counter() - start
            metrics = evaluate(model, None if cache else data.images[test], data.masks[test], data.labels[test],
                               features=cache.subset(test) if cache else None)
            row = {"beta": beta, "seed": seed, **metrics, "train_seconds": round(seconds, 1)}
            print(json.dumps(row), flush=True)
            results["runs"].append(row)
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
    for beta in sorted({r["beta"] for r in results["runs"]}, reverse=True):
        rows = [r for r in results["runs"] if r["beta"] == beta]
        summary = {m: (100 * np.mean([r[m] for r in rows]),
                       100 * np.std([r[m] for r in rows], ddof=1) if len(rows) > 1 else 0.0)
                   for m in ("accuracy", "auc", "dice")}
        print(f"beta {beta:g}, {len(rows)} seed(s): "
              + ", ".join(f"{m} {v[0]:.1f} +- {v[1]:.1f}" for m, v in summary.items()))
    print(f"ROI at the CAM's resolution: Dice {100 * results['roi_cam_dice']:.1f}")


if __name__ == "__main__":
    main()
