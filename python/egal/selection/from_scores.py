"""Selecting from the files `egal score` wrote, without scoring again: `select_from_scores` (what
`egal select` calls) and `select_from_table` (what `egal score --select` calls on the table it ranked).

    scores.parquet              the ranked output: the score and status of every row
    scores.embeddings.parquet   the embedding of every row (egal score --embeddings), for diversity
    pool.parquet                the pool, for its group column (a patient id) when there is a cap

The selection CSV has the columns of `egal score --select` (rank, id, score, entropy_norm,
misalignment, pred; rank is the row's rank among the rows that can be selected, so a diverse batch
shows which top-ranked rows it passed over), and the group column last when there is a cap.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .._checks import bad_argument, check_int
from .._paths import check_new_file, check_not_an_input, check_replaceable
from ..errors import EgalError
from .batch import CANDIDATE_FACTOR, Selection, select_batch
from .csv_file import SELECTION_COLUMNS, check_selection_name, is_selection_csv, write_selection_csv
from .embedding_file import EmbeddingFile, embeddings_path_for
from .errors import SelectionError
from .group_cap import is_missing_group


@dataclass(frozen=True)
class TableSelection:
    """table: the selected rows (the selection CSV's columns), best score first; selection: the Selection
    (positions into the scores table, how many could be selected, candidates); out: the CSV written, or None."""

    table: object  # pyarrow.Table
    selection: Selection
    out: str | None = None


def select_from_table(ranked, k: int, *, diversity: str = "none", embeddings=None, groups=None,
                      group_column: str | None = None, per_group: int | None = None,
                      candidate_factor: int = CANDIDATE_FACTOR, seed: int = 0,
                      include_labelled: bool = False) -> TableSelection:
    """The batch from a ranked scores table (egal score's output, as a pyarrow Table): rows with status "ok"
    and a score compete, ties by id, but for rows the pool already labels (its `labelled` column; a file
    written before egal kept that column has none) unless include_labelled; the other arguments are
    select_batch's. groups: one per row of `ranked`; group_column names the CSV column they go to. The CSV's
    rank is each row's rank among the rows that compete (the scores file's own, unless include_labelled asks
    for rows it left unranked)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..pipeline.ranking import LABELLED, rank_column

    ok = np.array([s == "ok" for s in ranked.column("status").to_pylist()], dtype=bool)
    if LABELLED in ranked.column_names and not include_labelled:
        flags = pc.fill_null(ranked.column(LABELLED).cast(pa.bool_()), False)  # (a column of nulls: none labelled)
        ok &= ~np.asarray(flags.to_numpy(zero_copy_only=False), dtype=bool)
    scores = ranked.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    scores = np.where(ok, scores, np.nan)
    ids = np.asarray(ranked.column("id").to_pylist(), dtype=object).astype(str)
    if groups is not None:
        _check_groups(groups, ids, ok, group_column)
    chosen = select_batch(scores, ids, k, diversity=diversity, embeddings=embeddings, groups=groups,
                          per_group=per_group, candidate_factor=candidate_factor, seed=seed)
    ranked = ranked.set_column(ranked.column_names.index("rank"), "rank", rank_column(scores, ids))  # ids checked
    table = ranked.take(pa.array(chosen.positions, type=pa.int64())).select(list(SELECTION_COLUMNS))
    name = group_column or "group"
    if per_group is not None and name != "id":  # grouped by id: each row its own group, already in the CSV
        values = np.asarray(groups, dtype=object)[chosen.positions]
        if name in table.column_names:  # a pool column named like one of the selection's own
            name = f"group_{name}"
        table = table.append_column(name, pa.array([str(v) for v in values], type=pa.string()))
    return TableSelection(table, chosen)


def _check_groups(groups, ids, ok, group_column) -> None:
    """Every row that can be selected needs a group: the first ones without are named by id."""
    groups = np.asarray(groups, dtype=object)
    if groups.shape != ids.shape:
        raise bad_argument(SelectionError, "groups", f"has {groups.shape[0]} entries, the scores {ids.shape[0]}")
    null = [i for i, (g, usable) in enumerate(zip(groups.tolist(), ok.tolist(), strict=True))
            if usable and is_missing_group(g)]
    if null:
        named = ", ".join(repr(str(ids[i])) for i in null[:5]) + (", ..." if len(null) > 5 else "")
        raise bad_argument(SelectionError, "group_column", f"{group_column!r} (--group-column) is null or blank for "
                           f"{len(null)} scored row(s) ({named}): every row that can be selected needs a group; give "
                           "a row that belongs to no group a value of its own (its id, say)")


def select_from_scores(scores, k: int, *, out: str | None = None, diversity: str = "none", embeddings=None,
                       pool=None, group_column: str | None = None, per_group: int | None = None,
                       candidate_factor: int = CANDIDATE_FACTOR, seed: int = 0, overwrite: bool = False,
                       include_labelled: bool = False) -> TableSelection:
    """Select k rows again from an `egal score` output, without rescoring.

    scores:       the scores Parquet file egal score wrote (--out)
    out:          where the selection CSV goes (None: write none); an existing file needs overwrite=True
    diversity:    "none", "kcenter" or "cluster" (egal.selection.select_batch)
    embeddings:   the embeddings file (default: NAME.embeddings.parquet next to `scores`); only read by a
                  diversity method, and only its candidates' rows
    pool, group_column, per_group: at most per_group rows per value of the pool's group_column (the pool
                  is read for that column alone, matched to the scores by id)
    include_labelled: select rows that the scored pool already labelled too (they need no annotation)
    """

    from ..pipeline.ranking import LABELLED
    from ..pipeline.score_file import read_score_output

    check_int(k, "k")  # as egal score's select: a batch of none is a mistake, not a request
    if per_group is not None:
        check_int(per_group, "per_group")  # before the pool is read for the groups
    scores = os.fspath(scores)
    if not os.path.isfile(scores):
        raise bad_argument(SelectionError, "scores", f"file {scores!r} does not exist: pass the output of egal score "
                           "(its --out)")
    if out is not None:
        check_not_an_input(out, "out (--out)", {"scores (--scores)": scores, "embeddings (--embeddings)": embeddings,
                                                "the scores' embeddings": embeddings_path_for(scores),
                                                "pool (--pool)": pool})
        check_replaceable(out, "out (--out)", is_selection_csv, "a selection CSV that egal wrote")
        check_selection_name(out, "out")  # after the two above, which say what a mistyped path would destroy
        check_new_file(out, "out (--out)", replace=overwrite)
    try:
        ranked, run = read_score_output(scores, ("id", "pred", "entropy_norm", "misalignment", "score", "rank",
                                                      "status"), optional=(LABELLED,))
    except EgalError as exc:
        raise bad_argument(SelectionError, "scores", f"file {scores!r} {exc}") from None
    source = None
    if diversity != "none":
        source = EmbeddingFile(embeddings if embeddings is not None else embeddings_path_for(scores), run=run)
    groups = None
    if group_column is not None or per_group is not None:
        if group_column is None:
            raise bad_argument(SelectionError, "group_column", "is needed with per_group (--per-group): the pool "
                               "column that names each row's group (a patient id)")
        if pool is None:
            raise bad_argument(SelectionError, "pool", f"is needed with group_column={group_column!r} "
                               "(--group-column): the group column is read from the scored pool")
        groups = read_groups(pool, group_column, ranked.column("id").to_pylist())
    chosen = select_from_table(ranked, k, diversity=diversity, embeddings=source, groups=groups,
                               group_column=group_column, per_group=per_group, candidate_factor=candidate_factor,
                               seed=seed, include_labelled=include_labelled)
    if out is not None:
        write_selection_csv(chosen.table, out)
    return TableSelection(chosen.table, chosen.selection, out)


def check_pool_groups(pool, column: str, selectable=None) -> None:
    """Before a scoring run with a cap per group: the column holds strings or integers and every row that may be
    selected (`selectable`, [rows] bool; None: every row) has a value (a row without a group could be selected,
    and the cap could not count it)."""
    values = read_groups(pool, column, None)
    null = [i for i, value in enumerate(values.tolist()) if is_missing_group(value)
            and (selectable is None or selectable[i])]
    if null:
        raise bad_argument(SelectionError, "group_column", f"{column!r} (--group-column) is null or blank for "
                           f"{len(null)} row(s) of the pool (positions {', '.join(map(str, null[:5]))}"
                           f"{', ...' if len(null) > 5 else ''}): every row needs a group for a cap per group; give a "
                           "row that belongs to no group a value of its own (its id, say)")


def read_groups(pool, column: str, ids) -> np.ndarray:
    """The pool's `column` for each of `ids` (object array, None for null; ids None: every row, in pool order),
    read from the pool's files for that column alone. pool: a path (checked with egal.pool.open_pool) or an
    already opened PoolSpec."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..pool import open_pool

    spec = open_pool(pool) if isinstance(pool, (str, os.PathLike)) else pool
    spec.check_columns([column], "group_column", error=SelectionError)
    kind = pq.read_schema(spec.files[0]).field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)):
        raise bad_argument(SelectionError, "group_column", f"{column!r} (--group-column) holds {kind} values: a group "
                           "column holds strings or integers, such as a patient id")
    pool_ids, values = list(spec.column_values("id")), list(spec.column_values(column))
    if ids is None or pool_ids == list(ids):
        return np.asarray(values, dtype=object)
    where = dict(zip(pool_ids, values, strict=True))
    missing = [i for i in ids if i not in where]
    if missing:
        raise bad_argument(SelectionError, "pool", f"{spec.path!r} does not hold {len(missing)} of the scored ids "
                           f"({', '.join(map(repr, missing[:3]))}): pass the pool that was scored")
    return np.asarray([where[i] for i in ids], dtype=object)
