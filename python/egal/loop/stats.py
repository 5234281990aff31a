"""Paired comparisons of strategies over seeds, with confidence intervals.

Every strategy of a simulation runs with the same seeds, and a seed fixes the test
split and the seed set, so strategy and baseline runs of one seed are paired: the
per-seed difference removes the variation that seeds share. For each strategy
other than the baseline and each metric:

  final  the metric at the largest label count both runs of a seed reached;
  aulc   the area under the learning curve (trapezoid over label counts, on the
         label counts both runs have) divided by the label range: the mean metric
         over the curve, in the metric's units.

Over the n seeds both strategies ran (a seed missing in either, or whose value is
not finite in either, is left out of both), the mean difference, its sample
standard deviation (ddof = 1), the 95 % Student t interval
mean +- t(0.975, n - 1) * std / sqrt(n), and a paired percentile bootstrap interval
(resampling seeds, a fixed generator seed). With fewer than 2 seeds there is no
interval (NaN, and the row's note says so). With few seeds the bootstrap interval
is too narrow (it cannot see more spread than the seeds show); the t interval is
the one to quote.

The run records are those of egal.loop.simulation (runs/*.json):
{"strategy": name, "seed": k, "rounds": [{"round": r, "labels": n, "accuracy": ..., ...}, ...]}.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

KINDS = ("final", "aulc")
PAIRED_METRICS = ("accuracy", "auc", "dice", "marker_accuracy")  # marker_accuracy: shortcut benchmark runs only
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
PAIRED_FIELDS = ("strategy", "baseline", "metric", "kind", "n", "mean", "std", "t_low", "t_high", "boot_low",
                 "boot_high", "seeds", "labels", "strategy_values", "baseline_values", "differences", "note")


def paired_differences(runs, baseline: str = "random", metric: str = "accuracy", at: str = "final", *,
                       resamples: int = BOOTSTRAP_RESAMPLES, bootstrap_seed: int = BOOTSTRAP_SEED) -> list:
    """One row (a dict) per strategy other than `baseline`, in the report's strategy order:

    strategy, baseline, metric, kind ("final" or "aulc"), n (paired seeds), mean, std
    (ddof = 1) of the per-seed differences strategy - baseline, t_low / t_high (95 %
    Student t interval), boot_low / boot_high (95 % paired percentile bootstrap; NaN
    with resamples=0), and the per-seed values behind them: seeds, labels (final: the
    label count compared; aulc: the (first, last) label counts of the curve),
    strategy_values, baseline_values, differences; note says what was left out and
    why an interval is missing.
    """
    if at not in KINDS:
        raise ValueError(f"at must be one of {KINDS}, got {at!r}")
    by_strategy = _by_strategy_and_seed(runs)
    if baseline not in by_strategy:
        raise ValueError(f"no run of the baseline strategy {baseline!r}; the runs hold {sorted(by_strategy)}")
    if not any(metric in entry for run in runs for entry in run["rounds"]):
        raise ValueError(f"metric {metric!r} is in no round of the runs")
    from .report import _strategy_order

    rows = []
    for strategy in sorted(by_strategy, key=_strategy_order):
        if strategy == baseline:
            continue
        mine, theirs = by_strategy[strategy], by_strategy[baseline]
        notes = []
        for who, only in ((strategy, sorted(set(mine) - set(theirs))), (baseline, sorted(set(theirs) - set(mine)))):
            if only:
                notes.append(f"seed(s) {_join(only)} of {who} have no paired run: left out")
        seeds, labels, a_values, b_values, skipped, short = [], [], [], [], [], []
        for seed in sorted(set(mine) & set(theirs)):
            a_curve, b_curve = _curve(mine[seed], metric), _curve(theirs[seed], metric)
            common = sorted(set(a_curve) & set(b_curve))
            if at == "final" and common and common[-1] != min(max(a_curve), max(b_curve)):
                short.append(seed)  # the runs part before either ends: labels of one never reached by the other
            if at == "final":
                value = (a_curve[common[-1]], b_curve[common[-1]]) if common else (math.nan, math.nan)
                where = common[-1] if common else None
            else:
                value = (_aulc(common, a_curve), _aulc(common, b_curve)) if len(common) >= 2 else (math.nan, math.nan)
                where = (common[0], common[-1]) if len(common) >= 2 else None
            if not (math.isfinite(value[0]) and math.isfinite(value[1])):
                skipped.append(seed)
                continue
            seeds.append(seed)
            labels.append(where)
            a_values.append(value[0])
            b_values.append(value[1])
        if skipped:
            why = "no common label count" if at == "final" else "fewer than 2 common label counts"
            notes.append(f"seed(s) {_join(skipped)} left out: {metric} not finite in both runs or {why}")
        if short:
            notes.append(f"seed(s) {_join(short)}: the two runs' label counts part early (a strategy that selected "
                         f"fewer rows than the budget): compared at the last count both reached, not at their last "
                         f"rounds")
        differences = [a - b for a, b in zip(a_values, b_values, strict=True)]
        row = {"strategy": strategy, "baseline": baseline, "metric": metric, "kind": at,
               **interval_stats(differences, resamples=resamples, bootstrap_seed=bootstrap_seed),
               "seeds": seeds, "labels": labels, "strategy_values": a_values, "baseline_values": b_values,
               "differences": differences, "parted_early": short}
        if row["n"] == 0:
            notes.append("no paired seed: no estimate")
        elif row["n"] == 1:
            notes.append("n = 1: no confidence interval (needs at least 2 paired seeds)")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return rows


def interval_stats(differences, *, resamples: int = BOOTSTRAP_RESAMPLES, bootstrap_seed: int = BOOTSTRAP_SEED) -> dict:
    """n, mean, std (ddof = 1), the 95 % Student t interval and the 95 % percentile bootstrap
    interval (means of `resamples` resamples of the values, numpy Generator(bootstrap_seed))."""
    d = np.asarray(differences, dtype=np.float64)
    n = int(d.size)
    nan = math.nan
    out = {"n": n, "mean": float(d.mean()) if n else nan, "std": float(d.std(ddof=1)) if n > 1 else nan,
           "t_low": nan, "t_high": nan, "boot_low": nan, "boot_high": nan}
    if n < 2:
        return out
    from scipy.stats import t as student_t

    half = float(student_t.ppf(0.975, n - 1)) * out["std"] / math.sqrt(n)
    out["t_low"], out["t_high"] = out["mean"] - half, out["mean"] + half
    if resamples > 0:
        rng = np.random.default_rng(bootstrap_seed)
        means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
        out["boot_low"], out["boot_high"] = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    return out


def aulc(labels, values) -> float:
    """Trapezoid area under values(labels) divided by the label range: the curve's mean value.
    NaN with fewer than 2 points or a zero range."""
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"labels and values must be 1-d of the same length, got shapes {x.shape} and {y.shape}")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if x.size < 2 or x[-1] == x[0]:
        return math.nan
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def paired_report(runs, baseline: str = "random", metrics=PAIRED_METRICS, kinds=KINDS) -> list:
    """paired_differences for every metric and kind; [] when there is no `baseline` run or
    no other strategy (nothing to compare), and metrics no round records are left out."""
    strategies = {run["strategy"] for run in runs}
    if baseline not in strategies or len(strategies) < 2:
        return []
    recorded = {key for run in runs for entry in run["rounds"] for key in entry}
    return [row for metric in metrics if metric in recorded for kind in kinds
            for row in paired_differences(runs, baseline, metric, kind)]


def paired_csv_rows(rows) -> list:
    """The rows with the per-seed lists joined by ';' (labels as N, or FIRST-LAST for aulc)."""
    def label(value):
        return "-".join(str(v) for v in value) if isinstance(value, tuple) else str(value)

    return [{**row, "seeds": ";".join(str(s) for s in row["seeds"]),
             "labels": ";".join(label(v) for v in row["labels"]),
             **{k: ";".join(repr(float(v)) for v in row[k])
                for k in ("strategy_values", "baseline_values", "differences")}}
            for row in rows]


def paired_markdown(rows, baseline: str = "random") -> str:
    """The rows as a markdown section, differences in percentage points."""
    lines = [
        f"## Paired differences vs {baseline} (mean over seeds, 95 % CI)",
        "",
        f"Per seed, strategy minus {baseline}, in percentage points; final: at the largest label count both "
        "reached; AULC: area under the learning curve divided by the label range (the mean over the curve). "
        "t: mean +- t(0.975, n-1) std / sqrt(n); bootstrap: percentile interval over "
        f"{BOOTSTRAP_RESAMPLES:,} resamples of seeds (too narrow with few seeds).",
        "",
        "| strategy | metric | kind | n | mean (pp) | std (pp) | 95 % CI, t (pp) | 95 % CI, bootstrap (pp) | note |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['metric']} | {r['kind']} | {r['n']} | {_pp(r['mean'], sign=True)} | "
                     f"{_pp(r['std'])} | {_interval(r['t_low'], r['t_high'])} | "
                     f"{_interval(r['boot_low'], r['boot_high'])} | "
                     f"{r['note'] or ''} |")
    return "\n".join(lines)


def _by_strategy_and_seed(runs) -> dict:
    out = defaultdict(dict)
    for run in runs:
        strategy, seed = run["strategy"], run["seed"]
        if seed in out[strategy]:
            raise ValueError(f"two runs of strategy {strategy!r} with seed {seed}")
        out[strategy][seed] = run
    return out


def _curve(run, metric) -> dict:
    """labels -> metric value (NaN when missing or null)."""
    curve = {}
    for entry in run["rounds"]:
        value = entry.get(metric)
        curve[int(entry["labels"])] = math.nan if value is None else float(value)
    return curve


def _aulc(labels, curve) -> float:
    return aulc(labels, [curve[n] for n in labels])


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def _pp(value, sign: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"


def _interval(low, high) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"[{100 * low:+.1f}, {100 * high:+.1f}]"
