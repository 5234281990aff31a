"""The labelled dataset an experiment simulates on: decoded images, ROIs, labels and groups.

Reads a pool parquet (id, image PNG, mask PNG, a label column, optionally a
group column such as a patient id or a patient-wise fold) and decodes every
labelled row at the training resolution with egal.pool's decoder (images
bilinear, masks nearest). Rows that fail to decode are left out.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from .._atomic import replaced_atomically
from ..errors import EgalError
from ..pool.digest import content_digest
from ..pool.labels import LABEL_COLUMN, check_label_column, is_label, label_key
from ..selection.group_cap import is_missing_group


@dataclass
class Dataset:
    ids: np.ndarray  # [N] str
    images: np.ndarray  # [N, C, H, W] float32 in [0, 1]
    masks: np.ndarray  # [N, H, W] uint8 0/1 (all zero: no ROI)
    labels: np.ndarray  # [N] int64 index into classes
    classes: tuple[str, ...]
    groups: np.ndarray | None = None  # [N] patient / group / fold, for patient-level splits
    excluded: int = 0  # labelled rows left out by load_dataset's `exclude`

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows) -> Dataset:
        rows = np.asarray(rows)
        return Dataset(self.ids[rows], self.images[rows], self.masks[rows], self.labels[rows], self.classes,
                       None if self.groups is None else self.groups[rows])


def load_dataset(path, input_size: tuple[int, int], in_channels: int = 1, *, label_column: str = LABEL_COLUMN,
                 group_column: str | None = None, cache_dir: str | None = None,
                 exclude: tuple[tuple[str, str], ...] = ()) -> Dataset:
    """Decode every labelled row of the pool at `path` at `input_size` (H, W).

    Rows without a label are dropped: a simulation needs the ground truth of
    every row (it hides the labels itself). cache_dir: keep the decoded arrays
    there as .npz, keyed by the file's content, the size and the columns, so reruns skip decoding.
    exclude: (column, value) pairs: a row whose column holds that value (holds_value: by its text, or the same
    number or truth value) is left out, as a labelled test split is left out of training (("split", "test"));
    a pair that matches no labelled row is refused (a typo would leave nothing out).
    """
    exclude = tuple((str(c), str(v)) for c, v in exclude)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"pool {path!r} does not exist")
    cache = _cache_path(cache_dir, path, input_size, in_channels, label_column, group_column, exclude)
    if cache and os.path.isfile(cache):
        with np.load(cache, allow_pickle=False) as z:
            groups = z["groups"] if "groups" in z.files else None
            excluded = int(z["excluded"]) if "excluded" in z.files else 0
            return Dataset(z["ids"], z["images"], z["masks"], z["labels"], tuple(z["classes"].tolist()), groups,
                           excluded)
    dataset = _decode(path, tuple(input_size), in_channels, label_column, group_column, exclude)
    if cache:
        os.makedirs(cache_dir, exist_ok=True)
        # A name of its own: two experiments started together both decode and write this file.
        extra = {} if dataset.groups is None else {"groups": dataset.groups}
        if exclude:
            extra["excluded"] = np.int64(dataset.excluded)
        with replaced_atomically(cache, ".npz") as tmp:
            np.savez(tmp, ids=dataset.ids, images=dataset.images, masks=dataset.masks, labels=dataset.labels,
                     classes=np.array(dataset.classes), **extra)
    return dataset


def load_experiment_dataset(config) -> Dataset:
    """load_dataset with an ExperimentConfig's data and training settings (path, resolution, channels,
    label and group columns, cache folder)."""
    return load_dataset(config.data.path, config.train.input_size, config.train.in_channels,
                        label_column=config.data.label_column, group_column=config.data.group_column,
                        cache_dir=config.data.cache_dir)


def _decode(path, input_size, in_channels, label_column, group_column, exclude=()) -> Dataset:
    from ..pool import DecodeSettings, load_pool_arrays, open_pool

    columns = [label_column] + ([group_column] if group_column else [])
    excluded_columns = sorted({c for c, _ in exclude})
    spec = open_pool(path)
    check_data_columns(spec, label_column, group_column)
    if excluded_columns:
        spec.check_columns(excluded_columns, "exclude", error=EgalError)
    arrays = load_pool_arrays(spec, DecodeSettings(input_size=input_size, in_channels=in_channels),
                              columns=list(dict.fromkeys(columns + excluded_columns)))
    for column in columns:
        if all(v is None for v in arrays[column]):
            raise EgalError(f"pool {path!r} has no values in column {column!r}")
    labels_raw, errors = arrays[label_column], arrays["errors"]
    labelled = np.array([i for i, v in enumerate(labels_raw) if is_label(v)], dtype=np.int64)
    if labelled.size == 0:
        raise EgalError(f"pool {path!r} has no labelled rows (column {label_column!r})")
    hits = np.array([[holds_value(arrays[c][i], v) for c, v in exclude] for i in labelled], dtype=bool).reshape(
        len(labelled), len(exclude))
    unmatched = [f"{c}={v}" for (c, v), n in zip(exclude, hits.sum(axis=0), strict=True) if n == 0]
    if unmatched:  # a typo (fold=1 against 1.0 would match; test against Test would not) leaves nothing out
        column = unmatched[0].split("=", 1)[0]
        values = sorted({label_key(arrays[column][i]) for i in labelled if is_label(arrays[column][i])})
        raise EgalError(f"exclude {unmatched[0]} (--exclude) matches no labelled row of pool {path!r}; column "
                        f"{column!r} holds {', '.join(map(repr, values[:8]))}{' ...' if len(values) > 8 else ''}")
    left_out = hits.any(axis=1)
    wanted, excluded = labelled[~left_out], int(left_out.sum())
    why = f", once {excluded} excluded by {_shown(exclude)}" if excluded else ""
    # A simulation needs the ground truth of every row it uses, and an image that cannot be decoded is no sample.
    keep = np.array([i for i in wanted if errors[i] is None], dtype=np.int64)
    if keep.size == 0:
        raise EgalError(f"pool {path!r} has no labelled rows that decode (column {label_column!r}){why}")
    _check_no_class_lost(path, label_column, labels_raw, errors, arrays["ids"], wanted, keep)
    classes = tuple(sorted({str(labels_raw[i]) for i in keep}))
    _check_distinct(classes, path)
    if len(classes) < 2:
        raise EgalError(f"pool {path!r} has a single class {classes}{why}; classification needs at least 2")
    index = {c: k for k, c in enumerate(classes)}
    labels = np.array([index[str(labels_raw[i])] for i in keep], dtype=np.int64)
    groups = None
    if group_column:
        raw_groups = [arrays[group_column][i] for i in keep]
        empty = [i for i, g in zip(keep, raw_groups, strict=True) if is_missing_group(g)]
        if empty:  # as one shared group they would be one patient; split apart, they might be anyone's
            raise EgalError(f"pool {path!r}: {len(empty)} labelled row(s) have no {group_column!r} (first id "
                            f"{str(arrays['ids'][empty[0]])!r}); a patient-wise split needs every row's group: fill "
                            "them, or split without a group column")
        groups = np.array([str(g) for g in raw_groups])
    return Dataset(arrays["ids"][keep], arrays["images"][keep], arrays["masks"][keep], labels, classes, groups,
                   excluded)


def check_data_columns(spec, label_column: str, group_column: str | None) -> None:
    """The label column and the group column are columns of the pool (an egal.pool.PoolSpec), each error naming
    its option (label_column, group_column): a pool without the format's `label` column keeps its labels under
    another name."""
    check_label_column(spec, label_column, required=True)
    if group_column:
        spec.check_columns([group_column], "group_column", error=EgalError)


def _check_no_class_lost(path, label_column, labels_raw, errors, ids, wanted, keep) -> None:
    """EgalError when every labelled row of a class fails to decode: a model trained without them could never
    predict that class, and the pool's other rows would not say why."""
    decoded = {str(labels_raw[i]) for i in keep}
    lost = sorted({str(labels_raw[i]) for i in wanted} - decoded)
    if not lost:
        return
    rows = [i for i in wanted if str(labels_raw[i]) == lost[0]]
    raise EgalError(f"pool {path!r}: class {lost[0]!r} has {len(rows)} labelled row(s) and none of them decodes "
                    f"(first id {str(ids[rows[0]])!r}: {errors[rows[0]]})"
                    + (f"; so has {', '.join(map(repr, lost[1:]))}" if len(lost) > 1 else "")
                    + ": a model trained without them could never predict the class. Fix those rows (egal pool info "
                    f"--decode lists them), or leave the class out of the pool (egal train: --exclude "
                    f"{label_column}={lost[0]})")


def holds_value(cell, text: str) -> bool:
    """Whether a pool cell holds the value `text` names: by its text, or as the same number (a fold 1 stored as
    1.0) or truth value (true, True); a null holds none."""
    if not is_label(cell):
        return False
    if label_key(cell) == text:
        return True
    if isinstance(cell, (bool, np.bool_)):
        return text.strip().lower() == str(bool(cell)).lower()
    try:
        if isinstance(cell, (int, np.integer)):  # exactly: 2**53 + 1 is not 2**53 (ids of that size are common)
            # Decimal: exact, and an exponent stays symbolic ("3e999999999" is not 10**999999999 computed)
            return Decimal(text.strip()) == int(cell)
        if isinstance(cell, (float, np.floating)):
            return float(text) == float(cell)
    except (ValueError, OverflowError, ArithmeticError):  # (decimal.InvalidOperation is an ArithmeticError)
        return False
    return False


def _shown(exclude) -> str:
    return ", ".join(f"{c}={v}" for c, v in exclude)


def _cache_path(cache_dir, path, input_size, in_channels, label_column, group_column, exclude=()):
    if not cache_dir:
        return None
    # Keyed by the file's content, not its modification time: a copy of the same pool (a fresh checkout, a
    # synced data folder) reuses the decoded arrays, and an edited pool never does. Hashing reads the file
    # once, a small cost next to decoding its images. And by the decoding and label rules' versions: an egal that
    # decodes the same bytes differently, or reads other rows as labelled, does not reuse an older one's arrays.
    from ..pool.decode import DECODE_RULES
    from ..pool.labels import LABEL_RULES

    key = (f"{os.path.basename(path)}-{content_digest(path)}-"
           f"{input_size[0]}x{input_size[1]}c{in_channels}-{label_column}-{group_column}-d{DECODE_RULES}"
           f"-l{LABEL_RULES}")
    if exclude:  # (without it, the key of the caches written before exclusion existed)
        key += "-x" + hashlib.sha256(repr(sorted(exclude)).encode()).hexdigest()[:12]
    return os.path.join(cache_dir, key.replace(os.sep, "_") + ".npz")


def _check_distinct(classes, path) -> None:
    """Classes that differ only in case or surrounding spaces ("benign" and "Benign ") are one class written
    twice: training them as two would be silently wrong, so the pool is refused with both spellings."""
    seen: dict[str, str] = {}
    for name in classes:
        key = name.strip().casefold()
        if key in seen:
            raise EgalError(f"pool {path!r} has labels {seen[key]!r} and {name!r}, which differ only in case or "
                            "spaces: make them one label (egal pool add-labels --relabel) before training")
        seen[key] = name
