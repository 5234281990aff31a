"""Ranks and the selection (docs/scoring.md, Selection) over a whole scored pool."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..combine import combine_scores
from ..selection.top_k import ranked_positions

LABELLED = "labelled"  # whether the pool gave the row a label: such rows are scored, but never selected


def rank_table(table: pa.Table, *, alpha: float | None = None, combine: str = "raw", labelled=None,
               include_labelled: bool = False) -> pa.Table:
    """Rows in pool order with a `rank` column: 1 is the image most worth annotating.

    Ranked by score descending, ties by id ascending; rows in error (and NaN
    scores) get no rank, exactly as select_top_k never selects them.

    labelled: [rows] bool in pool order (egal.pool.labels.labelled_rows), kept as the `labelled` column: rows
    that already have a label are scored but get no rank, since they need no annotation, unless
    include_labelled (a fully labelled pool studied rather than annotated).

    combine "raw" keeps the `score` the fused scorer wrote for each row (docs/scoring.md's
    formula). Any other method of egal.combine.combine_scores needs the whole pool, so
    the `score` column is computed here, from the entropy_norm and misalignment columns
    of the rows with status "ok", with `alpha`; those two columns stay as they are.
    """
    table = _in_row_order(table)
    if combine != "raw":
        table = _recombined(table, alpha, combine)
    scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    usable = _is_ok(table) & ~np.isnan(scores)
    labelled = np.zeros(table.num_rows, dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool)
    if not include_labelled:
        usable &= ~labelled
    ranks = _rank_by_score_then_id(np.where(usable, scores, np.nan), table.column("id"))
    columns = [c for c in table.column_names if c != "row"]
    out = table.select(columns)
    out = out.add_column(out.column_names.index("score") + 1, "rank", ranks)
    return out.add_column(out.column_names.index("error") + 1, LABELLED, pa.array(labelled, type=pa.bool_()))


def rank_column(scores: np.ndarray, ids: np.ndarray) -> pa.Array:
    """1-based ranks of the rows with a score (NaN: none), score descending, ties by id (unique); null for the
    others: the order select_top_k selects in."""
    order = ranked_positions(scores, ids, int(np.count_nonzero(~np.isnan(scores))))
    rank = np.zeros(scores.shape[0], dtype=np.int64)
    rank[order] = np.arange(1, order.size + 1)
    return pa.array(rank, mask=rank == 0, type=pa.int64())


def _rank_by_score_then_id(scores: np.ndarray, ids: pa.ChunkedArray) -> pa.Array:
    """rank_column(scores, ids as numpy text), without turning every id into a Python string: the ids are
    needed only where scores tie, so only the tied rows' ids are converted (numpy text, as rank_column
    compares them).

    The same order as ranked_positions' np.lexsort((ids[valid], -scores[valid])): a stable sort by score
    descending orders by (score, position); each run of equal scores is then sorted by (id, position),
    stably, which is what lexsort's tie-break on the ids and then its stability give."""
    valid = np.flatnonzero(~np.isnan(scores))
    negated = -scores[valid]
    order = np.argsort(negated, kind="stable")
    ordered = negated[order]
    tied = np.flatnonzero(ordered[1:] == ordered[:-1])  # place i in the order ties with place i + 1
    if tied.size:
        in_run = np.zeros(order.size, dtype=bool)
        in_run[tied] = in_run[tied + 1] = True
        places = np.flatnonzero(in_run)  # every place in a run of equal scores, ascending
        run = np.cumsum(np.r_[True, ordered[places[1:]] != ordered[places[:-1]]])  # (sorted: equal is one run)
        # The tied rows in row order (position), with their run: their ids then come as the pool lists them,
        # often already sorted, which the sort below is quick on (as ranked_positions' lexsort was).
        run_of = np.zeros(order.size, dtype=np.int64)
        run_of[order[places]] = run
        members = np.flatnonzero(run_of)  # (runs count from 1)
        texts = np.asarray(ids.take(pa.array(valid[members], type=pa.int64())).to_pylist(), dtype=object).astype(str)
        order[places] = members[np.lexsort((texts, run_of[members]))]
    positions = valid[order]
    rank = np.zeros(scores.shape[0], dtype=np.int64)
    rank[positions] = np.arange(1, positions.size + 1)
    return pa.array(rank, mask=rank == 0, type=pa.int64())


def _in_row_order(table: pa.Table) -> pa.Table:
    """table.sort_by("row"); a table already in row order (the shards of a run, merged in batch order) is
    only made contiguous, as sort_by's take would make it: the same table, without sorting a million rows
    and gathering every column through indices."""
    rows = table.column("row")
    if table.num_rows and rows.null_count == 0:
        values = rows.to_numpy()
        if bool(np.all(values[1:] > values[:-1])):
            try:
                return table.combine_chunks()
            except pa.ArrowException:  # (a column too large for one chunk: as sort_by handles it)
                pass
    return table.sort_by("row")


def count_ok(status) -> int:
    """How many entries of a status column (pyarrow) are "ok": status.to_pylist().count("ok"), in Arrow."""
    return int(pc.sum(pc.equal(status, "ok")).as_py() or 0)


def _is_ok(table: pa.Table) -> np.ndarray:
    """[rows] bool: status is "ok" (a null status is not)."""
    return np.asarray(pc.fill_null(pc.equal(table.column("status"), "ok"), False).to_numpy(zero_copy_only=False),
                      dtype=bool)


def _recombined(table: pa.Table, alpha, combine: str) -> pa.Table:
    if alpha is None:
        raise ValueError(f"combine={combine!r} needs alpha")
    column = lambda name: table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)  # noqa: E731
    ok = _is_ok(table)
    score = combine_scores(column("entropy_norm"), column("misalignment"), alpha, combine, valid=ok)
    index = table.column_names.index("score")
    return table.set_column(index, table.schema.field(index), pa.array(score, type=pa.float64()))
