"""The experiment page: OUT/report.html of an `egal simulate` folder, built from the files in it alone.

    egal report --experiment results/figshare_pretrained_cpu
    egal.report.experiment_report("results/figshare_pretrained_cpu")

Learning curves (mean and a +-1 std band over seeds per strategy), the final table with the paired
differences to random and their 95 % intervals (egal.loop.stats), the shortcut benchmark's panels when it
ran, and the Grad-CAM of fixed test images after the first and the last round of each strategy
(egal.report.cam_grid; a folder written before egal recorded them says so). egal simulate writes the
page after its runs; this rebuilds it from runs/*.json, config.json and cam_grid/ without training anything.
Needs matplotlib (egal-al[experiments]) for the curves.
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass

from .._checks import is_real
from .._paths import check_writable
from ..errors import EgalError
from .html import PAGE_FILE, Markup, definition_list, escape, figure, img, number, page, table, write_page
from .imaging import data_uri

BASELINE = "random"


@dataclass(frozen=True)
class ExperimentReport:
    path: str
    runs: int
    strategies: tuple
    seeds: tuple
    cam_grid: bool  # whether the folder held the Grad-CAM grid


def experiment_report(out_dir) -> ExperimentReport:
    """Writes OUT/report.html from the experiment folder `out_dir`; an EgalError when it holds no finished run.

    Under the folder's report lock, which a simulate running into it holds while it writes its report: the page
    then holds every run finished before it was written, whichever of the two writes last."""
    from ..loop.folder import report_lock

    out_dir = os.fspath(out_dir)
    if not os.path.isdir(out_dir):
        what = "is a file, not the folder egal simulate wrote" if os.path.exists(out_dir) else "does not exist"
        raise EgalError(f"experiment folder {out_dir!r} {what}")
    check_writable(out_dir, "experiment folder", inside=True)  # where the page goes: said before the work
    with report_lock(out_dir):
        return write_experiment_page(out_dir)


def write_experiment_page(out_dir: str) -> ExperimentReport:
    """experiment_report's page, for a caller that holds the folder's report lock (egal.loop.simulation)."""
    from ..loop.report import load_runs, summarise
    from .cam_grid import load_cam_grid

    runs = load_runs(out_dir)
    if not runs:
        raise EgalError(f"{out_dir!r} holds no finished run (runs/*.json): is it an egal simulate --out folder?")
    config = _read_config(out_dir)
    summary = summarise(runs)
    grid = load_cam_grid(out_dir)
    strategies = tuple(dict.fromkeys(r["strategy"] for r in summary))
    seeds = tuple(sorted({r["seed"] for r in runs}))
    name = os.path.basename(os.path.abspath(out_dir))  # abspath drops a trailing slash, which leaves no name
    body = "\n".join([
        f"<h1>Active-learning experiment: {escape(name)}</h1>",
        "<p class='lead'>Every strategy starts from the same class-balanced seed set and trains identically; only "
        "the selection differs. Metrics are on the held-out test set after each round.</p>",
        "<h2 id='summary'>Summary</h2>", _summary(out_dir, config, runs, strategies, seeds),
        "<h2 id='curves'>Learning curves</h2>", _curves(summary, len(seeds)),
        "<h2 id='final'>After the last round</h2>", _final_table(summary, runs),
        _shortcut(summary, runs),
        "<h2 id='gradcam'>Where the models look: Grad-CAM on fixed test images</h2>", _grid(grid, strategies),
        "<h2 id='files'>Files in this folder</h2>", _files(out_dir),
    ])
    path = write_page(os.path.join(out_dir, PAGE_FILE), page(f"egal experiment: {name}", body))
    return ExperimentReport(path, len(runs), strategies, seeds, grid is not None)


def _read_config(out_dir) -> dict:
    from ..loop.folder import CONFIG_FILE

    path = os.path.join(out_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            config = json.load(f).get("config", {})
        if not isinstance(config, dict):
            raise ValueError(f"its config is {type(config).__name__}, not a table of settings")
    except (OSError, ValueError, AttributeError) as exc:
        raise EgalError(f"{path!r} is damaged ({exc}): the folder's configuration cannot be shown") from None
    return config


def _summary(out_dir, config, runs, strategies, seeds) -> str:
    data, train, loop = config.get("data", {}), config.get("train", {}), config.get("loop", {})
    first = runs[0]
    learner = ", ".join(str(v) for v in (train.get("architecture"), f"{train.get('head')} head",
                                         f"weights {train.get('weights')}", f"input {train.get('input_size')}")
                        if v is not None)
    if train.get("trainable_from"):
        learner += f"; frozen before {train['trainable_from']}, trained from there on"
    items = [
        ("data", data.get("path", "not recorded")),
        ("test split", f"{first.get('test_rows', '?')} test rows ({data.get('group_column') or 'rows'}"
         f"{' ' + ', '.join(data['test_groups']) if data.get('test_groups') else ''}), "
         f"{first.get('pool_rows', '?')} pool rows"),
        ("strategies", ", ".join(strategies)),
        ("seeds", f"{len(seeds)} ({', '.join(map(str, seeds))}); {len(runs)} finished runs"),
        ("protocol", f"{loop.get('init', '?')} seed labels, {loop.get('rounds', '?')} rounds of "
         f"{loop.get('budget', '?')}"),
        ("learner", learner or "not recorded"),
        ("training", f"{train.get('epochs', '?')} epochs, beta {train.get('beta', '?')} (Grad-CAM/ROI Dice loss "
         "weight)"),
        ("Grad-CAM/ROI Dice of the ROI itself at the CAM's resolution",
         _ceiling_text(first)),
    ]
    return definition_list(items)


def _png(plot, summary) -> str:
    buffer = io.BytesIO()
    plot(summary, buffer)
    return data_uri(buffer.getvalue())


def _curves(summary, n_seeds: int) -> str:
    from ..loop.report import plot_learning_curves

    return figure(img(_png(plot_learning_curves, summary), "learning curves", "figure"),
                  f"Test accuracy, macro one-vs-rest AUC and the mean soft Dice between the predicted class's Grad-CAM "
                  f"and the expert ROI, against the labels used; mean over {n_seeds} seed(s) with a ±1 standard "
                  "deviation band.", css_id="learning-curves")


def _final_table(summary, runs) -> str:
    from ..loop.report import budget_shortfalls, percent
    from ..loop.stats import paired_report

    last = {}
    for row in summary:
        if row["strategy"] not in last or row["round"] > last[row["strategy"]]["round"]:
            last[row["strategy"]] = row
    paired = {}
    strategies = {r["strategy"] for r in runs}
    if BASELINE in strategies and len(strategies) > 1:
        for row in paired_report(runs, BASELINE, metrics=("accuracy",)):
            paired[(row["strategy"], row["kind"])] = row
    rows = []
    for strategy, row in last.items():
        cells = [strategy, f"{row['labels']:,}", row["seeds"]]
        cells += [percent(row[f"{m}_mean"], row[f"{m}_std"]) or "–" for m in ("accuracy", "auc", "dice")]
        cells += [_difference(paired.get((strategy, kind))) for kind in ("final", "aulc")]
        rows.append(cells)
    header = ("strategy", "labels", "seeds", "accuracy (%)", "macro AUC (%)", "Grad-CAM/ROI Dice (%)",
              f"accuracy − {BASELINE}, last round (pp, 95 % CI)", f"accuracy − {BASELINE}, area under the curve "
              "(pp, 95 % CI)")
    note = ("<p class='note'>Mean ± sample standard deviation over seeds. Differences are paired per seed (the same "
            "seed set and test split), strategy minus random, in percentage points, with the 95 % Student t interval "
            "over seeds (in bold where it excludes 0); the area under the curve is divided by the label range (the "
            "mean over the curve). paired.csv has every metric, with bootstrap intervals.</p>")
    if not paired:
        note += f"<p class='muted'>No paired differences: the folder has no {BASELINE!r} runs to compare with.</p>"
    if any(row.get("parted_early") for row in paired.values()):
        note += ("<p class='note'>* The two runs' label counts part before either ends (a strategy that selected "
                 "fewer rows than the budget): compared at the last count both reached, not at their last "
                 "rounds.</p>")
    note += "".join(f"<p class='note'>{escape(line)}</p>" for line in budget_shortfalls(runs))
    return table(header, rows, numeric=(False, True, True, True, True, True, True, True)) + note


def _difference(row) -> Markup | str:
    if row is None:
        return "–"
    mean, low, high = row["mean"], row["t_low"], row["t_high"]
    if not math.isfinite(mean):
        return "n/a"
    text = f"{100 * mean:+.1f}"
    mark = " *" if row.get("parted_early") else ""
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{100 * low:+.1f}, {100 * high:+.1f}]"
        if low > 0 or high < 0:
            return Markup(f"<strong>{escape(text)}</strong>{mark}")
    return text + mark


def _shortcut(summary, runs) -> str:
    from ..loop.report import marked_selection, paired_text, percent, plot_shortcut

    if not any("marker_accuracy_mean" in r for r in summary):
        return ""
    rows = []
    for r in summary:
        cells = [r["strategy"], r["round"], f"{r['labels']:,}"]
        for metric in ("accuracy", "marker_accuracy", "selected_marked_share", "unlabelled_marked_share"):
            mean = r.get(f"{metric}_mean", float("nan"))
            cells.append(percent(mean, r.get(f"{metric}_std", float("nan"))) or "–")
        rows.append(cells)
    return "\n".join([
        "<h2 id='shortcut'>Shortcut benchmark</h2>",
        "<p class='note'>A marker was burnt into part of one class's pool images, outside the ROI. A model that "
        "learns it scores well on the clean test set and badly on the test copy that carries the marker on the "
        "other classes; a selection that finds the right-for-the-wrong-reason images picks marked images more "
        "often than their share of the unlabelled pool.</p>",
        figure(img(_png(plot_shortcut, summary), "shortcut benchmark", "figure"),
               "Clean and marker test accuracy against labels used, and the share of marked images in each round's "
               "selection; mean over seeds with a ±1 standard deviation band.", css_id="shortcut-panels"),
        table(("strategy", "round", "labels", "clean test accuracy (%)", "marker test accuracy (%)",
               "marked share of the selection (%)", "marked share of the unlabelled pool (%)"), rows,
              numeric=(False, True, True, True, True, True, True)),
        "<p>Over all rounds: the share of marked images among everything each strategy selected, and its paired "
        "per-seed difference to random.</p>",
        table(("strategy", "seeds", "marked share of all selections (%)", "marked share of the pool at round 0 (%)",
               "minus random, paired (points, 95 % t interval)"),
              [[r["strategy"], r["seeds"], "–" if not math.isfinite(r["mean"]) else
                f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}",
                "–" if not math.isfinite(r["pool_share"]) else f"{100 * r['pool_share']:.1f}",
                paired_text(r["paired"]) or "–"] for r in marked_selection(runs)],
              numeric=(False, True, True, True, True)),
    ])


def _grid(grid, strategies) -> str:
    from .cards import colour_key
    from .cards import pictures as card_pictures

    if grid is None:
        return ("<p class='muted' id='gradcam-missing'>Not recorded in this run: this folder was written by an egal "
                "that did not keep the Grad-CAM of fixed test images (cam_grid/). Run egal simulate again into a new "
                "folder to get them.</p>")
    shown = [s for s in strategies if s in grid.runs]
    if not shown:
        return "<p class='muted' id='gradcam-missing'>Not recorded in this run: cam_grid/ holds no strategy's file.</p>"
    columns = []
    for i, ident in enumerate(grid.ids):
        columns.append(f"<th>{escape(ident)}<br><span class='muted'>{escape(grid.classes[grid.labels[i]])}</span></th>")
    rows = ["<tr><th></th>" + "".join(columns) + "</tr>"]
    plain = [card_pictures(grid.images[i] / 255.0, grid.masks[i], None)[0] for i in range(len(grid.ids))]
    rows.append("<tr><th>image, expert ROI</th>" + "".join(f"<td>{img(uri, 'image', 'grid-image')}</td>"
                                                           for uri in plain) + "</tr>")
    first = grid.runs[shown[0]]
    rows.append(_grid_row(grid, first, 0, f"seed-set model (round {first.rounds[0]}, {first.labels[0]:,} labels), "
                          "shared by every strategy"))
    for strategy in shown:
        run = grid.runs[strategy]
        for index in sorted({1, len(run.rounds) - 1} - {0}) if len(run.rounds) > 1 else []:
            rows.append(_grid_row(grid, run, index, f"{strategy} after round {run.rounds[index]} "
                                                    f"({run.labels[index]:,} labels)"))
    seed = grid.runs[shown[0]].seed
    return "\n".join([
        f"<p class='note'>{len(grid.ids)} test images ({len(grid.ids) // max(1, len(grid.classes))} per class), drawn "
        f"once from the test set; the runs of seed {seed}. "
        "Each cell: the predicted class's Grad-CAM over the image, the predicted class (✓ right, ✗ wrong) with its "
        "softmax probability p, and the soft Dice between the Grad-CAM and the expert ROI.</p>",
        colour_key("Grad-CAM of the predicted class (normalised, 0–1, no unit)"),
        "<table class='grid' id='gradcam-grid'>" + "".join(rows) + "</table>",
    ])


def _grid_row(grid, run, index, label) -> str:
    from .cards import pictures as card_pictures

    cells = []
    for i in range(len(grid.ids)):
        _, overlay = card_pictures(grid.images[i] / 255.0, grid.masks[i], run.cams[index, i])
        pred = int(run.pred[index, i])
        mark = "✓" if pred == int(grid.labels[i]) else "✗"
        name = grid.classes[pred] if 0 <= pred < len(grid.classes) else "?"
        dice = 1.0 - float(run.misalignment[index, i])
        cells.append(f"<td>{img(overlay, f'{grid.ids[i]}: {label}', 'grid-image')}<br>{mark} {escape(name)}, "
                     f"p {float(run.confidence[index, i]):.2f}<br>Dice {number(dice, 2)}</td>")
    return f"<tr><th>{escape(label)}</th>{''.join(cells)}</tr>"


def _files(out_dir) -> str:
    from ..loop.folder import (
        CONFIG_FILE,
        CURVES_PNG,
        PAIRED_CSV,
        ROUNDS_CSV,
        ROUNDS_JSON,
        SHORTCUT_PNG,
        SUMMARY_CSV,
        SUMMARY_MD,
    )

    names = [n for n in (SUMMARY_MD, SUMMARY_CSV, PAIRED_CSV, ROUNDS_CSV, ROUNDS_JSON, CONFIG_FILE, CURVES_PNG,
                         SHORTCUT_PNG) if os.path.isfile(os.path.join(out_dir, n))]
    items = "".join(f"<li><a href='{escape(n)}'>{escape(n)}</a></li>" for n in names)
    return f"<ul>{items}<li>runs/: one JSON record per (strategy, seed)</li></ul>"


def _ceiling_text(run: dict) -> str:
    if "roi_cam_dice" not in run:
        return "not recorded"
    ceiling = run["roi_cam_dice"]  # null (NaN in files written before strict JSON): no test image has an ROI
    if ceiling is None or (isinstance(ceiling, float) and math.isnan(ceiling)):
        return "none: no test image has an ROI"
    if not is_real(ceiling):
        return "not recorded"
    return f"{100 * ceiling:.1f} % (a reference point for the Dice figures)"
