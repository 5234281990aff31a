"""egal.loop.stats: paired differences vs a baseline over seeds, with t and bootstrap intervals,
and their place in write_report (paired.csv, a section of summary.md)."""
import csv
import json
import math

import pytest

from egal.loop.report import write_report
from egal.loop.stats import aulc, paired_differences

T_975_2DF = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (tables: 4.303)
LABELS = [10, 20, 50]  # unequal spacing: a trapezoid is not a plain mean of the points

# accuracy per label count, by strategy and seed
ACCURACY = {
    "random": {0: [0.50, 0.60, 0.70], 1: [0.40, 0.55, 0.65], 2: [0.45, 0.50, 0.72],
               4: [0.10, 0.10, 0.10]},  # seed 4 has no egal run: left out of both
    "egal": {0: [0.50, 0.70, 0.80], 1: [0.40, 0.60, 0.70], 2: [0.45, 0.55, 0.74],
             3: [0.99, 0.99, 0.99]},  # seed 3 has no random run: left out of both
    "entropy": {0: [0.52, 0.62, 0.72], 1: [0.42, 0.57, 0.67], 2: [0.47, 0.52, 0.74]},  # always +0.02
}


def _run(strategy, seed, accuracy, labels=LABELS, auc=None, dice=None):
    rounds = []
    for r, (n, acc) in enumerate(zip(labels, accuracy, strict=True)):
        rounds.append({"round": r, "labels": n, "accuracy": acc,
                       "auc": auc[r] if auc else acc + 0.1, "dice": dice[r] if dice else 0.2, "train_seconds": 1.0})
    return {"strategy": strategy, "seed": seed, "rounds": rounds}


def _runs(table=ACCURACY):
    return [_run(strategy, seed, values) for strategy, seeds in table.items() for seed, values in seeds.items()]


def _row(rows, strategy):
    (row,) = [r for r in rows if r["strategy"] == strategy]
    return row


def test_final_differences_mean_std_and_t_interval_by_hand():
    rows = paired_differences(_runs(), "random", "accuracy", "final")
    assert [r["strategy"] for r in rows] == ["entropy", "egal"]  # the report's order; no row for the baseline
    row = _row(rows, "egal")
    # per seed at 50 labels: 0.80 - 0.70, 0.70 - 0.65, 0.74 - 0.72
    assert row["seeds"] == [0, 1, 2] and row["labels"] == [50, 50, 50] and row["n"] == 3
    assert row["differences"] == pytest.approx([0.10, 0.05, 0.02], abs=1e-12)
    assert row["strategy_values"] == [0.80, 0.70, 0.74] and row["baseline_values"] == [0.70, 0.65, 0.72]
    mean = 0.17 / 3
    std = math.sqrt(((0.10 - mean) ** 2 + (0.05 - mean) ** 2 + (0.02 - mean) ** 2) / 2)  # ddof = 1
    assert std == pytest.approx(math.sqrt(0.0294 / 18), abs=1e-15)
    half = T_975_2DF * std / math.sqrt(3)
    assert row["mean"] == pytest.approx(mean, abs=1e-12)
    assert row["std"] == pytest.approx(std, abs=1e-12)
    assert row["t_low"] == pytest.approx(mean - half, abs=1e-9)
    assert row["t_high"] == pytest.approx(mean + half, abs=1e-9)
    assert "seed(s) 3 of egal have no paired run" in row["note"] and "seed(s) 4 of random" in row["note"]
    # A constant difference has no spread: std 0 and the interval collapses onto it.
    constant = _row(rows, "entropy")
    assert constant["mean"] == pytest.approx(0.02, abs=1e-12) and constant["std"] == pytest.approx(0, abs=1e-12)
    assert constant["t_low"] == pytest.approx(0.02, abs=1e-9) and constant["t_high"] == pytest.approx(0.02, abs=1e-9)


def test_bootstrap_interval_by_hand_for_three_seeds_and_reproducible():
    row = _row(paired_differences(_runs(), "random", "accuracy", "final"), "egal")
    # Resampling 3 seeds gives 27 equally likely resamples; "all three the smallest difference" has
    # probability 1/27 > 2.5 %, so the percentile interval is [min, max] of the differences,
    # narrower than the t interval (which is why the t interval is the one to quote).
    assert row["boot_low"] == pytest.approx(0.02, abs=1e-12) and row["boot_high"] == pytest.approx(0.10, abs=1e-12)
    assert row["t_low"] < row["boot_low"] and row["boot_high"] < row["t_high"]


def test_bootstrap_interval_with_more_seeds_is_seeded_and_inside_the_range():
    differences = [0.01 * k for k in range(10)]  # mean 0.045
    table = {"random": {k: [0.5, 0.5, 0.5] for k in range(10)},
             "egal": {k: [0.5, 0.5, 0.5 + d] for k, d in enumerate(differences)}}
    row = _row(paired_differences(_runs(table), "random", "accuracy", "final"), "egal")
    again = _row(paired_differences(_runs(table), "random", "accuracy", "final"), "egal")
    other = _row(paired_differences(_runs(table), "random", "accuracy", "final", bootstrap_seed=1), "egal")
    assert (row["boot_low"], row["boot_high"]) == (again["boot_low"], again["boot_high"])  # a fixed generator seed
    assert (other["boot_low"], other["boot_high"]) != (row["boot_low"], row["boot_high"])  # ... that is used
    # The resampled mean has sd std / sqrt(n) * sqrt((n - 1) / n); the percentiles sit near
    # mean +- 1.96 of that, strictly inside the range of the differences.
    sd = row["std"] / math.sqrt(10) * math.sqrt(9 / 10)
    assert 0 < row["boot_low"] < 0.045 < row["boot_high"] < 0.09
    assert row["boot_low"] == pytest.approx(0.045 - 1.96 * sd, abs=0.2 * sd)
    assert row["boot_high"] == pytest.approx(0.045 + 1.96 * sd, abs=0.2 * sd)
    off = _row(paired_differences(_runs(table), "random", "accuracy", "final", resamples=0), "egal")
    assert math.isnan(off["boot_low"]) and off["t_low"] == row["t_low"]


def test_aulc_is_the_trapezoid_over_labels_divided_by_the_label_range():
    # random seed 0: (10 * (0.5 + 0.6) / 2 + 30 * (0.6 + 0.7) / 2) / 40 = (5.5 + 19.5) / 40
    assert aulc(LABELS, ACCURACY["random"][0]) == pytest.approx(25 / 40, abs=1e-15)
    assert aulc([50, 10, 20], [0.7, 0.5, 0.6]) == pytest.approx(25 / 40, abs=1e-15)  # order of points does not matter
    assert math.isnan(aulc([10], [0.5])) and math.isnan(aulc([10, 10], [0.5, 0.6]))
    row = _row(paired_differences(_runs(), "random", "accuracy", "aulc"), "egal")
    # difference curves: seed 0 (0, .10, .10), seed 1 (0, .05, .05), seed 2 (0, .05, .02)
    expected = [(10 * 0.10 / 2 + 30 * 0.20 / 2) / 40, (10 * 0.05 / 2 + 30 * 0.10 / 2) / 40,
                (10 * 0.05 / 2 + 30 * 0.07 / 2) / 40]
    assert expected == pytest.approx([0.0875, 0.04375, 0.0325])
    assert row["differences"] == pytest.approx(expected, abs=1e-12)
    assert row["strategy_values"][0] == pytest.approx(28.5 / 40, abs=1e-12)
    assert row["baseline_values"][0] == pytest.approx(25 / 40, abs=1e-12)
    assert row["labels"] == [(10, 50)] * 3
    mean = sum(expected) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in expected) / 2)
    assert row["mean"] == pytest.approx(mean, abs=1e-12) and row["std"] == pytest.approx(std, abs=1e-12)
    assert row["t_high"] == pytest.approx(mean + T_975_2DF * std / math.sqrt(3), abs=1e-9)


def test_pairing_is_by_seed_and_on_the_label_counts_both_runs_have():
    runs = [_run("random", 0, [0.5, 0.6, 0.7]), _run("egal", 0, [0.5, 0.8], labels=[10, 20]),
            _run("random", 1, [0.4, 0.5, 0.6]), _run("egal", 1, [0.4, 0.6, 0.9])]
    final = _row(paired_differences(runs, "random", "accuracy", "final"), "egal")
    # seed 0: egal stopped at 20 labels, compared there (0.8 - 0.6); seed 1 at 50 (0.9 - 0.6)
    assert final["labels"] == [20, 50]
    assert final["differences"] == pytest.approx([0.2, 0.3], abs=1e-12)
    curve = _row(paired_differences(runs, "random", "accuracy", "aulc"), "egal")
    assert curve["labels"] == [(10, 20), (10, 50)]
    assert curve["differences"][0] == pytest.approx((0.0 + 0.2) / 2, abs=1e-12)  # over 10..20 only
    # The order of the runs does not matter.
    assert paired_differences(runs[::-1], "random", "accuracy", "final") == paired_differences(runs, "random",
                                                                                               "accuracy", "final")


def test_one_paired_seed_gives_no_interval_and_says_so():
    runs = [_run("random", 0, ACCURACY["random"][0]), _run("egal", 0, ACCURACY["egal"][0]),
            _run("egal", 1, ACCURACY["egal"][1])]
    row = _row(paired_differences(runs, "random", "accuracy", "final"), "egal")
    assert row["n"] == 1 and row["mean"] == pytest.approx(0.10, abs=1e-12)
    for key in ("std", "t_low", "t_high", "boot_low", "boot_high"):
        assert math.isnan(row[key]), key
    assert "n = 1: no confidence interval" in row["note"] and "seed(s) 1 of egal" in row["note"]


def test_seeds_whose_metric_is_missing_are_left_out_of_both():
    runs = [_run(s, seed, ACCURACY[s][seed], dice=[0.1, 0.2, None if (s, seed) == ("egal", 1) else 0.3])
            for s in ("random", "egal") for seed in (0, 1, 2)]
    row = _row(paired_differences(runs, "random", "dice", "final"), "egal")
    assert row["seeds"] == [0, 2] and row["n"] == 2 and row["differences"] == pytest.approx([0.0, 0.0])
    assert "seed(s) 1 left out: dice not finite" in row["note"]


def test_bad_requests_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at must be one of"):
        paired_differences(_runs(), at="last")
    with pytest.raises(ValueError, match="no run of the baseline strategy 'uniform'; the runs hold"):
        paired_differences(_runs(), baseline="uniform")
    with pytest.raises(ValueError, match="metric 'f1' is in no round"):
        paired_differences(_runs(), metric="f1")
    with pytest.raises(ValueError, match="two runs of strategy 'egal' with seed 0"):
        paired_differences(_runs() + [_run("egal", 0, [0.1, 0.2, 0.3])])


def _write_runs(folder, runs):
    (folder / "runs").mkdir(parents=True)
    for run in runs:
        (folder / "runs" / f"{run['strategy']}__seed{run['seed']}.json").write_text(json.dumps(run))


def test_write_report_writes_paired_csv_and_a_summary_section(tmp_path):
    _write_runs(tmp_path, _runs())
    paths = write_report(tmp_path)
    assert paths["paired_csv"] == str(tmp_path / "paired.csv")
    with open(paths["paired_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    # two strategies x (accuracy, auc, dice) x (final, aulc)
    assert sorted((r["strategy"], r["metric"], r["kind"]) for r in rows) == sorted(
        (s, m, k) for s in ("entropy", "egal") for m in ("accuracy", "auc", "dice") for k in ("final", "aulc"))
    egal = next(r for r in rows if (r["strategy"], r["metric"], r["kind"]) == ("egal", "accuracy", "final"))
    assert egal["baseline"] == "random" and egal["n"] == "3"
    assert egal["seeds"] == "0;1;2" and egal["labels"] == "50;50;50"
    assert float(egal["mean"]) == pytest.approx(0.17 / 3, abs=1e-12)
    assert [float(v) for v in egal["differences"].split(";")] == pytest.approx([0.10, 0.05, 0.02], abs=1e-12)
    mean, std = 0.17 / 3, math.sqrt(0.0294 / 18)
    assert float(egal["t_low"]) == pytest.approx(mean - T_975_2DF * std / math.sqrt(3), abs=1e-9)
    curve = next(r for r in rows if (r["strategy"], r["metric"], r["kind"]) == ("egal", "accuracy", "aulc"))
    assert curve["labels"] == "10-50;10-50;10-50"
    dice = next(r for r in rows if (r["strategy"], r["metric"], r["kind"]) == ("egal", "dice", "final"))
    assert float(dice["mean"]) == 0.0  # the same Dice everywhere in these runs
    summary = (tmp_path / "summary.md").read_text()
    assert "Final round:" in summary  # the existing tables are still there, the section comes after them
    section = summary.split("## Paired differences vs random (mean over seeds, 95 % CI)", 1)[1]
    half = 100 * T_975_2DF * std / math.sqrt(3)
    line = next(row for row in section.splitlines() if row.startswith("| egal | accuracy | final |"))
    assert line.startswith(f"| egal | accuracy | final | 3 | +5.7 | 4.0 | [{100 * mean - half:+.1f}, "
                           f"{100 * mean + half:+.1f}] |")
    assert "| entropy | accuracy | aulc | 3 | +2.0 | 0.0 | [+2.0, +2.0] | [+2.0, +2.0] |" in section
    # Rewriting the report does not append the section twice.
    write_report(tmp_path)
    assert (tmp_path / "summary.md").read_text().count("## Paired differences") == 1


def test_write_report_without_a_random_strategy_skips_the_paired_section(tmp_path):
    _write_runs(tmp_path, [r for r in _runs() if r["strategy"] != "random"])
    paths = write_report(tmp_path)
    assert "paired_csv" not in paths and not (tmp_path / "paired.csv").exists()
    assert "summary_md" in paths and "Paired differences" not in (tmp_path / "summary.md").read_text()


def test_a_strategy_short_of_its_budget_is_said_and_its_final_row_says_what_it_compares(tmp_path):
    # A group cap with few groups: egal+group selected 2 rows a round while random took 25. Their label counts
    # meet only at round 0, and "final" compared the shared round-0 model, +0.0 [+0.0, +0.0], without a word.
    runs = []
    for seed in (0, 1):
        runs.append(_run("random", seed, [0.5, 0.6, 0.7], labels=[12, 37, 62]))
        short = _run("egal+group2", seed, [0.5, 0.52, 0.55], labels=[12, 14, 16])
        for entry in short["rounds"][:2]:
            entry["budget_shortfall"] = 23
        runs.append(short)
    row = _row(paired_differences(runs, "random", "accuracy", "final"), "egal+group2")
    assert row["labels"] == [12, 12] and "label counts part early" in row["note"] and row["parted_early"] == [0, 1]
    assert "compared at the last count both reached" in row["note"]
    assert "part early" not in _row(paired_differences(runs, "random", "accuracy", "aulc"), "egal+group2")["note"]
    _write_runs(tmp_path, runs)
    write_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert ("Note: egal+group2 selected fewer rows than the budget in 4 round(s) of 2 seed(s), 92 rows in all"
            in summary)
    from egal.report.experiment_page import experiment_report

    page = open(experiment_report(tmp_path).path).read()  # the page's "last round" cell is marked and explained
    assert "+0.0 [+0.0, +0.0] *" in page and "label counts part before either ends" in page
    assert "egal+group2 selected fewer rows than the budget" in page
    # Runs that simply end apart (one pool exhausted earlier) are compared at the last count both reached, no note.
    ended = [_run("random", 0, [0.5, 0.6, 0.7]), _run("egal", 0, [0.5, 0.8], labels=[10, 20])]
    assert "part early" not in _row(paired_differences(ended, "random", "accuracy", "final"), "egal")["note"]


def test_one_seed_has_no_standard_deviation_and_two_records_of_one_run_are_refused(tmp_path):
    from egal.errors import EgalError

    _write_runs(tmp_path, [_run("random", 3, [0.5, 0.6, 0.7]), _run("egal", 3, [0.5, 0.7, 0.8])])
    write_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "| random | 2 | 50 | 1 | 70.0 ± n/a |" in summary and "± 0.0" not in summary
    with open(tmp_path / "summary.csv", newline="") as f:
        assert all(math.isnan(float(r["accuracy_std"])) for r in csv.DictReader(f))
    runs_dir = tmp_path / "runs"
    (runs_dir / "copy.json").write_text(next(runs_dir.glob("random*.json")).read_text())
    before = summary
    with pytest.raises(EgalError, match="both hold strategy 'random' with seed 3: delete one"):
        write_report(tmp_path)
    assert (tmp_path / "summary.md").read_text() == before  # nothing summarised twice
