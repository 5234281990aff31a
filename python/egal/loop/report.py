"""Tables and learning curves from the finished runs in an output folder."""
from __future__ import annotations

import csv
import glob
import json
import math
import os
from collections import defaultdict

import numpy as np

from .. import _json as strict_json
from .._checks import is_int, is_real
from ..errors import EgalError
from .folder import CURVES_PNG, PAIRED_CSV, ROUNDS_CSV, ROUNDS_JSON, RUNS_DIR, SHORTCUT_PNG, SUMMARY_CSV, SUMMARY_MD

METRICS = ("accuracy", "auc", "dice")
# The shortcut benchmark's per-round figures (egal.loop.shortcut), present only when it ran.
SHORTCUT_METRICS = ("marker_accuracy", "marker_as_target", "selected_marked_share", "unlabelled_marked_share")
ROUND_FIELDS = ("strategy", "seed", "round", "labels", "accuracy", "auc", "dice", "train_seconds") + SHORTCUT_METRICS


def load_runs(out_dir) -> list:
    """Every run record of an experiment folder; EgalError when two records hold one (strategy, seed), as
    merging two folders can leave them (each would count twice in every mean)."""
    runs, seen = [], {}
    for path in sorted(glob.glob(os.path.join(os.fspath(out_dir), RUNS_DIR, "*.json"))):
        run = read_run(path)
        key = (run["strategy"], run.get("seed"))
        if key in seen:
            raise EgalError(f"run files {seen[key]!r} and {path!r} both hold strategy {key[0]!r} with seed {key[1]}: "
                            "delete one (two folders merged?); nothing was summarised")
        seen[key] = path
        runs.append(run)
    return runs


def read_run(path) -> dict:
    """One (strategy, seed) run's record; EgalError naming the file when it is damaged (cut short, edited)."""
    try:
        with open(path) as f:
            run = json.load(f)
        if not isinstance(run, dict) or not isinstance(run.get("rounds"), list) or "strategy" not in run:
            raise ValueError("not a run record: no strategy or rounds")
        for entry in run["rounds"]:
            if not isinstance(entry, dict) or not all(is_int(entry.get(k)) for k in ("round", "labels")):
                raise ValueError("a round without its number or its count of labels")
            # null (NaN: a Dice without ROIs) or, in files written before strict JSON, a bare NaN
            bad = [m for m in METRICS if not (entry.get(m) is None or is_real(entry.get(m)) or _is_nan(entry.get(m)))]
            if bad:
                raise ValueError(f"round {entry['round']}: {bad[0]} is {entry[bad[0]]!r}, not a number")
    except (OSError, ValueError) as exc:
        raise EgalError(f"run file {os.fspath(path)!r} is damaged ({exc}): delete it, and egal simulate with the "
                        "same --out runs that strategy and seed again") from None
    return run


def _is_nan(value) -> bool:
    return isinstance(value, float) and value != value


def summarise(runs) -> list:
    """One row per (strategy, round): labels, number of seeds, and per metric the mean and
    the sample standard deviation over seeds (ddof=1; NaN, shown n/a, with a single seed: undefined, not 0)."""
    cells = defaultdict(list)
    for run in runs:
        for entry in run["rounds"]:
            cells[(run["strategy"], entry["round"], entry["labels"])].append(entry)
    rows = []
    for (strategy, rnd, labels), entries in sorted(cells.items(), key=lambda kv: (_strategy_order(kv[0][0]), kv[0][1])):
        row = {"strategy": strategy, "round": rnd, "labels": labels, "seeds": len(entries)}
        for metric in METRICS + SHORTCUT_METRICS:
            if metric in SHORTCUT_METRICS and not any(metric in e for e in entries):
                continue
            values = np.array([e.get(metric, np.nan) for e in entries], dtype=np.float64)
            row[f"{metric}_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            row[f"{metric}_std"] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else math.nan
        rows.append(row)
    return rows


def write_report(out_dir) -> dict:
    """rounds.csv / rounds.json (every run, every round), summary.csv and summary.md
    (mean +- std over seeds per strategy and round; paired differences vs random with
    95 % intervals, also in paired.csv), learning_curves.png."""
    out_dir = os.fspath(out_dir)
    runs = load_runs(out_dir)
    paths = {}
    if not runs:
        return paths
    shortcut = any("marker_accuracy" in e for r in runs for e in r["rounds"])
    round_fields = ROUND_FIELDS if shortcut else ROUND_FIELDS[:-len(SHORTCUT_METRICS)]
    flat = [{"strategy": r["strategy"], "seed": r["seed"], **{k: e.get(k) for k in round_fields[2:]}}
            for r in runs for e in r["rounds"]]
    paths["rounds_csv"] = _write_csv(os.path.join(out_dir, ROUNDS_CSV), flat, round_fields)
    paths["rounds_json"] = os.path.join(out_dir, ROUNDS_JSON)
    with open(paths["rounds_json"], "w") as f:
        strict_json.dump(flat, f, indent=1)
    summary = summarise(runs)
    fields = ["strategy", "round", "labels", "seeds"] + [
        f"{m}_{s}" for m in METRICS + (SHORTCUT_METRICS if shortcut else ()) for s in ("mean", "std")]
    paths["summary_csv"] = _write_csv(os.path.join(out_dir, SUMMARY_CSV), summary, fields)
    paths["summary_md"] = os.path.join(out_dir, SUMMARY_MD)
    with open(paths["summary_md"], "w") as f:
        f.write(markdown_table(summary))
        f.write("\n\nFinal round:\n\n")
        last_round = {}
        for r in summary:
            last_round[r["strategy"]] = max(last_round.get(r["strategy"], r["round"]), r["round"])
        f.write(markdown_table([r for r in summary if r["round"] == last_round[r["strategy"]]]))
        f.write("\n")
        short = budget_shortfalls(runs)
        if short:
            f.write("\n" + "\n".join(f"Note: {line}" for line in short) + "\n")
        if shortcut:
            f.write("\n## Shortcut benchmark\n\n" + shortcut_table(summary) + "\n\n" + marked_selection_table(runs)
                    + "\n")
    if shortcut:
        paths["shortcut_png"] = plot_shortcut(summary, os.path.join(out_dir, SHORTCUT_PNG))
    paths.update(write_paired(out_dir, runs, paths["summary_md"]))
    paths["curves_png"] = plot_learning_curves(summary, os.path.join(out_dir, CURVES_PNG))
    return paths


def budget_shortfalls(runs) -> list[str]:
    """A line per strategy whose rounds selected fewer rows than the budget while unlabelled rows were left (a
    group cap with few groups): its label counts are not the other strategies'."""
    short = defaultdict(lambda: [0, 0, set()])  # strategy -> [rounds short, rows missing, seeds]
    for run in runs:
        for entry in run["rounds"]:
            if entry.get("budget_shortfall"):
                cell = short[run["strategy"]]
                cell[0] += 1
                cell[1] += int(entry["budget_shortfall"])
                cell[2].add(run.get("seed"))
    return [f"{strategy} selected fewer rows than the budget in {rounds} round(s) of {len(seeds)} seed(s), "
            f"{missing} rows in all (a group cap with fewer groups than the budget?): its rounds end at fewer "
            "labels than the others', and paired 'final' rows compare the last label count both reached"
            for strategy, (rounds, missing, seeds) in sorted(short.items())]


def write_paired(out_dir, runs, summary_md, baseline: str = "random") -> dict:
    """paired.csv (every strategy vs `baseline`: accuracy, AUC and Dice, final and AULC, with
    t and bootstrap 95 % intervals; egal.loop.stats) and the same as a section appended to
    summary_md. Nothing (and {}) when the runs have no `baseline` strategy or nothing to compare."""
    from .stats import PAIRED_FIELDS, paired_csv_rows, paired_markdown, paired_report

    rows = paired_report(runs, baseline)
    if not rows:
        return {}
    path = _write_csv(os.path.join(os.fspath(out_dir), PAIRED_CSV), paired_csv_rows(rows), PAIRED_FIELDS)
    with open(summary_md, "a") as f:
        f.write("\n" + paired_markdown(rows, baseline) + "\n")
    return {"paired_csv": path}


def markdown_table(summary) -> str:
    lines = ["| strategy | round | labels | seeds | accuracy | macro AUC | Grad-CAM Dice |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary:
        cells = [percent(r[f"{m}_mean"], r[f"{m}_std"]) or "n/a" for m in METRICS]  # n/a: no ROI to measure
        lines.append(f"| {r['strategy']} | {r['round']} | {r['labels']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shortcut_table(summary) -> str:
    """Per strategy and round: clean and marker test accuracy, how often the marker test rows were called
    the marker's class, and the share of marked images in the round's selection against their share in
    the unlabelled pool (what random selection would pick on average)."""
    lines = ["| strategy | round | labels | clean test acc | marker test acc | marker rows called the marker class | "
             "marked share of selection | marked share of unlabelled pool |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary:
        cells = [percent(r[f"{m}_mean"], r[f"{m}_std"]) if f"{m}_mean" in r else ""
                 for m in ("accuracy",) + SHORTCUT_METRICS]
        lines.append(f"| {r['strategy']} | {r['round']} | {r['labels']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def marked_selection(runs, baseline: str = "random") -> list:
    """Per strategy: the share of marked images among all the images it selected over the rounds (mean and std
    over seeds), the marked share of the unlabelled pool at round 0 (what random selection picks on average),
    and the paired per-seed difference to `baseline` (egal.loop.stats.interval_stats; None for the baseline)."""
    from .stats import interval_stats

    def share(run):  # marked images among all selected, over the rounds that selected
        entries = [e for e in run["rounds"] if e.get("selected") and e.get("selected_marked_share") is not None]
        picked = sum(len(e["selected"]) for e in entries)
        return sum(e["selected_marked_share"] * len(e["selected"]) for e in entries) / picked if picked else math.nan

    by, pool_share = defaultdict(dict), defaultdict(list)
    for run in runs:
        by[run["strategy"]][run["seed"]] = share(run)
        first = run["rounds"][0] if run["rounds"] else {}
        if first.get("unlabelled_marked_share") is not None:
            pool_share[run["strategy"]].append(first["unlabelled_marked_share"])
    rows = []
    for strategy in sorted(by, key=_strategy_order):
        values = np.array([v for v in by[strategy].values() if math.isfinite(v)])
        paired = None
        if strategy != baseline and baseline in by:
            seeds = sorted(s for s in set(by[strategy]) & set(by[baseline])
                           if math.isfinite(by[strategy][s]) and math.isfinite(by[baseline][s]))
            paired = interval_stats([by[strategy][s] - by[baseline][s] for s in seeds])
        rows.append({"strategy": strategy, "seeds": len(values),
                     "mean": float(values.mean()) if len(values) else math.nan,
                     "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                     "pool_share": float(np.mean(pool_share[strategy])) if pool_share[strategy] else math.nan,
                     "paired": paired})
    return rows


def marked_selection_table(runs, baseline: str = "random") -> str:
    """marked_selection as a markdown table, in percent."""
    lines = ["Marked images among all selected, over the rounds (mean ± std over seeds, %):", "",
             f"| strategy | seeds | marked share of all selections | marked share of the pool at round 0 | "
             f"minus {baseline}, paired (pp, 95 % t CI) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in marked_selection(runs, baseline):
        lines.append(f"| {r['strategy']} | {r['seeds']} | {percent(r['mean'], r['std'])} | "
                     f"{percent(r['pool_share'])} | {paired_text(r['paired'])} |")
    return "\n".join(lines)


def paired_text(paired) -> str:
    """A paired difference in points with its 95 % t interval ("" without one: fewer than 2 seeds)."""
    if not paired or paired["n"] < 2:
        return ""
    return (f"{100 * paired['mean']:+.1f} [{100 * paired['t_low']:+.1f}, {100 * paired['t_high']:+.1f}] "
            f"(n = {paired['n']})")


def percent(value, std=None) -> str:
    """A share in percent, with its std over seeds ('n/a' where one seed leaves it undefined); '' for NaN."""
    if not math.isfinite(value):
        return ""
    if std is None:
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} ± " + (f"{100 * std:.1f}" if math.isfinite(std) else "n/a")


def plot_shortcut(summary, path) -> str:
    """Marker test accuracy against labels, and the marked share of each round's selection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    panels = (("accuracy", "clean test accuracy (%)"), ("marker_accuracy", "marker test accuracy (%)"),
              ("selected_marked_share", "marked images in the selection (%)"))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for strategy in sorted({r["strategy"] for r in summary}, key=_strategy_order):
            rows = sorted((r for r in summary
                           if r["strategy"] == strategy and np.isfinite(r.get(f"{metric}_mean", np.nan))),
                          key=lambda r: r["labels"])
            x = np.array([r["labels"] for r in rows])
            mean = 100 * np.array([r[f"{metric}_mean"] for r in rows])
            std = 100 * np.array([r[f"{metric}_std"] for r in rows])
            line, = ax.plot(x, mean, marker="o", markersize=3, label=strategy)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("labels used" if metric != "selected_marked_share" else "labels before the selection")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_learning_curves(summary, path, title: str = "") -> str:
    """Accuracy, macro AUC and Grad-CAM Dice against labels used: mean over seeds with a +-1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4), constrained_layout=True)
    names = {"accuracy": "accuracy (%)", "auc": "macro one-vs-rest AUC (%)", "dice": "Grad-CAM / ROI soft Dice (%)"}
    strategies = sorted({r["strategy"] for r in summary}, key=_strategy_order)
    for ax, metric in zip(axes, METRICS, strict=True):
        for strategy in strategies:
            rows = sorted((r for r in summary if r["strategy"] == strategy), key=lambda r: r["labels"])
            x = np.array([r["labels"] for r in rows])
            mean = 100 * np.array([r[f"{metric}_mean"] for r in rows])
            std = 100 * np.array([r[f"{metric}_std"] for r in rows])
            line, = ax.plot(x, mean, marker="o", markersize=3, label=strategy)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("labels used")
        ax.set_ylabel(names[metric])
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _strategy_order(name: str):
    fixed = {"random": 0, "entropy": 1, "misalignment": 2}
    return (fixed.get(name, 3), name)


def _write_csv(path, rows, fields) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
