"""ShardStore.finalize's merge and rank_table as they were before 2026-11-28 (the shards read one file at a time,
ids turned into Python strings for the tie-break, statuses compared one by one): the reference that
tests/test_finalize_merge.py compares the code with, and that bench/bench_score_finalize.py times it against."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from egal.combine import combine_scores
from egal.pipeline import shard_store
from egal.pipeline.batch_scoring import OUTPUT_SCHEMA
from egal.pipeline.ranking import LABELLED, rank_column


def old_merge(parts_dir: str) -> pa.Table:
    batches = sorted(int(m.group(1)) for n in os.listdir(parts_dir) if (m := shard_store.PART.match(n)))
    shards = [pq.read_table(os.path.join(parts_dir, f"part-{i:06d}.parquet"), schema=OUTPUT_SCHEMA) for i in batches]
    return pa.concat_tables(shards) if shards else OUTPUT_SCHEMA.empty_table()


def old_rank_table(table, *, alpha=None, combine="raw", labelled=None, include_labelled=False):
    table = table.sort_by("row")
    if combine != "raw":
        ok = np.array([s == "ok" for s in table.column("status").to_pylist()], dtype=bool)
        column = lambda name: table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)  # noqa: E731
        score = combine_scores(column("entropy_norm"), column("misalignment"), alpha, combine, valid=ok)
        index = table.column_names.index("score")
        table = table.set_column(index, table.schema.field(index), pa.array(score, type=pa.float64()))
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    usable = np.array([s == "ok" for s in table.column("status").to_pylist()], dtype=bool) & ~np.isnan(scores)
    labelled = np.zeros(len(ids), dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool)
    if not include_labelled:
        usable &= ~labelled
    ranks = rank_column(np.where(usable, scores, np.nan), ids.astype(str))
    out = table.select([c for c in table.column_names if c != "row"])
    out = out.add_column(out.column_names.index("score") + 1, "rank", ranks)
    return out.add_column(out.column_names.index("error") + 1, LABELLED, pa.array(labelled, type=pa.bool_()))
