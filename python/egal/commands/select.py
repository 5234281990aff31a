"""`egal select`: choose the batch to annotate again from an `egal score` output, without rescoring."""
from __future__ import annotations

import sys

from ..selection import CANDIDATE_FACTOR, DIVERSITY_METHODS
from ._flags import add_quiet, errors_named_as_flags


def register(subparsers):
    parser = subparsers.add_parser(
        "select",
        help="choose the batch to annotate from scores already computed (group caps, diverse batches)",
        description="Choose K rows to annotate from the output of egal score, without scoring again: the top K "
        "scores (ties by id, rows in error never chosen), optionally at most N per group (a patient or study id "
        "read from the pool) and optionally a diverse batch in the model's embedding space (written by egal score "
        "--embeddings). Writes the selection CSV (rank, id, score, entropy_norm, misalignment, pred, and the group "
        "column with a cap; rank is the row's rank among the rows that can be selected) and prints it.",
        epilog="Example: egal score --pool pool.parquet --model model.pt --out round3.parquet --embeddings, then "
        "egal select --scores round3.parquet --select 60 --diversity kcenter --pool pool.parquet --group-column "
        "patient_id --per-group 2 --out round3.batch.csv",
    )
    parser.add_argument("--scores", required=True, help="the scores Parquet file egal score wrote (its --out)")
    parser.add_argument("--select", type=int, required=True, metavar="K", help="how many rows to choose")
    parser.add_argument("--out", metavar="CSV",
                        help="the selection CSV (default: NAME.selection.csv next to --scores); an existing file "
                        "needs --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--diversity", choices=DIVERSITY_METHODS, default="none",
                        help="none: the top K. kcenter: spread the batch over the embedding space (greedy k-center "
                        f"over the top {CANDIDATE_FACTOR} x K rows, leaning towards higher scores). cluster: k-means "
                        f"of the top {CANDIDATE_FACTOR} x K rows into K clusters, the best row of each "
                        "(default: %(default)s)")
    parser.add_argument("--embeddings", metavar="PARQUET",
                        help="the embeddings egal score --embeddings wrote (default: NAME.embeddings.parquet next to "
                        "--scores); read by --diversity, for its candidates' rows only")
    parser.add_argument("--pool", help="the scored pool, read for --group-column alone")
    parser.add_argument("--group-column", metavar="COLUMN", help="a pool column naming each row's group (patient id)")
    parser.add_argument("--per-group", type=int, metavar="N",
                        help="at most N rows per --group-column value, each group's best first")
    parser.add_argument("--include-labelled", action="store_true",
                        help="select rows that the scored pool already labelled too (by default they are never "
                        "selected; the scores file's labelled column says which)")
    add_quiet(parser)
    parser.set_defaults(func=run)


# select_from_scores' arguments and the options behind them, for messages.
OPTION_OF = {"k": "--select", "scores": "--scores", "out": "--out", "diversity": "--diversity",
             "embeddings": "--embeddings", "pool": "--pool", "group_column": "--group-column",
             "per_group": "--per-group", "groups": "--group-column", "overwrite": "--overwrite",
             "include_labelled": "--include-labelled"}


def run(args) -> int:
    from ..selection.csv_file import selection_path_for
    from ..selection.from_scores import select_from_scores
    from .score import describe_batch, print_selection, shortfall_note

    out = args.out or selection_path_for(args.scores)
    with errors_named_as_flags(OPTION_OF.get):  # SelectionError and the argument checks: named by their option
        chosen = select_from_scores(args.scores, args.select, out=out, diversity=args.diversity,
                                    embeddings=args.embeddings, pool=args.pool, group_column=args.group_column,
                                    per_group=args.per_group, overwrite=args.overwrite,
                                    include_labelled=args.include_labelled)
    if not args.quiet:
        how = describe_batch(chosen.selection, args.group_column).lstrip(", ") or "the top scores"
        print(f"The {chosen.table.num_rows} images to annotate next ({how}), written to {out}:")
        print_selection(chosen.table)
        if chosen.selection.shortfall:
            print(shortfall_note(chosen.selection, args.group_column, args.include_labelled), file=sys.stderr)
    return 0
