"""The tables of docs/figshare_diversity_cpu/summary.md from a finished (or partly finished) run of
configs/figshare_diversity_cpu.toml, on the seeds where all four strategies finished:

    python docs/figshare_diversity_cpu/make_summary.py results/figshare_diversity_cpu \\
        docs/figshare_diversity_cpu/learning_curves.png > tables.md

Final-round mean ± std, paired differences (egal.loop.stats: 95 % Student t intervals over seeds)
against egal and against random, and what the round-0 batches hold (all strategies share the
round-0 model, so those batches differ by the selection rule alone).
"""
import glob
import os
import sys

import numpy as np

from egal.loop.report import load_runs, plot_learning_curves, summarise
from egal.loop.stats import paired_differences

STRATEGIES = ["random", "egal_a0.5", "egal_a0.5+kcenter", "egal_a0.5+cluster"]
CLASSES = "glioma / meningioma / pituitary"


def mean_accuracy_over_curve(run) -> float:
    labels = [e["labels"] for e in run["rounds"]]
    return float(np.trapezoid([e["accuracy"] for e in run["rounds"]], labels) / (labels[-1] - labels[0]))


def main(out: str, curves: str | None) -> None:
    runs = load_runs(out)
    by = {}
    for run in runs:
        by.setdefault(run["strategy"], {})[run["seed"]] = run
    seeds = sorted(set.intersection(*[set(by.get(name, {})) for name in STRATEGIES]))
    print(f"Seeds with all four strategies finished: {', '.join(map(str, seeds)) or 'none'}\n")
    runs = [r for r in runs if r["seed"] in seeds and r["strategy"] in STRATEGIES]
    if not seeds:
        return
    print("| strategy | accuracy (%) | macro AUC (%) | Grad-CAM/ROI Dice (%) | mean accuracy over the curve (%) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in STRATEGIES:
        values = [[100 * by[name][s]["rounds"][-1][m] for s in seeds] for m in ("accuracy", "auc", "dice")]
        values.append([100 * mean_accuracy_over_curve(by[name][s]) for s in seeds])
        spread = [np.std(v, ddof=1) if len(v) > 1 else float("nan") for v in values]
        print(f"| {name} | " + " | ".join(f"{np.mean(v):.1f} ± {d:.1f}" for v, d in zip(values, spread, strict=True))
              + " |")
    for baseline in ("egal_a0.5", "random"):
        print(f"\nPaired differences, strategy minus {baseline}, percentage points: mean [95 % t interval], "
              f"n = {len(seeds)} seeds\n")
        print("| strategy | accuracy at 570 | accuracy, mean over the curve | AUC at 570 | Dice at 570 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name in STRATEGIES:
            if name == baseline:
                continue
            cells = []
            for metric, at in (("accuracy", "final"), ("accuracy", "aulc"), ("auc", "final"), ("dice", "final")):
                row = next(r for r in paired_differences(runs, baseline, metric, at, resamples=0)
                           if r["strategy"] == name)
                cells.append(f"{100 * row['mean']:+.1f} [{100 * row['t_low']:+.1f}, {100 * row['t_high']:+.1f}]")
            print(f"| {name} | " + " | ".join(cells) + " |")
    cache = glob.glob(os.path.join(out, "..", "cache", "figshare_brain_tumor.parquet-*-224x224c1-label-cv_fold.npz"))
    with np.load(cache[0], allow_pickle=False) as z:
        label_of = dict(zip(z["ids"].tolist(), z["labels"].tolist(), strict=True))
    print("\nThe round-0 batch (one model for all): rows also in egal's top 60, and its classes "
          f"({CLASSES}), mean over seeds\n")
    print(f"| strategy | rows also in egal's top 60 | classes ({CLASSES}) |")
    print("| --- | ---: | --- |")
    for name in STRATEGIES:
        overlap, classes = [], []
        for s in seeds:
            batch = by[name][s]["rounds"][0]["selected"]
            overlap.append(len(set(by["egal_a0.5"][s]["rounds"][0]["selected"]) & set(batch)))
            classes.append(np.bincount([label_of[i] for i in batch], minlength=3))
        c = np.mean(classes, axis=0)
        print(f"| {name} | {np.mean(overlap):.1f} | {c[0]:.1f} / {c[1]:.1f} / {c[2]:.1f} |")
    if curves:
        title = f"Figshare, pretrained CPU learner: diverse batches, seeds {', '.join(map(str, seeds))}"
        plot_learning_curves(summarise(runs), curves, title=title)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/figshare_diversity_cpu",
         sys.argv[2] if len(sys.argv) > 2 else None)
