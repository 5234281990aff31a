"""`egal train`: train a classifier on the labelled rows of a pool, with the Grad-CAM/ROI Dice loss."""
from __future__ import annotations

import os
import sys
import tempfile
import warnings
import zipfile

from .._atomic import replaced_atomically
from .._checks import MAX_THREADS
from .._paths import check_new_file, check_not_an_input, check_replaceable
from ..errors import EgalError
from ._config_defaults import ConfigDefaultsFormatter
from ._train_options import add_train_options, train_overrides

MAX_LISTED = 10  # dropped rows named in the warning; the rest are counted


def register(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a classifier on a pool's labelled rows (cross-entropy + beta * Grad-CAM/ROI Dice)",
        description="Train an egal classifier on the labelled rows of a pool parquet (columns id, image, mask, and a "
        "label column; rows without a label are ignored). The loss is cross-entropy plus beta times the soft Dice "
        "distance between the differentiable Grad-CAM of the true class and the expert ROI (rows with an empty ROI "
        "skip that term). The prototypical head trains on N-way K-shot episodes and stores the class prototypes of "
        "all labelled rows; the linear head trains on mini-batches. Augmentation moves image and ROI together. "
        "The run is deterministic given --seed. Settings come from the built-in defaults, then --config "
        "(its [train] section), then the options below.",
        epilog="example: egal train --pool pool.parquet --out model.pt --architecture tiny_cnn --epochs 30 --beta 0.5",
        formatter_class=ConfigDefaultsFormatter,  # fills in the {train.epochs}-style defaults of the help texts
    )
    parser.add_argument("--pool", required=True, help="pool parquet with id, image, mask and a label column")
    parser.add_argument("--out", required=True, help="where to write the model file (egal.models.load_model reads it)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--config", help="TOML/YAML experiment config; its [train] and [data] sections are used")
    parser.add_argument("--label-column", help="column holding the class label (default: {data.label_column})")
    parser.add_argument("--exclude", action="append", default=[], metavar="COLUMN=VALUE",
                        help="leave out the rows whose COLUMN holds VALUE, e.g. --exclude split=test to keep a "
                        "labelled test split out of training (repeatable; the count left out is printed)")
    parser.add_argument("--seed", type=int, help="seed for initialisation, episodes and augmentation (default: "
                        "{train.seed})")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    add_train_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    # Checked before training, not after it.
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise EgalError(f"--threads must be a positive integer up to {MAX_THREADS}, got {args.threads}")
    check_not_an_input(args.out, "--out", {"--pool": args.pool, "--config": args.config})
    # --overwrite replaces a model, never another pool, table or archive.
    check_replaceable(args.out, "--out", _is_torch_archive, "a model file (a PyTorch archive, as egal train writes)")
    check_new_file(args.out, "--out", replace=args.overwrite, hint="--overwrite")
    exclude = [_column_value(text) for text in args.exclude]
    import torch

    from ..loop.config import ExperimentConfig, load_config
    from ..loop.data import load_dataset
    from ..models import save_model
    from ..pool import UndecodedRows
    from ..pool.labels import reads_as_missing
    from ..progress import Progress
    from ..train import train_model

    config = load_config(args.config) if args.config else ExperimentConfig()
    data = {"label_column": args.label_column} if args.label_column else {}
    seed = {} if args.seed is None else {"seed": args.seed}  # a config's [train] seed holds unless --seed is given
    config = config.with_overrides(data=data, train={**train_overrides(args), **seed})
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    train = config.train
    label_column = config.data.label_column
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndecodedRows)
        dataset = load_dataset(args.pool, train.input_size, train.in_channels, label_column=label_column,
                               exclude=exclude)
    _report_dropped_rows(caught, label_column)
    like_missing = [c for c in dataset.classes if reads_as_missing(c)]
    if like_missing:
        print(f"egal train: warning: class(es) {', '.join(map(repr, like_missing))} of column {label_column!r} read "
              "like a missing value (pandas' astype(str) writes a missing label so): they are trained as classes; if "
              "they mean no label, the pool should hold null there", file=sys.stderr, flush=True)
    if train.beta > 0 and not dataset.masks.any():
        print(f"egal train: warning: no labelled row has an ROI (mask or box): beta {train.beta:g} has no Grad-CAM/ROI "
              "Dice to train on, so this is cross-entropy alone", file=sys.stderr, flush=True)
    progress = Progress(train.epochs, enabled=not args.quiet, desc="epochs")
    if exclude:
        progress.log(f"left out {dataset.excluded} labelled row(s) by --exclude {' '.join(args.exclude)}")
    for note in episode_notes(train, dataset.labels, dataset.classes):
        progress.log(note)
    progress.log(f"{len(dataset)} labelled rows, classes {list(dataset.classes)}; {train.architecture} + "
                 f"{train.head} head at {train.input_size[0]}x{train.input_size[1]}, beta {train.beta}, "
                 f"{train.epochs} epochs")

    def on_epoch(epoch, summary):
        progress.advance(1, f"loss {summary['loss']:.3f}")
        progress.log(f"epoch {epoch + 1}/{train.epochs}: loss {summary['loss']:.4f} (ce {summary['ce']:.4f}, "
                     f"dice {summary['dice']:.4f})")

    try:
        model, history = train_model(dataset.images, dataset.masks, dataset.labels, dataset.classes, train,
                                     progress=on_epoch)
    finally:
        progress.close()
    model.config.extra["training"] = {k: v for k, v in train.to_dict().items() if k != "augment_settings"}
    if exclude:  # what the model was not trained on, with the model
        model.config.extra["training"]["excluded"] = {"rows": dataset.excluded, "by": args.exclude}
    _save_or_rescue(model, args.out, save_model)
    print(f"wrote {args.out} ({train.architecture}, {train.head} head, classes {list(dataset.classes)}; "
          f"trained in {history.seconds:.1f} s)", file=sys.stdout)
    return 0


def episode_notes(train, labels, classes) -> list[str]:
    """What the prototypical head's episodes take less of than asked, since the labelled rows do not have more
    (egal.train.episodes): fewer classes than n_way, or a class with k_shot rows or fewer (one is kept as query)."""
    if train.head != "prototypical":
        return []
    import numpy as np

    counts = np.bincount(np.asarray(labels), minlength=len(classes))
    usable = int((counts >= 2).sum())  # a class takes part in episodes with a support and a query row
    notes = []
    single = [repr(classes[c]) for c in range(len(classes)) if counts[c] < 2]
    if single:
        notes.append(f"class(es) {', '.join(single)} with a single labelled row take part in no episode (one row is "
                     "support or query, not both); the head's prototypes still include them")
    if train.n_way > usable:
        notes.append(f"n_way {train.n_way} (--n-way) with {usable} classes of 2 rows or more: episodes are "
                     f"{usable}-way")
    small = [f"{classes[c]!r} ({counts[c]} rows)" for c in range(len(classes)) if 2 <= counts[c] <= train.k_shot]
    if small:
        notes.append(f"k_shot {train.k_shot} (--k-shot): these classes have too few rows and give fewer support "
                     f"rows, one row always kept as query: {', '.join(small)}")
    return notes


def _save_or_rescue(model, out: str, save_model) -> None:
    """Writes the model to `out` whole under a temporary name, then renamed (--out never holds half a model). When
    that fails after the training (a disk that filled, a folder removed or made read-only meanwhile), the model is
    written to the temporary folder instead, and the error says where: the training is not lost."""
    try:
        with replaced_atomically(os.path.abspath(out)) as tmp:
            save_model(model, tmp)
        return
    except (OSError, RuntimeError) as exc:  # torch.save reports a file it cannot open as a RuntimeError
        problem = f"--out {out!r} could not be written ({type(exc).__name__}: {str(exc).strip() or 'no detail'})"
    rescue = None
    try:
        fd, rescue = tempfile.mkstemp(prefix="egal-train-", suffix=".pt")
        os.close(fd)
        save_model(model, rescue)
    except (OSError, RuntimeError) as exc:
        if rescue is not None and os.path.exists(rescue):
            os.remove(rescue)
        raise EgalError(f"{problem}; nor could the trained model be kept in the temporary folder "
                        f"{tempfile.gettempdir()!r} ({type(exc).__name__}: {exc}): it is lost") from None
    raise EgalError(f"{problem}; the trained model was written to {rescue} instead: move it where it belongs")


def _column_value(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not column or not value:
        raise EgalError(f"--exclude {text!r} must be COLUMN=VALUE, e.g. --exclude split=test")
    return column, value


def _is_torch_archive(path) -> bool:
    """A file torch.save wrote: a zip archive whose one top folder holds data.pkl."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.count("/") == 1 and name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _report_dropped_rows(caught, label_column: str) -> None:
    """Say which labelled rows were left out of training because they cannot be decoded (to stderr,
    --quiet or not: it changes what the model learns from); other warnings are shown as usual."""
    from ..pool import UndecodedRows
    from ..pool.labels import is_label

    for entry in caught:
        if not issubclass(entry.category, UndecodedRows):
            warnings.showwarning(entry.message, entry.category, entry.filename, entry.lineno)
            continue
        dropped = [(row, ident, reason) for row, ident, reason, extra in entry.message.failures
                   if is_label(extra.get(label_column))]
        if not dropped:
            continue
        shown = "; ".join(f"row {row} (id {ident!r}): {reason}" for row, ident, reason in dropped[:MAX_LISTED])
        more = f"; and {len(dropped) - MAX_LISTED} more" if len(dropped) > MAX_LISTED else ""
        print(f"egal train: warning: left out {len(dropped)} labelled row(s) that cannot be decoded: {shown}{more}",
              file=sys.stderr, flush=True)
