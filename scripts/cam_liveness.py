"""How often is a prototypical network's Grad-CAM all zero, and does the head's logit form decide it?

A prototypical head scores class c by -||e - p_c||^2 (e = E f + e0, f the pooled map). Softmax does not
change when every logit gets the same per-image term, and -||e - p_c||^2 = 2 e.p_c - ||p_c||^2 - ||e||^2:
the -||e||^2 is the same for all classes. It changes no probability, but it is in each class's gradient
(d/df = -2 E^T (e - p_c), against 2 E^T p_c for the linear form): a term that grows with the image's own
embedding and pulls every channel weight the same way. This script measures what that does to Grad-CAM
on real data, with both forms computed from the same trained model: the share of validation images whose
map is all zero (after Grad-CAM's ReLU), and the mean soft Dice of the maps with the ROI.

It trains round 0 of seed 0 of an experiment config (its seed set, its training settings; the training's
Dice term uses egal's head as it is, the linear form since 2026-11-27), then looks at rows of the pool that
are neither in the seed set nor in the test groups: a validation split, so nothing here is chosen by
looking at test results.

    python scripts/cam_liveness.py configs/figshare_gpu_lite0.toml --device cpu --precision fp32 --rows 300
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np
import torch

import egal
from egal.loop.config import load_config
from egal.loop.data import load_experiment_dataset
from egal.loop.rounds import draw_seed_set
from egal.loop.splits import split_test
from egal.train import train_model


def grad_cam_weights(model, pooled, pred, form: str):  # [B, K], [B] -> [B, K] (before the 1 / (h w))
    head = model.head
    if form == "distance":  # d/df of -||e - p||^2 with its -||e||^2 term, as before 2026-11-27
        return -2.0 * (head.embed(pooled) - head.prototypes[pred]) @ head.embedding.weight
    return head.logit_gradient(pooled, pred)  # egal's head: 2 E^T p


@torch.no_grad()
def measure(model, images, masks, batch: int = 64) -> dict:
    model.eval()
    out = {}
    for form in ("distance", "linear"):
        dead, dice = [], []
        for s in range(0, len(images), batch):
            maps = model.feature_map(torch.as_tensor(images[s:s + batch]))  # [b, K, h, w]
            pooled = model.pool(maps)
            logits = model.head(pooled)
            pred = logits.argmax(1)
            h, w = maps.shape[2:]
            weights = grad_cam_weights(model, pooled, pred, form) / (h * w)
            r = egal.score_batch(maps.numpy(), logits.numpy(), masks[s:s + batch], weights=weights.numpy(),
                                 return_cam=True)
            dead.append(r.cam.reshape(len(r.cam), -1).max(axis=1) == 0)
            dice.append(1.0 - r.misalignment)
        dead, dice = np.concatenate(dead), np.concatenate(dice)
        out[form] = {"all_zero_share": float(dead.mean()), "mean_soft_dice": float(np.nanmean(dice))}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"))
    parser.add_argument("--rows", type=int, default=300, help="validation rows to measure on")
    parser.add_argument("--epochs", type=int, help="instead of the config's")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    config = load_config(args.config)
    train = replace(config.train, device=args.device, seed=0)
    if args.precision:
        train = replace(train, precision=args.precision)
    if args.epochs is not None:
        train = replace(train, epochs=args.epochs)
    data = load_experiment_dataset(config)
    pool, _test = split_test(data.labels, data.groups, test_groups=config.data.test_groups,
                             test_fraction=config.data.test_fraction, seed=config.data.split_seed)
    seed_rows = pool[draw_seed_set(data, pool, 0, config)]
    rest = np.setdiff1d(pool, seed_rows)
    validation = np.random.default_rng(1).choice(rest, size=min(args.rows, len(rest)), replace=False)
    has_roi = data.masks[validation].reshape(len(validation), -1).any(axis=1)
    validation = validation[has_roi]
    results = {"config": args.config, "device": args.device, "precision": train.precision, "epochs": train.epochs,
               "seed_rows": int(len(seed_rows)), "validation_rows": int(len(validation))}
    start = time.perf_counter()
    model, history = train_model(data.images[seed_rows], data.masks[seed_rows], data.labels[seed_rows],
                                 data.classes, train)
    results["train_seconds"] = round(time.perf_counter() - start, 1)
    results["final_train_loss"] = history.epoch_loss[-1] if history.epoch_loss else None
    model = model.to("cpu").float()
    results["trained"] = measure(model, data.images[validation], data.masks[validation])
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
