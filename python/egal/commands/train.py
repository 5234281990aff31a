"""`egal train`: train a classifier on the labelled rows of a pool, with the Grad-CAM/ROI Dice loss."""
from __future__ import annotations

import sys

from .._checks import check_threads
from ..errors import EgalError
from ._config_defaults import ConfigDefaultsFormatter
from ._flags import add_quiet, egal_warnings_as_lines, errors_named_as_flags
from ._pool_format import POOL_FORMAT
from ._train_options import add_train_options, train_overrides

# How the checks of --out name the arguments here (egal.train.from_pool.check_model_out).
FLAGS = {"out": "--out", "pool": "--pool", "config": "--config", "overwrite": "--overwrite", "threads": "--threads",
         "exclude": "--exclude", "label_column": "--label-column"}


def register(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a classifier on a pool's labelled rows (cross-entropy + beta * Grad-CAM/ROI Dice)",
        description="Train an egal classifier on the labelled rows of a pool (see --pool; rows without a "
        "label are ignored). The loss is cross-entropy plus beta times the soft Dice "
        "distance between the differentiable Grad-CAM of the true class and the expert ROI (rows with an empty ROI "
        "skip that term). The prototypical head trains on N-way K-shot episodes and stores the class prototypes of "
        "all labelled rows; the linear head trains on mini-batches. Augmentation moves image and ROI together. "
        "The run is deterministic given --seed. Settings come from the built-in defaults, then --config "
        "(its [train] section), then the options below.",
        epilog="example: egal train --pool pool.parquet --out model.pt --architecture tiny_cnn --epochs 30 --beta 0.5",
        formatter_class=ConfigDefaultsFormatter,  # fills in the {train.epochs}-style defaults of the help texts
    )
    parser.add_argument("--pool", help=f"the pool: {POOL_FORMAT}; and a label column (default: the --config file's "
                        "[data] path)")
    parser.add_argument("--out", required=True, help="where to write the model file (egal.models.load_model reads it)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--config", help="TOML/YAML experiment config; its [train] and [data] (path, label_column) "
                        "sections are used")
    parser.add_argument("--label-column", help="column holding the class label (default: {data.label_column})")
    parser.add_argument("--exclude", action="append", default=[], metavar="COLUMN=VALUE",
                        help="leave out the rows whose COLUMN holds VALUE, e.g. --exclude split=test to keep a "
                        "labelled test split out of training (repeatable; the count left out is printed)")
    parser.add_argument("--seed", type=int, help="seed for initialisation, episodes and augmentation (default: "
                        "{train.seed})")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_quiet(parser, "no progress display")
    add_train_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    """egal.train.train_pool with the parsed arguments; prints its warnings and what it wrote."""
    from ..train.from_pool import TrainingWarning, check_model_out, train_pool

    # Checked before training, not after it.
    if args.threads is not None:
        with errors_named_as_flags(FLAGS.get):
            check_threads(args.threads)
    check_model_out(args.out, overwrite=args.overwrite, pool=args.pool, config=args.config, names=FLAGS)
    exclude = [_column_value(text) for text in args.exclude]
    seed = {} if args.seed is None else {"seed": args.seed}  # a config's [train] seed holds unless --seed is given
    with egal_warnings_as_lines("train", always=(TrainingWarning,)):
        with errors_named_as_flags(FLAGS.get):  # one about out (a model trained but not saved) names --out
            result = train_pool(args.pool, args.out, args.config, train={**train_overrides(args), **seed},
                                label_column=args.label_column, exclude=exclude, overwrite=args.overwrite,
                                progress=not args.quiet, threads=args.threads)
    print(result.summary(), file=sys.stdout)
    return 0


def _column_value(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not column or not value:
        raise EgalError(f"--exclude {text!r} must be COLUMN=VALUE, e.g. --exclude split=test")
    return column, value
