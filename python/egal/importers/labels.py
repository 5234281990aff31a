"""`egal pool add-labels`: the labels that came back from the annotators, into a new pool.

The labels table maps ids to labels (columns `id` and `label` by default; from Label Studio's CSV
export use id_column="egal_id"); or it is CVAT's "CVAT for images 1.1" export (an .xml file) of a task
made from export-selection's cvat target, whose image names give the ids and whose tags the labels.
With pseudonym_key (the key that export_selection(pseudonym_key=...) wrote), the table's ids are that export's
pseudonyms, mapped back to the pool's ids by the key (egal.importers.pseudonyms); a pseudonym the key lacks, or a key
whose ids the pool lacks, is refused, and so are an export's pseudonyms given without the key.
It is checked whole before anything is written, and refused,
naming the first offenders, when it
  * names ids that are not in the pool,
  * gives one id two different labels,
  * gives a labelled row another label (relabel=True allows it, and the change is reported),
  * brings a class the pool has never seen (allow_new_classes=True allows it: a typo such as
    "gliomma" would otherwise become a class of its own).
Empty label cells are ignored (an image the annotator skipped). The pool is then streamed to
`out` (every column kept, `label` replaced, one row group at a time) under a temporary name and
renamed, `out` held from its checks to that rename as an import holds its pool (importers.writer.claim_destination:
locked against a second run, never replacing a file that appeared meanwhile). A pool whose images are paths must be
written into the same folder (its paths are relative to it).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from .._atomic import temporary_path
from .._checks import check_bool
from .._display import shown
from .._spreadsheet import from_spreadsheet_text
from ..pool import open_pool
from ..pool.errors import MAX_LISTED_ROWS
from ..pool.files import open_parquet
from ..pool.labels import LABEL_COLUMN, check_label_column, is_label, label_key
from ..pool.writer import ROWS_PER_PAGE
from . import cvat, pseudonyms
from .errors import SourceError
from .file_names import text_of_name
from .tables import cell_or_none, header_of, pool_ids_of, read_table_lines
from .writer import Claim, claim_destination

READ_ROWS = 256


@dataclass(frozen=True)
class LabelOptions:
    """pool: the pool; labels: the CSV of labels; out: the new pool. See egal.importers.labels."""

    pool: str
    labels: str
    out: str
    id_column: str = "id"
    label_column: str = "label"
    relabel: bool = False
    allow_new_classes: bool = False
    overwrite: bool = False
    pool_label_column: str = LABEL_COLUMN  # the pool's column of the labels, which the new labels go into
    pseudonym_key: str | None = None  # the key of an export made with pseudonym_key: the labels' ids are pseudonyms

    def __post_init__(self):
        for name in ("relabel", "allow_new_classes", "overwrite"):
            check_bool(getattr(self, name), name)


@dataclass
class LabelResult:
    out: Path
    rows: int
    newly_labelled: int
    unchanged: int
    relabelled: list[tuple[str, object, object]] = field(default_factory=list)  # (id, before, after)
    ignored_empty: int = 0
    new_classes: list[str] = field(default_factory=list)
    classes: dict[str | None, int] = field(default_factory=dict)  # rows per label after, None = unlabeled

    def summary(self) -> str:
        counts = ", ".join(f"{'unlabeled' if k is None else shown(k)} {v}" for k, v in
                           sorted(self.classes.items(), key=lambda kv: (kv[0] is None, str(kv[0]))))
        lines = [f"Wrote {self.out}: {self.rows} rows ({counts})",
                 f"  {self.newly_labelled} newly labelled, {self.unchanged} already had that label, "
                 f"{len(self.relabelled)} relabelled, {self.ignored_empty} empty label cells ignored"]
        if self.new_classes:
            lines.append(f"  new classes: {', '.join(map(shown, self.new_classes))}")
        for ident, before, after in self.relabelled[:MAX_LISTED_ROWS]:
            lines.append(f"  relabelled {shown(ident)}: {shown(before)} -> {shown(after)}")
        if len(self.relabelled) > MAX_LISTED_ROWS:
            lines.append(f"  ... and {len(self.relabelled) - MAX_LISTED_ROWS} more relabelled")
        return "\n".join(lines)


def add_labels(pool, labels, out, **options) -> LabelResult:
    """Writes `pool` with the labels of the CSV `labels` to `out` (see egal.importers.labels); keyword
    arguments are LabelOptions' fields (id_column, label_column, relabel, allow_new_classes, overwrite)."""
    return run_add_labels(LabelOptions(str(pool), str(labels), str(out), **options))


def read_labels(o: LabelOptions, classes=frozenset()) -> tuple[dict[str, str], int]:
    """({id: label}, cells that hold no label ignored); SourceError for a missing column or an id given two labels.
    classes: the pool's classes, as text: a cell that names one is that label, even where it reads like a
    missing value ("None", "NA" as class names)."""
    if Path(o.labels).suffix.lower() == ".xml":
        return _read_cvat_labels(o)
    header = header_of(o.labels) if Path(o.labels).is_file() else []
    if header and o.id_column not in header and "egal_id" in header:
        raise SourceError(f"labels {o.labels!r} has no {o.id_column!r} column but has 'egal_id' (a Label Studio "
                          "export): pass id_column='egal_id' (--id-column egal_id)")
    rows = read_table_lines(o.labels, (o.id_column, o.label_column), "the labels table (labels)")
    given: dict[str, str] = {}
    conflicts, empty = [], 0
    for line, row in rows:
        ident, label = row[o.id_column], row[o.label_column]
        if label.strip() not in classes:  # a class is the label meant; else the text a spreadsheet cell stands for
            label = from_spreadsheet_text(label)
        if label.strip() not in classes:
            label = cell_or_none(label)
            like = [c for c in classes if label is None and c.casefold() == row[o.label_column].strip().casefold()]
            if like:  # "none" beside a class "None": a label, or no label? Not guessed
                raise SourceError(f"labels {o.labels!r} line {line}: {row[o.label_column]!r} reads as no label, but "
                                  f"the pool has the class {like[0]!r}: write it as the pool does, or leave the cell "
                                  "empty for no label")
        if label is None:
            empty += 1
            continue
        if ident in given and given[ident] != label:
            conflicts.append(f"{ident!r} ({given[ident]!r} and {label!r}, line {line})")
        given.setdefault(ident, label)
    if conflicts:
        raise SourceError(f"labels {o.labels!r} gives {len(conflicts)} id(s) two different labels: "
                          + "; ".join(conflicts[:MAX_LISTED_ROWS]))
    return given, empty


def _read_cvat_labels(o: LabelOptions) -> tuple[dict[str, str], int]:
    """read_labels for CVAT's "CVAT for images 1.1" export of a task made from `egal pool export-selection --to
    cvat`: each image's id from its file name (text_of_name), its label from its one tag (or one label its
    tags repeat); an image without a tag is one the annotators left, counted as an empty cell."""
    if (o.id_column, o.label_column) != ("id", "label"):
        raise SourceError(f"labels {o.labels!r} is a CVAT annotations file, which gives an image's id by its file "
                          "name and its label by its tag: id_column and label_column (--id-column, --label-column) "
                          "name a CSV's columns")
    if not Path(o.labels).is_file():
        raise SourceError(f"labels {o.labels!r} does not exist")
    given: dict[str, str] = {}
    conflicts, empty = [], 0
    try:
        for name, tags in cvat.read_tags(o.labels):
            ident = text_of_name(PurePosixPath(name.replace("\\", "/")).stem)
            if not tags:
                empty += 1
                continue
            labels = sorted({*tags, *([given[ident]] if ident in given else [])})
            if len(labels) > 1:
                conflicts.append(f"{ident!r} ({', '.join(map(repr, labels))})")
                continue
            given[ident] = labels[0]
    except ValueError as exc:
        raise SourceError(f"labels {exc}") from None
    if conflicts:
        raise SourceError(f"labels {o.labels!r} gives {len(conflicts)} image(s) two different tags: "
                          + "; ".join(conflicts[:MAX_LISTED_ROWS]) + " (an image's class is one tag)")
    return given, empty


def run_add_labels(o: LabelOptions) -> LabelResult:
    spec = open_pool(o.pool)
    pool_files = {f"the pool's file {f!r}" if len(spec.files) > 1 else "the pool": f for f in spec.files}
    with claim_destination(o.out, o.overwrite, inputs={"the labels table": o.labels, **pool_files,
                                                       "the pseudonym key": o.pseudonym_key}) as claim, \
            claim.naming_disk_errors():
        return _add_labels(o, spec, claim)


def _add_labels(o: LabelOptions, spec, claim: Claim) -> LabelResult:
    out = claim.out
    _check_not_inside_a_folder_pool(o.pool, out)
    _check_paths_stay_valid(spec, out)
    column = o.pool_label_column
    check_label_column(spec, column, "pool_label_column")
    seen = _classes(spec, column)
    given, empty = read_labels(o, {str(c) for c in seen})
    if o.pseudonym_key is not None:  # the key first: a wrong key is named as such, not as ids the pool lacks
        key = pseudonyms.read_key(o.pseudonym_key)
        pseudonyms.check_key_ids_in_pool(key, pool_ids_of(spec, key.values()), o.pseudonym_key, o.pool)
        given = pseudonyms.ids_of_pseudonyms(given, key, o.pseudonym_key, o.labels)
    label_type = _label_type(spec, column)
    in_pool = pool_ids_of(spec, given)
    converted = {in_pool.get(ident, ident): _convert(label, label_type, ident) for ident, label in given.items()}
    before = _current_labels(spec, set(converted), column)
    unknown = [i for i in converted if i not in before]
    if unknown and o.pseudonym_key is None and any(map(pseudonyms.is_pseudonym, unknown)):
        raise pseudonyms.missing_key_error([i for i in unknown if pseudonyms.is_pseudonym(i)], o.labels)
    if unknown:
        raise SourceError(f"labels {o.labels!r} names {len(unknown)} id(s) that are not in the pool: "
                          + ", ".join(map(repr, unknown[:MAX_LISTED_ROWS])))
    changed = [(i, before[i], v) for i, v in converted.items() if is_label(before[i]) and before[i] != v]
    if changed and not o.relabel:
        shown = "; ".join(f"{i!r}: {b!r} -> {a!r}" for i, b, a in changed[:MAX_LISTED_ROWS])
        raise SourceError(f"labels {o.labels!r} would change the label of {len(changed)} labelled row(s) ({shown}): "
                          "pass relabel=True (--relabel) if the annotators corrected them")
    new = sorted({str(v) for v in converted.values() if v not in seen})
    if new and not o.allow_new_classes:
        raise SourceError(f"labels {o.labels!r} brings class(es) the pool has never seen: {new} (the pool's classes: "
                          f"{sorted(map(str, seen))}); pass allow_new_classes=True (--allow-new-classes) if they are "
                          "meant")
    classes = _write(spec, claim, converted, label_type, column)
    return LabelResult(out, spec.num_rows, sum(not is_label(before[i]) for i in converted),
                       sum(before[i] == v for i, v in converted.items()), changed, empty, new, classes)


def _check_not_inside_a_folder_pool(pool: str, out: Path) -> None:
    """A Parquet file written into a folder pool becomes part of that pool: every id twice."""
    if not os.path.isdir(pool):
        return
    folder = os.path.realpath(pool)
    if os.path.realpath(out.parent) == folder or os.path.realpath(out.parent).startswith(folder + os.sep):
        raise SourceError(f"--out {str(out)!r} is inside the folder pool {pool!r}, whose every Parquet file is part "
                          "of the pool: the pool would then hold each id twice; write --out beside the folder "
                          "(a folder pool whose images are paths cannot be labelled into one file yet: its paths "
                          "resolve inside the folder)")


def _check_paths_stay_valid(spec, out: Path) -> None:
    if spec.image_column != "image_path" and spec.roi_column != "mask_path":
        return
    folders = {os.path.realpath(os.path.dirname(f)) for f in spec.files}
    if folders != {os.path.realpath(out.parent)}:
        raise SourceError(f"the pool keeps its images as paths relative to {sorted(folders)}; write --out into that "
                          "folder so that they still resolve")


def _label_type(spec, column: str) -> pa.DataType:
    schema = open_parquet(Path(spec.files[0])).schema_arrow
    if column not in schema.names:
        return pa.string()
    t = schema.field(column).type
    t = t.value_type if pa.types.is_dictionary(t) else t
    return pa.string() if pa.types.is_null(t) else t


def _convert(label: str, label_type: pa.DataType, ident: str):
    if pa.types.is_string(label_type) or pa.types.is_large_string(label_type):
        return label
    try:
        return pa.scalar(label).cast(label_type).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise SourceError(f"label {label!r} of id {ident!r} is not a {label_type} like the pool's label "
                          "column") from None


def _current_labels(spec, wanted: set, column: str) -> dict:
    """{id: its label now} for the ids in `wanted` that the pool holds."""
    found = {}
    for batch in spec.iter_batches(READ_ROWS * 16, columns=[column]):
        for ident, label in zip(batch.ids, batch.extra[column], strict=True):
            if ident in wanted:
                found[ident] = label
    return found


def _classes(spec, column: str) -> set:
    seen = set()
    for batch in spec.iter_batches(READ_ROWS * 16, columns=[column]):
        seen.update(v for v in batch.extra[column] if is_label(v))
    return seen


def _write(spec, claim: Claim, converted: dict, label_type: pa.DataType, column: str) -> dict[str | None, int]:
    tmp = Path(temporary_path(claim.out, hidden=True))
    counts: Counter = Counter()
    first = open_parquet(Path(spec.files[0])).schema_arrow
    fields = [f for f in first if f.name != column] + [pa.field(column, label_type)]
    schema = pa.schema(fields, metadata=first.metadata)
    strings = [f.name for f in schema if pa.types.is_string(f.type) and f.name != "id"]
    writer = pq.ParquetWriter(str(tmp), schema, use_dictionary=strings, write_batch_size=ROWS_PER_PAGE)
    try:
        for path in spec.files:
            for batch in open_parquet(Path(path)).iter_batches(batch_size=READ_ROWS):
                ids = batch.column("id").to_pylist()
                old = batch.column(column).to_pylist() if column in batch.schema.names else [None] * len(ids)
                labels = [converted.get(i, v) for i, v in zip(ids, old, strict=True)]
                counts.update(map(label_key, labels))
                columns = {f.name: batch.column(f.name).cast(f.type) for f in fields if f.name != column}
                columns[column] = pa.array(labels, type=label_type)
                writer.write_table(pa.table(columns, schema=schema))
        writer.close()
        claim.publish(tmp)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return dict(counts)
