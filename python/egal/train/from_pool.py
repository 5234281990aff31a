"""Train a classifier on the labelled rows of a pool and save it: what `egal train` runs.

    from egal.train import TrainConfig, train_pool
    result = train_pool("pool.parquet", "model.pt", TrainConfig(architecture="tiny_cnn", epochs=30, beta=0.5))
    result.model, result.history, result.rows, result.dropped, result.notes, result.warnings

The steps around train_model: the settings (a TrainConfig, an experiment config or its file, with overrides),
the checks of `out` before any work, the pool's labelled rows decoded (those that cannot be are left out and
named), warnings for settings that train but not as they read, the model's training record
(model.config.extra["training"]) and a save that never leaves half a model, nor loses a trained one.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .._atomic import (
    DestinationError,
    OutputLock,
    publish,
    remove_stale_temporaries,
    remove_temporary,
    temporary_path,
)
from .._checks import bad_argument, check_bool, check_threads
from .._disk import advice, is_disk_error, meaning
from .._paths import check_new_file, check_not_an_input, check_replaceable
from .._torch_file import is_torch_archive
from ..errors import EgalError
from .config import TrainConfig

MAX_LISTED = 10  # dropped rows named in the warning; the rest are counted
MODEL_FILE = "a model file (a PyTorch archive, as egal train writes)"
# How the checks of `out` name the arguments: as a Python caller writes them; `egal train` passes its flags.
PYTHON_NAMES = {"out": "out (--out)", "pool": "pool (--pool)", "config": "config (--config)",
                "overwrite": "overwrite=True (--overwrite)"}


class TrainingWarning(UserWarning):
    """A pool or a setting that trains, but not as it reads: labelled rows left out because they cannot be
    decoded, labels that read like missing values, beta > 0 without any ROI to train the Dice term on."""


class ModelNotSaved(EgalError):
    """The model was trained but could not be written to `out`. `rescued`: where it was written instead (in the
    temporary folder), or None when that failed too; `model`: the trained model, to save elsewhere."""

    rescued: str | None = None
    model: object = None


@dataclass(frozen=True)
class TrainResult:
    """What train_pool trained and wrote."""

    out: str  # where the model was written (egal.models.load_model reads it)
    model: object  # the trained EGALClassifier, in eval mode, as saved
    history: object  # egal.train.TrainHistory: per-epoch losses, images, seconds
    config: TrainConfig  # the settings it trained with (also in model.config.extra["training"])
    label_column: str
    classes: tuple  # the class names, in the model's order
    rows: int  # labelled rows trained on
    excluded: int  # labelled rows left out by `exclude`
    dropped: tuple  # (row, id, reason) of the labelled rows left out because they cannot be decoded
    notes: tuple  # where the prototypical head's episodes take less than asked (episode_notes)
    warnings: tuple  # the TrainingWarning messages, in the order they were warned

    def summary(self) -> str:
        c = self.config
        return (f"wrote {self.out} ({c.architecture}, {c.head} head, classes {list(self.classes)}; trained in "
                f"{self.history.seconds:.1f} s)")


def check_model_out(out, *, overwrite: bool = False, pool=None, config=None, names: Mapping = PYTHON_NAMES) -> None:
    """EgalError unless a trained model may be written to `out`, said before any training: it is not the pool nor
    the config file, it replaces only an earlier model file (never another pool, table or archive), and that only
    with overwrite; its folder exists and can be written in. names: how the messages name out, pool, config and
    overwrite (PYTHON_NAMES; egal train passes its flags)."""
    config_file = config if isinstance(config, (str, os.PathLike)) else None
    check_not_an_input(out, names["out"], {names["pool"]: pool, names["config"]: config_file})
    check_replaceable(out, names["out"], is_torch_archive, MODEL_FILE)
    check_new_file(out, names["out"], replace=overwrite, hint=names["overwrite"])


def train_pool(pool, out, config=None, *, train: Mapping | None = None, label_column: str | None = None,
               exclude=(), overwrite: bool = False, progress: bool | Callable = False,
               threads: int | None = None) -> TrainResult:
    """Train a classifier on the labelled rows of `pool` and write it to `out`; returns a TrainResult.

    pool: the pool (a Parquet file or folder); None: the config's [data] path.
    config: a TrainConfig; an egal.loop.ExperimentConfig, or the path of its TOML/YAML file (its [train] section
        and [data] path and label_column are used); None for the defaults. train: TrainConfig fields that override it
        ({"epochs": 30, "beta": 0.5}); label_column: the column of the class labels (default: the config's,
        "label"). Rows without a label are not trained on.
    exclude: (column, value) pairs, or a {column: value} mapping: the labelled rows whose column holds the value
        are left out, as a labelled test split is (("split", "test"),); recorded with the model.
    overwrite: replace `out` if it is an earlier model file (never any other file).
    progress: True shows what egal train shows (a bar on a terminal, else log lines on stderr: the rows left out,
        the episode notes, a summary, each epoch's loss); a callable is called as progress(epoch, {"loss", "ce",
        "dice"}) after every epoch instead; False shows nothing.
    threads: PyTorch's CPU threads while it trains (None: as they are); the earlier number is restored after.

    Labelled rows that cannot be decoded are left out (TrainResult.dropped), and that, labels that read like a
    missing value ('nan') and beta > 0 without any ROI are warned (TrainingWarning, also in TrainResult.warnings).
    The model is written whole under a temporary name, then renamed; when that fails after the training it is
    written to the temporary folder instead and ModelNotSaved says where. A bad argument, pool or `out` raises
    ValueError / TypeError before any training.
    """
    check_bool(overwrite, "overwrite")
    if threads is not None:
        check_threads(threads)
    if not (isinstance(progress, bool) or callable(progress)):
        raise bad_argument(TypeError, "progress", f"must be True, False or a callable(epoch, summary), got "
                           f"{progress!r}")
    exclude = _pairs(exclude)
    settings, data = _settings(config, train, label_column)
    label_column = data.label_column
    if pool is None:
        if not data.path:
            raise bad_argument(EgalError, "pool", "is not given, nor a config's [data] path: name the pool to train "
                               "on")
        pool = data.path
    check_model_out(out, overwrite=overwrite, pool=pool, config=config)
    # Held until the model is saved: a second egal train to the same --out is refused now, not after its training.
    with OutputLock(out, "out (--out)"), _torch_threads(threads):
        remove_stale_temporaries(out)  # copies of the model that a killed run left beside it
        return _train_checked(pool, out, settings, label_column, exclude, overwrite, progress)


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """PyTorch's CPU threads set to `threads` inside the block (None: left alone), and restored after it: a notebook
    that trains with threads=1 keeps its own setting."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_checked(pool, out, settings, label_column, exclude, overwrite, progress) -> TrainResult:
    replace = overwrite and os.path.lexists(out)  # what the save may replace: only the model checked now

    from ..pool.labels import reads_as_missing
    from ..progress import Progress
    from .trainer import train_model

    warned: list[str] = []

    def warn(message: str) -> None:
        warned.append(message)
        warnings.warn(message, TrainingWarning, stacklevel=3)

    dataset, dropped = _load(pool, settings, label_column, exclude)
    if dropped:
        shown = "; ".join(f"row {row} (id {ident!r}): {reason}" for row, ident, reason in dropped[:MAX_LISTED])
        more = f"; and {len(dropped) - MAX_LISTED} more" if len(dropped) > MAX_LISTED else ""
        warn(f"left out {len(dropped)} labelled row(s) that cannot be decoded: {shown}{more}")
    like_missing = [c for c in dataset.classes if reads_as_missing(c)]
    if like_missing:
        warn(f"class(es) {', '.join(map(repr, like_missing))} of column {label_column!r} read like a missing value "
             "(pandas' astype(str) writes a missing label so): they are trained as classes; if they mean no label, "
             "the pool should hold null there")
    if settings.beta > 0 and not dataset.masks.any():
        warn(f"no labelled row has an ROI (mask or box): beta {settings.beta:g} has no Grad-CAM/ROI Dice to train "
             "on, so this is cross-entropy alone")
    notes = episode_notes(settings, dataset.labels, dataset.classes)
    by = [f"{column}={value}" for column, value in exclude]
    display = Progress(settings.epochs, enabled=progress is True, desc="epochs")
    if exclude:
        display.log(f"left out {dataset.excluded} labelled row(s) by --exclude {' '.join(by)}")
    for note in notes:
        display.log(note)
    h, w = settings.input_size
    display.log(f"{len(dataset)} labelled rows, classes {list(dataset.classes)}; {settings.architecture} + "
                f"{settings.head} head at {h}x{w}, beta {settings.beta}, {settings.epochs} epochs")

    def on_epoch(epoch, summary):
        display.advance(1, f"loss {summary['loss']:.3f}")
        display.log(f"epoch {epoch + 1}/{settings.epochs}: loss {summary['loss']:.4f} (ce {summary['ce']:.4f}, "
                    f"dice {summary['dice']:.4f})")

    try:
        model, history = train_model(dataset.images, dataset.masks, dataset.labels, dataset.classes, settings,
                                     progress=progress if callable(progress) else on_epoch)
    finally:
        display.close()
    model.config.extra["training"] = {k: v for k, v in settings.to_dict().items() if k != "augment_settings"}
    if exclude:  # what the model was not trained on, with the model
        model.config.extra["training"]["excluded"] = {"rows": dataset.excluded, "by": by}
    _save_or_rescue(model, out, replace=replace)
    return TrainResult(os.fspath(out), model, history, settings, label_column, tuple(dataset.classes), len(dataset),
                       dataset.excluded, tuple(dropped), tuple(notes), tuple(warned))


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


def _pairs(exclude) -> tuple:
    """`exclude` as a tuple of (column, value) pairs; TypeError for anything else (a bare pair, a string)."""
    if isinstance(exclude, Mapping):
        exclude = list(exclude.items())
    if isinstance(exclude, (str, bytes)) or not hasattr(exclude, "__iter__"):
        raise bad_argument(TypeError, "exclude", f"must be (column, value) pairs, e.g. [('split', 'test')], got "
                           f"{exclude!r}")
    pairs = []
    for pair in exclude:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise bad_argument(TypeError, "exclude", f"must be (column, value) pairs, e.g. [('split', 'test')], "
                               f"got {pair!r} among them")
        pairs.append(tuple(pair))
    return tuple(pairs)


def _settings(config, train, label_column):
    """The TrainConfig and the DataConfig (pool path, label column) that `config`, the `train` overrides and
    `label_column` make."""
    from ..loop.config import ExperimentConfig, load_config

    if config is None:
        experiment = ExperimentConfig()
    elif isinstance(config, (str, os.PathLike)):
        experiment = load_config(config)
    elif isinstance(config, ExperimentConfig):
        experiment = config
    elif isinstance(config, TrainConfig):
        experiment = ExperimentConfig(train=config)
    else:
        raise bad_argument(TypeError, "config", "must be a TrainConfig, an egal.loop.ExperimentConfig, the path of "
                           f"a config file or None, got {type(config).__name__}")
    if train is not None and not isinstance(train, Mapping):
        raise bad_argument(TypeError, "train", f"must be a mapping of TrainConfig fields, got {type(train).__name__}")
    data = {} if label_column is None else {"label_column": label_column}
    experiment = experiment.with_overrides(data=data, train=dict(train or {}))
    return experiment.train, experiment.data


def _load(pool, settings: TrainConfig, label_column: str, exclude: tuple):
    """(the dataset of the pool's labelled rows, the (row, id, reason) of the labelled rows that cannot be
    decoded). The pool's own UndecodedRows warning is taken in here (an unlabelled row is never trained on
    anyway); any other warning goes on as it came."""
    from ..loop.data import load_dataset
    from ..pool import UndecodedRows
    from ..pool.labels import is_label

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndecodedRows)
        dataset = load_dataset(pool, settings.input_size, settings.in_channels, label_column=label_column,
                               exclude=exclude)
    dropped = []
    for entry in caught:
        if issubclass(entry.category, UndecodedRows):
            dropped += [(row, ident, reason) for row, ident, reason, extra in entry.message.failures
                        if is_label(extra.get(label_column))]
        else:
            warnings.warn_explicit(entry.message, entry.category, entry.filename, entry.lineno, source=entry.source)
    return dataset, dropped


def _save_or_rescue(model, out, *, replace: bool = False) -> None:
    """Writes the model to `out` whole under a temporary name, then renamed (`out` never holds half a model).
    replace: `out` held a model when the run checked it, which overwrite replaces; otherwise the rename never
    replaces anything (egal._atomic.publish): a file that appeared at `out` while the model trained (another egal
    train of the same `out`) is kept. When the model cannot be put at `out` after the training (that, a disk that
    filled, a folder removed or made read-only meanwhile), it is written to the temporary folder instead, and
    ModelNotSaved says where: the training is not lost."""
    from ..models import save_model  # (looked up now: a test stands in a save that fails)

    tmp = temporary_path(os.path.abspath(out))
    try:
        save_model(model, tmp)
        publish(tmp, os.path.abspath(out), replace=replace, what="out (--out)")
        return
    except (OSError, RuntimeError, DestinationError) as exc:  # torch.save says RuntimeError of a file it cannot open
        failure = exc
    finally:
        remove_temporary(tmp)
    if isinstance(failure, DestinationError):
        problem = (f"{os.fspath(out)!r} appeared while this run trained the model (another egal train?): it is kept "
                   "as it is, as it was not there when checked")
    else:  # (a failed save replaced nothing)
        kept = ", and holds the model it held before" if os.path.lexists(out) else ""
        problem = f"{os.fspath(out)!r} could not be written ({_why(failure)}){kept}"
    rescue = None
    try:
        fd, rescue = tempfile.mkstemp(prefix="egal-train-", suffix=".pt")
        os.close(fd)
        save_model(model, rescue)
    except (OSError, RuntimeError) as exc:
        if rescue is not None and os.path.exists(rescue):
            os.remove(rescue)
        raise _not_saved(model, None, f"{problem}; nor could the trained model be kept in the temporary folder "
                         f"{tempfile.gettempdir()!r} ({_why(exc)}): it is lost"
                         + (f"; {advice(failure)}" if is_disk_error(failure) else "")) from failure
    raise _not_saved(model, rescue, f"{problem}; the trained model was written to {rescue} instead: move it where it "
                     "belongs") from failure


def _why(exc: BaseException) -> str:
    """Why a save failed, without the name of its temporary file (the user named another): 'OSError: No space left
    on device: the disk is full'."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: {exc.strerror}" + (f": {meaning(exc)}" if is_disk_error(exc) else "")
    return f"{type(exc).__name__}: {str(exc).strip() or 'no detail'}"


def _not_saved(model, rescued, problem: str) -> ModelNotSaved:
    exc = bad_argument(ModelNotSaved, "out", problem)  # `egal train` names its flag, --out
    exc.model, exc.rescued = model, rescued
    return exc

