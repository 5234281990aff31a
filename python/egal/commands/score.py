"""`egal score`: rank an unlabeled pool by what is worth annotating next.

The command builds egal.score_pool's arguments and prints what it returns; the scoring,
its checks and its defaults are the library's (egal.pipeline.options.ScoreOptions).
"""
from __future__ import annotations

import sys

from .._display import shown
from ..pipeline.options import COMBINE_METHODS, DEFAULTS, ENGINES, default_workers
from ..pipeline.runtime import PARITY_ATOL, RUNTIMES
from ..selection import CANDIDATE_FACTOR, DIVERSITY_METHODS
from ..selection.csv_file import SELECTION_COLUMNS
from ._flags import add_device, add_quiet, egal_warnings_as_lines, errors_named_as_flags, flags_for
from ._pool_format import POOL_FORMAT

NO_MODEL_HELP = """egal score needs a trained model: --model model.pt (PyTorch) or model.onnx (exported).
  - To try egal end to end without data or downloads, run `egal demo --out egal-demo`: it generates a
    synthetic lesion pool, trains a tiny model on it and writes egal-demo/model.pt and egal-demo/model.onnx.
  - To train on your own labelled rows: `egal train --pool pool.parquet --out model.pt`.
  - To score on a node without PyTorch: `egal export --model model.pt --out model.onnx` elsewhere, then
    --model model.onnx."""

# egal.score_pool's arguments, each from the option of the same name (batch_size from --batch-size).
API_ARGUMENTS = ("out", "alpha", "combine", "batch_size", "device", "runtime", "workers", "engine", "ray_address",
                 "resume", "overwrite", "select", "select_out", "embeddings", "diversity", "group_column", "per_group",
                 "include_labelled", "label_column", "verbose")


def register(subparsers):
    parser = subparsers.add_parser(
        "score",
        help="score a pool of unlabeled images and rank what to annotate next",
        description="Score every image of a Parquet pool with a trained model: softmax entropy, Grad-CAM, "
        "and the soft Dice distance between the Grad-CAM and the expert ROI, fused into one score "
        "(S = alpha * entropy_norm + (1 - alpha) * misalignment; docs/scoring.md; --combine rank mixes the two terms' "
        "ranks instead). Writes one output row per "
        "input row (id, pred, entropy, entropy_norm, misalignment, score, rank, status, error, labelled); rank 1 "
        "is the image most worth annotating. Rows that cannot be decoded get status 'error' with the reason and "
        "are never selected; rows the pool already labels are scored but not ranked or selected (they need no "
        "annotation; --include-labelled ranks them too). Output is written in crash-safe shards: a killed run "
        "continues with --resume.",
        epilog=f"Pool format: {POOL_FORMAT}; label (optional: a labelled row is never "
        "selected; null, NaN, empty or blank means unlabelled; --label-column names another column). "
        "Example: egal score --pool pool.parquet --model model.pt --select 60. "
        "A patient-aware, diverse batch: egal score --pool pool.parquet --model model.pt --select 60 --embeddings "
        "--diversity kcenter --group-column patient_id --per-group 2 (egal select redoes a selection later without "
        "rescoring).",
    )
    parser.add_argument("--pool", required=True, help="Parquet file or folder of Parquet files (see the format below)")
    parser.add_argument("--model",
                        help="trained model: .pt (egal.models.save_model / egal train) or .onnx (egal export)")
    parser.add_argument("--alpha", type=float, default=DEFAULTS["alpha"],
                        help="weight of entropy against misalignment in [0, 1]: 1 is entropy only, 0 attention only "
                        "(default: %(default)s)")
    parser.add_argument("--combine", choices=COMBINE_METHODS, default=DEFAULTS["combine"],
                        help="how the two terms are mixed into the score (default: %(default)s). raw: alpha * "
                        "entropy_norm + (1 - alpha) * misalignment, docs/scoring.md's formula. rank: the same mix of "
                        "each term's normalised rank over the scored pool, (rank - 1) / (n - 1) in [0, 1] with ties "
                        "sharing their average rank, so that the term with the wider spread does not decide most of "
                        "the order (in egal demo entropy_norm spreads several times as widely as misalignment, so at "
                        "alpha 0.5 raw is ordered mostly by entropy: README, 'Mixing the two terms'). Rows without "
                        "ROI get the entropy term alone either way. The entropy_norm and misalignment columns are "
                        "written unchanged; only score and rank differ")
    parser.add_argument("--select", type=int, metavar="K", default=DEFAULTS["select"],
                        help="also write the K ids to annotate next as CSV and print them")
    parser.add_argument("--include-labelled", action="store_true", default=DEFAULTS["include_labelled"],
                        help="rank and select rows that the pool already labels too (by default they are scored but "
                        "never selected: the pool after `egal pool add-labels` is scored again each round)")
    parser.add_argument("--label-column", default=DEFAULTS["label_column"], metavar="COLUMN",
                        help="the pool column whose filled cells mark the rows already labelled (default: "
                        "%(default)s; the column egal train --label-column names)")
    parser.add_argument("--out", default=DEFAULTS["out"], help="output Parquet file (default: %(default)s)")
    parser.add_argument("--select-out", metavar="CSV", default=DEFAULTS["select_out"],
                        help="where --select writes its CSV (default: next to --out, NAME.selection.csv)")
    parser.add_argument("--report", metavar="DIR",
                        help="also write the selection page, DIR/report.html (egal report: the selection with its "
                        "Grad-CAM and ROI, the pool's uncertainty against misalignment), once scoring is done; "
                        "--overwrite replaces an existing page")
    batch = parser.add_argument_group(
        "the batch (egal.selection; README, 'Choosing the batch')",
        "Without these, --select takes the K best scores (ties by id), as the paper does.")
    batch.add_argument("--embeddings", action="store_true", default=DEFAULTS["embeddings"],
                       help="also write each row's embedding (the prototypical embedding; the pooled feature for a "
                       "linear head) to NAME.embeddings.parquet next to --out, 4 bytes x D per row (128-d: 0.5 KB, "
                       "512-d: 2 KB), so that --diversity can use it now or egal select later")
    batch.add_argument("--diversity", choices=DIVERSITY_METHODS, default=DEFAULTS["diversity"],
                       help="none: the top K. kcenter: spread the batch over the embedding space (greedy k-center "
                       f"over the top {CANDIDATE_FACTOR} x K rows, leaning towards higher scores). cluster: k-means "
                       f"of the top {CANDIDATE_FACTOR} x K rows into K clusters, the best row of each. Both need "
                       "--embeddings (default: %(default)s)")
    batch.add_argument("--group-column", metavar="COLUMN", default=DEFAULTS["group_column"],
                       help="a pool column naming each row's group (patient or study id), for --per-group")
    batch.add_argument("--per-group", type=int, metavar="N", default=DEFAULTS["per_group"],
                       help="at most N selected rows per --group-column value, each group's best first (the "
                       "batch can then hold fewer than K rows; the summary says so)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                        help="images per model call and per output shard (default: %(default)s)")
    add_device(parser, DEFAULTS["device"])
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULTS["runtime"],
                        help="what runs the model (default: %(default)s). auto: a .pt model is exported once to ONNX "
                        "(kept beside it as MODEL.pt.KEY.onnx, KEY from the file's content), the graph's scores are "
                        f"checked against PyTorch's on the first batch (within {PARITY_ATOL:g}), and onnxruntime "
                        "scores the pool, faster than PyTorch on a CPU (bench/README.md); PyTorch scores instead, "
                        "saying why, without onnxruntime or egal-al[export], for a model without closed-form Grad-CAM, "
                        "or when the scores differ. With --device cuda, auto times both on the first batch and keeps "
                        "the faster. torch: PyTorch always. onnxruntime: onnxruntime always (an error says what is "
                        "missing). An .onnx model always runs with onnxruntime")
    parser.add_argument("--workers", type=int, default=DEFAULTS["workers"],
                        help="local engine: decoder processes running beside the model, 0 decodes in the main "
                        "process; ray engine: scoring actors, each loading the model once (default: CPU count - 1, "
                        f"at most 4, and 0 below 4 CPUs: {default_workers()} here; the local engine takes at most "
                        "twice the CPUs)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", default=DEFAULTS["resume"],
                       help="finish an interrupted run with the same arguments: only batches without output are "
                       "scored. Refused, with what differs, when the unfinished (or finished) run at --out had other "
                       "arguments (pool, model, alpha, combine, batch size, device, runtime, engine, "
                       "include-labelled); without a run "
                       "at --out, starts one")
    again.add_argument("--overwrite", action="store_true", default=DEFAULTS["overwrite"],
                       help="replace --out if it exists (once the new output is complete), and delete an unfinished "
                       "run's shards at --out first")
    parser.add_argument("--engine", choices=ENGINES, default=DEFAULTS["engine"],
                        help="local: this machine; ray: Ray Data on a Ray cluster (default: %(default)s)")
    parser.add_argument("--ray-address", default=DEFAULTS["ray_address"],
                        help="Ray cluster to join with --engine ray (e.g. ray://head:10001 or auto); "
                        "default: RAY_ADDRESS, else a local Ray instance")
    add_quiet(parser, "no progress output", default=not DEFAULTS["progress"])
    parser.add_argument("--verbose", action="store_true", default=DEFAULTS["verbose"],
                        help="--engine ray: show Ray's own log output here instead of keeping it in NAME.ray.log "
                        "next to --out")
    parser.set_defaults(func=run)


def run(args) -> int:
    if not args.model:
        print(NO_MODEL_HELP, file=sys.stderr)
        return 2
    from ..pipeline.options import ScoreOptions
    from ..pipeline.scoring_job import run_scoring

    with errors_named_as_flags(option_of):
        options = ScoreOptions(pool=args.pool, model=args.model, progress=not args.quiet,
                               **{name: getattr(args, name) for name in API_ARGUMENTS})
    if args.report:
        from ..report.selection_page import check_page_out
        from .report import after_scoring_option_of

        with errors_named_as_flags(after_scoring_option_of):
            check_page_out(args.report, args.overwrite)  # before the scoring, not after
    with egal_warnings_as_lines("score"), errors_named_as_flags(option_of):  # a pool that does not fit an option, too
        result = run_scoring(options)
    print_summary(result)
    if result.rows_scored == 0:
        print(f"egal score: error: none of the {result.rows} rows could be scored (all {result.rows} are in "
              f"error; the reasons are in the error column of {result.out})", file=sys.stderr)
        return 1
    if args.report:
        from .report import report_after_scoring

        report_after_scoring(result, args.report, quiet=args.quiet)
    return 0


# The command-line option behind one of egal.score_pool's arguments (None for any other name).
option_of = flags_for([*API_ARGUMENTS, "pool", "model"])


def print_summary(result) -> None:
    """What `egal score` prints at the end: counts and time, the first rows in error, and the selection."""
    options = result.options
    if result.already_complete:
        print(f"{result.out}: {result.rows_scored} of {result.rows} rows scored ({result.rows_in_error} in error), "
              "by an earlier run with these arguments")
    else:
        session = " this session" if result.resumed else ""
        print(f"Scored {result.rows_scored} of {result.rows} rows ({result.rows_in_error} in error) in "
              f"{result.seconds:.1f} s, {result.rows_per_second:.1f} rows/s{session} with {result.runtime}; "
              f"wrote {result.out}")
    if result.rows_in_error:
        shown = result.errors(limit=5)
        more = result.rows_in_error - len(shown)
        print("Rows in error (never selected): " + "; ".join(f"{i}: {r}" for i, r in shown)
              + (f"; and {more} more (status column of {result.out})" if more > 0 else ""))
    labelled = labelled_count(result.table)
    if labelled and not options.include_labelled:
        print(f"{labelled} row(s) that the pool already labels are scored but neither ranked nor selected "
              "(--include-labelled selects them too)")
    if result.selection is not None:
        chosen = result.selection
        how = f"alpha={options.alpha}" + (f", --combine {options.combine}" if options.combine != "raw" else "")
        if chosen.num_rows == 0:
            why = "no row could be scored" if result.rows_scored == 0 else "every scored row is already labelled"
            print(f"\nNo image to annotate next: {why} ({result.selection_path} lists none)")
            return
        how += describe_batch(result.batch, options.group_column)
        print(f"\nThe {chosen.num_rows} images to annotate next ({how}), written to {result.selection_path}:")
        print_selection(chosen, limit=25)
        if result.batch.shortfall:
            print(shortfall_note(result.batch, options.group_column, options.include_labelled))


def describe_batch(batch, group_column) -> str:
    """', at most 2 per patient_id, kcenter among the top 600' for a Selection."""
    text = ""
    if batch.per_group is not None:
        text += f", at most {batch.per_group} per {group_column}"
    if batch.diversity != "none":
        text += f", {batch.diversity} among the top {batch.candidates}"
    return text


def selectable_rows_text(include_labelled: bool) -> str:
    return "rows with a valid score" + ("" if include_labelled else " and no label")


def labelled_count(table) -> int:
    """Rows of a scores table that the pool labels (0 for an output written before egal kept the column)."""
    from ..pipeline.ranking import LABELLED

    return sum(table.column(LABELLED).to_pylist()) if LABELLED in table.column_names else 0


def shortfall_note(batch, group_column, include_labelled: bool) -> str:
    why = selectable_rows_text(include_labelled)
    if batch.per_group is not None:
        why += f", at most {batch.per_group} per {group_column}"
    return (f"Note: {len(batch.positions)} of the {batch.k} asked for: only {batch.selectable} rows can be selected "
            f"({why})")


def print_selection(table, limit: int = 25) -> None:
    """The selection as a table on stdout (egal score --select and egal select)."""
    cols = {c: table.column(c).to_pylist() for c in SELECTION_COLUMNS}
    cols["id"], cols["pred"] = [shown(i) for i in cols["id"]], [shown(p) for p in cols["pred"]]
    width = max([len("id")] + [len(i) for i in cols["id"][:limit]])
    print(f"  {'rank':>5}  {'id':<{width}}  {'score':>6}  {'entropy_norm':>12}  {'misalignment':>12}  pred")
    for r in range(min(limit, table.num_rows)):
        mis = cols["misalignment"][r]
        mis = "no ROI" if mis is None or mis != mis else f"{mis:.4f}"
        rank = "" if cols["rank"][r] is None else cols["rank"][r]
        print(f"  {rank:>5}  {cols['id'][r]:<{width}}  {cols['score'][r]:>6.4f}  "
              f"{cols['entropy_norm'][r]:>12.4f}  {mis:>12}  {cols['pred'][r]}")
    if table.num_rows > limit:
        print(f"  ... and {table.num_rows - limit} more in the CSV")
