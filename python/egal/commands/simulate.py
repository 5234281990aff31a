"""`egal simulate`: the active-learning experiment, comparing selection strategies on labelled data."""
from __future__ import annotations

import sys

from ._config_defaults import ConfigDefaultsFormatter
from ._flags import add_quiet, egal_warnings_as_lines, errors_named_as_flags, flags_for
from ._pool_format import POOL_FORMAT
from ._train_options import add_train_options, train_overrides

# The library's arguments that its errors name and that are flags here by the same name ("budget (--budget) 5000"
# says --budget 5000): a config file's setting is overridden by the flag, which is what the user can change.
FLAG_NAMED = ("label_column", "group_column", "out", "init", "budget", "rounds", "seeds", "strategies", "alpha",
              "workers", "threads", "cache_dir")


def register(subparsers):
    parser = subparsers.add_parser(
        "simulate",
        help="simulate active learning on fully labelled data and compare selection strategies",
        description="Simulate annotation on a fully labelled pool: hold out a test set (patient-level when a "
        "--group-column is given), draw a class-balanced seed set, then for R rounds train a model, score the "
        "unlabelled rows with the fused EG-AL scorer, select --budget rows, reveal their labels and repeat. "
        "Every strategy trains identically; only selection differs, and no strategy sees an unlabelled row's label. "
        "After every round the model is evaluated on the test set (accuracy, macro one-vs-rest AUC, mean Grad-CAM/ROI "
        "Dice). Writes OUT/runs/<strategy>__seed<k>.json per finished run (a rerun skips them: resumable), "
        "OUT/rounds.csv/.json, OUT/summary.csv/.md (mean +- std over seeds), OUT/learning_curves.png and "
        "OUT/report.html (the experiment page; egal report --experiment OUT rebuilds it); with --workers, "
        "OUT/round0/ keeps each seed's shared round-0 model. "
        "Settings come from the built-in defaults, then --config, then the options given.",
        epilog="strategies: random; entropy (alpha=1); misalignment (alpha=0); egal (alpha from --alpha); "
        "egal:0.3 (explicit alpha); egal-rank, egal-rank:0.3 (both terms rank-normalised over the pool before "
        "mixing); --alpha-grid 0.25,0.5,0.75 adds egal at each alpha. Any of them but random may end in selection "
        "modifiers (egal.selection, README 'Choosing the batch'): +kcenter or +cluster (a diverse batch among the top "
        "10 x budget rows in the model's embedding space), +group or +groupN (at most 1 or N rows per value of "
        "--group-column in a round's batch; meaningful when that column is a patient id), e.g. egal+kcenter.\n"
        "example: egal simulate --pool data.parquet --strategies random,entropy,egal --seeds 5 --rounds 7 "
        "--budget 60 --init 150 --out results/",
        formatter_class=ConfigDefaultsFormatter,  # fills in the {loop.rounds}-style defaults of the help texts
    )
    parser.add_argument("--pool", help=f"the labelled pool: {POOL_FORMAT}; and a label column (or [data] path in "
                        "--config)")
    parser.add_argument("--out", required=True, help="output folder (created; reruns resume in it)")
    parser.add_argument("--config", help="TOML/YAML experiment config with [data], [train], [loop] sections")
    loop = parser.add_argument_group("active learning (override the config file)")
    loop.add_argument("--strategies", help="comma-separated strategies (default: {loop.strategies:list})")
    loop.add_argument("--alpha", type=float, help="entropy weight of 'egal', in [0, 1] (default: {loop.alpha})")
    loop.add_argument("--alpha-grid", type=_floats, help="comma-separated alphas, each run as an egal strategy")
    loop.add_argument("--seeds", type=_seeds,
                      help="number of seeds (5 = seeds 0..4) or a list like 0,3,7; one seed as a list: 3, "
                      "(default: {loop.seeds:seeds})")
    loop.add_argument("--rounds", type=int, help="selection rounds after the seed set (default: {loop.rounds})")
    loop.add_argument("--budget", type=int, help="rows annotated per round (default: {loop.budget})")
    loop.add_argument("--init", type=int, help="class-balanced seed set size (default: {loop.init})")
    loop.add_argument("--threads", type=int, help="torch CPU threads per process (default: torch's choice; with "
                      "--workers, the cores shared out)")
    loop.add_argument("--workers", type=int,
                      help="processes sharing out the (strategy, seed) runs; on a CPU, N one-thread workers get "
                      "more done than one N-thread process (default: {loop.workers})")
    data = parser.add_argument_group("data and split (override the config file)")
    data.add_argument("--label-column", help="class label column (default: {data.label_column})")
    data.add_argument("--group-column", help="patient / group column for a patient-level split (e.g. cv_fold)")
    data.add_argument("--test-groups", type=_strings, help="comma-separated groups forming the test set (e.g. 5)")
    data.add_argument("--test-fraction", type=float,
                      help="fraction held out when no --test-groups (default: {data.test_fraction})")
    data.add_argument("--cache-dir", help="keep decoded arrays here between runs")
    shortcut = parser.add_argument_group(
        "shortcut benchmark (override the config file's [shortcut])",
        "Burn a spurious marker, outside the ROI, into --shortcut-share of one class's pool images; the test set "
        "stays clean and a second test copy carries the marker on the other classes. Adds marker-test accuracy and "
        "the share of marked images each strategy selects to the report.")
    shortcut.add_argument("--shortcut-class", help="class whose pool images get the marker (turns the benchmark on)")
    shortcut.add_argument("--shortcut-share", type=float,
                          help="fraction of that class's pool images marked (default: {shortcut.share})")
    shortcut.add_argument("--shortcut-marker", choices=("square", "text"),
                          help="a bright square or a letter stamp (default: {shortcut.marker})")
    add_train_options(parser)
    add_quiet(parser, "no progress display")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..loop.config import ExperimentConfig, load_config
    from ..loop.simulation import run_simulation

    config = load_config(args.config) if args.config else ExperimentConfig()
    data = {k: getattr(args, k) for k in ("label_column", "group_column", "test_groups", "test_fraction", "cache_dir")
            if getattr(args, k) is not None}
    if args.pool:
        data["path"] = args.pool
    loop = {k: getattr(args, k) for k in ("strategies", "alpha", "alpha_grid", "seeds", "rounds", "budget", "init",
                                          "threads", "workers")
            if getattr(args, k) is not None}
    shortcut = {k: getattr(args, f"shortcut_{k}") for k in ("share", "marker")
                if getattr(args, f"shortcut_{k}") is not None}
    if args.shortcut_class is not None:
        shortcut["target_class"] = args.shortcut_class
    config = config.with_overrides(data=data, train=train_overrides(args), loop=loop, shortcut=shortcut)
    with egal_warnings_as_lines("simulate"):
        with errors_named_as_flags(flags_for(FLAG_NAMED)):
            result = run_simulation(config, args.out, progress=not args.quiet)
    report = result["report"]
    print(f"ran {len(result['ran'])} run(s), skipped {len(result['skipped'])} already finished; "
          f"summary: {report.get('summary_md')}, curves: {report.get('curves_png')}, "
          f"page: {report.get('report_html')}", file=sys.stdout)
    return 0


def _floats(text):
    import argparse

    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _seeds(text):
    import argparse

    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return n
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive count or a comma-separated list of seeds, "
                                         f"got {text!r}") from None


def _strings(text):
    return tuple(t.strip() for t in text.split(",") if t.strip())
