"""Does the misalignment term see the shortcut? Round 0 of a shortcut-benchmark experiment, looked at directly.

The paper's mechanism: a model that is right for the wrong reason is confident and looks away from the
lesion, so the misalignment term should rank its images high. The shortcut benchmark (egal.loop.shortcut)
plants such images: a bright marker in half of one class's pool images. This script takes each seed's
round-0 model of a finished (or running) `egal simulate` folder, the model every strategy starts from, and
scores the unlabelled pool it selects its first batch from (pool rows only: no test row is looked at):

- per criterion (entropy, misalignment, the EG-AL score at the config's alpha): the share of marked images
  in its top `budget`, against their share of the unlabelled pool, and the ROC AUC with which the
  criterion separates the marked images of the marker's class from its unmarked ones (0.5: blind to it);
- where each Grad-CAM looks: the share of its mass (upsampled as docs/scoring.md does) on the marker and on
  the tumour ROI, beside their share of the image's area (what a map spread evenly would put there).

    python scripts/shortcut_mechanism.py configs/figshare_shortcut_cpu.toml results/figshare_shortcut_cpu_headfix
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from egal.loop.config import load_config
from egal.loop.data import load_experiment_dataset
from egal.loop.rounds import draw_seed_set
from egal.loop.scoring import score_in_batches
from egal.loop.simulation import prepare_experiment
from egal.models import load_model
from egal.progress import Progress


def marker_masks(original: np.ndarray, marked: np.ndarray) -> np.ndarray:  # [N, C, H, W] x2 -> [N, H, W] uint8
    return (original != marked).any(axis=1).astype(np.uint8)


def mass_share(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:  # [N, h, w], [N, H, W] -> [N]
    """The share of each Grad-CAM's mass inside a mask, the map upsampled as docs/scoring.md step 5 does
    (PyTorch's bilinear rule). A map spread evenly has the mask's area share; one on the mask has 1."""
    import torch

    up = torch.nn.functional.interpolate(torch.as_tensor(cams[:, None], dtype=torch.float64), size=masks.shape[1:],
                                         mode="bilinear", align_corners=False)[:, 0].numpy()
    return (up * masks).sum(axis=(1, 2)) / np.maximum(up.sum(axis=(1, 2)), 1e-12)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    values = np.concatenate([positive, negative])
    return float(roc_auc_score(np.r_[np.ones(len(positive)), np.zeros(len(negative))], values))


def seed_report(experiment, config, original_images, seed: int, model_path: str) -> dict:
    e = experiment
    labelled = draw_seed_set(e.dataset, e.pool, seed, config)
    unlabelled = np.setdiff1d(np.arange(len(e.pool)), labelled)
    rows = e.pool[unlabelled]
    model = load_model(model_path)
    alpha = config.loop.alpha
    scores = score_in_batches(model, None if e.features is not None else e.dataset.images[rows], e.dataset.masks[rows],
                              alpha=alpha, batch_size=config.loop.score_batch_size,
                              features=None if e.features is None else e.features.subset(rows), return_cam=True)
    marked = e.shortcut.marked[rows]
    target = e.dataset.labels[rows] == e.shortcut.target
    budget = config.loop.budget
    criteria = {"entropy": scores.entropy_norm, "misalignment": scores.misalignment, f"egal_a{alpha}": scores.score}
    out = {"seed": seed, "unlabelled": int(len(rows)), "marked_share_of_unlabelled": float(marked.mean()),
           "criteria": {}}
    for name, values in criteria.items():
        ranked = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")[:budget]
        out["criteria"][name] = {
            "marked_share_of_top": float(marked[ranked].mean()),
            "auc_marked_vs_unmarked_in_class": auc(values[target & marked], values[target & ~marked]),
            "mean_marked": float(np.nanmean(values[marked])),
            "mean_unmarked_in_class": float(np.nanmean(values[target & ~marked])),
            "mean_other_classes": float(np.nanmean(values[~target])),
        }
    cams = scores.cam[marked]
    marker = marker_masks(original_images[rows[marked]], e.dataset.images[rows[marked]])
    tumour = e.dataset.masks[rows[marked]]
    out["marked_images"] = {
        "n": int(marked.sum()),
        "predicted_as_marker_class": float(np.mean(scores.pred[marked] == e.shortcut.target)),
        "cam_dice_with_tumour": float(np.nanmean(1.0 - scores.misalignment[marked])),
        "cam_mass_on_marker": float(np.mean(mass_share(cams, marker))),
        "marker_share_of_image": float(marker.mean()),
        "cam_mass_on_tumour": float(np.mean(mass_share(cams, tumour))),
        "tumour_share_of_image": float(tumour.mean()),
    }
    unmarked_in_class = target & ~marked
    tumour = e.dataset.masks[rows[unmarked_in_class]]
    out["unmarked_images_of_the_class"] = {
        "n": int(unmarked_in_class.sum()),
        "cam_dice_with_tumour": float(np.nanmean(1.0 - scores.misalignment[unmarked_in_class])),
        "cam_mass_on_tumour": float(np.mean(mass_share(scores.cam[unmarked_in_class], tumour))),
        "tumour_share_of_image": float(tumour.mean()),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the experiment's config file (with a [shortcut] section)")
    parser.add_argument("folder", help="its egal simulate --out folder (round0/seedN.pt are read)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    config = load_config(args.config)
    if not config.shortcut.enabled:
        parser.error(f"{args.config} has no [shortcut] section")
    original = load_experiment_dataset(config).images  # [N, C, H, W] before the marker is burnt in
    experiment = prepare_experiment(config, args.folder, None, Progress(0, enabled=False), announce=False)
    reports = []
    for seed in config.loop.seeds:
        path = os.path.join(args.folder, "round0", f"seed{seed}.pt")
        if not os.path.isfile(path):
            print(f"seed {seed}: no {path} (round 0 not trained yet): skipped")
            continue
        reports.append(seed_report(experiment, config, original, seed, path))
        r = reports[-1]
        m = r["marked_images"]
        u = r["unmarked_images_of_the_class"]
        print(f"seed {seed}: {r['unlabelled']} unlabelled rows, {100 * r['marked_share_of_unlabelled']:.1f} % marked")
        pct = {k: 100 * v for k, v in {**m, **{f"u_{k}": v for k, v in u.items()}}.items()}
        print(f"  marked images ({m['n']}): {pct['predicted_as_marker_class']:.0f} % called the marker's class; "
              f"CAM mass on the marker {pct['cam_mass_on_marker']:.2f} % (its area "
              f"{pct['marker_share_of_image']:.2f} %), on the tumour {pct['cam_mass_on_tumour']:.1f} % (area "
              f"{pct['tumour_share_of_image']:.1f} %); CAM Dice with the tumour {pct['cam_dice_with_tumour']:.1f} %")
        print(f"  unmarked images of the class ({u['n']}): CAM mass on the tumour {pct['u_cam_mass_on_tumour']:.1f} "
              f"% (area {pct['u_tumour_share_of_image']:.1f} %); CAM Dice with the tumour "
              f"{pct['u_cam_dice_with_tumour']:.1f} %")
        for name, c in r["criteria"].items():
            print(f"  {name:>13}: marked share of top {config.loop.budget} {100 * c['marked_share_of_top']:5.1f} %, "
                  f"AUC marked vs unmarked in class {c['auc_marked_vs_unmarked_in_class']:.3f}, mean marked "
                  f"{c['mean_marked']:.3f} / unmarked in class {c['mean_unmarked_in_class']:.3f} / other classes "
                  f"{c['mean_other_classes']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)


if __name__ == "__main__":
    main()
