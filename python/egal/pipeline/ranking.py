"""Ranks and the selection (docs/scoring.md, Selection) over a whole scored pool."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

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
    table = table.sort_by("row")
    if combine != "raw":
        table = _recombined(table, alpha, combine)
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    usable = np.array([s == "ok" for s in table.column("status").to_pylist()], dtype=bool) & ~np.isnan(scores)
    labelled = np.zeros(len(ids), dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool)
    if not include_labelled:
        usable &= ~labelled
    ranks = rank_column(np.where(usable, scores, np.nan), ids.astype(str))
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


def _recombined(table: pa.Table, alpha, combine: str) -> pa.Table:
    if alpha is None:
        raise ValueError(f"combine={combine!r} needs alpha")
    column = lambda name: table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)  # noqa: E731
    ok = np.array([s == "ok" for s in table.column("status").to_pylist()], dtype=bool)
    score = combine_scores(column("entropy_norm"), column("misalignment"), alpha, combine, valid=ok)
    index = table.column_names.index("score")
    return table.set_column(index, table.schema.field(index), pa.array(score, type=pa.float64()))
