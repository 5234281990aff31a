"""ShardStore.finalize and rank_table against the code they replaced (2026-11-28): the shards read one file at a
time and concatenated, ids turned into Python strings for the tie-break, statuses compared one by one, the parts
folder removed by shutil.rmtree alone. The ranked output must be the very same table, and the same file byte for
byte, whatever the shards hold: many of them, ties in score (-0.0 against 0.0 too), rows in error, NaN
misalignment, ids that differ only in a trailing NUL (equal as numpy text), rows out of order, embeddings."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from egal.pipeline import shard_store
from egal.pipeline.batch_scoring import OUTPUT_SCHEMA, output_schema
from egal.pipeline.output_layout import RUN_METADATA_KEY
from egal.pipeline.ranking import count_ok, rank_table
from egal.pipeline.shard_store import OutputError, ShardStore
from egal.selection.embedding_file import EMBEDDING_COLUMN, embedding_array
from finalize_before import old_merge, old_rank_table

ODD_IDS = ["a", "a\x00", "b\x00\x00", "b", "", "10", "9", "Ωmega", "ωmega", "é", "e\u0301", "z" * 40, "Z", " a"]


def old_output(parts_dir: str, manifest: dict, labelled, path) -> pa.Table:
    """What finalize wrote before, to `path`; returns the ranked table."""
    ranked = old_rank_table(old_merge(parts_dir), alpha=manifest.get("alpha"), combine=manifest.get("combine", "raw"),
                            labelled=labelled, include_labelled=manifest.get("include_labelled", False))
    metadata = {**(ranked.schema.metadata or {}), RUN_METADATA_KEY: json.dumps(manifest, sort_keys=True)}
    ranked = ranked.replace_schema_metadata(metadata)
    pq.write_table(ranked, path)
    return ranked


# -- helpers --------------------------------------------------------------------------------------------------------
def assert_same_table(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema, check_metadata=True)
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if pa.types.is_floating(x.type):
            assert x.is_null().equals(y.is_null()), name
            assert np.array_equal(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False),
                                  equal_nan=True), name
            # -0.0 and 0.0 compare equal: their bits too
            assert np.array_equal(np.signbit(x.to_numpy(zero_copy_only=False)),
                                  np.signbit(y.to_numpy(zero_copy_only=False))), name
        else:
            assert x.equals(y), name


def scored_rows(rng, rows: np.ndarray, *, ids=None, embedding_dim=None) -> pa.Table:
    """A shard's rows: scores from a few values (ties), -0.0 among them, 15 % in error, some NaN misalignment."""
    n = rows.size
    error = rng.random(n) < 0.15
    score = rng.choice(np.array([0.0, -0.0, 0.25, 0.5, 0.5, 0.75, 1.0, 0.123456789]), n)
    score = np.where(rng.random(n) < 0.3, rng.random(n), score)
    nan_or = lambda v: np.where(error, np.nan, v)  # noqa: E731
    data = {
        "row": rows.astype(np.int64),
        "id": [f"id-{r:05d}" for r in rows] if ids is None else [ids[r] for r in rows],
        "pred": [None if e else ("benign", "malignant")[r % 2] for e, r in zip(error, rows, strict=True)],
        "entropy": nan_or(rng.random(n)), "entropy_norm": nan_or(rng.choice([0.1, 0.4, 0.4, 0.9], n)),
        "misalignment": nan_or(np.where(rng.random(n) < 0.2, np.nan, rng.choice([0.2, 0.6, 0.6], n))),
        "score": nan_or(score),
        "status": ["error" if e else "ok" for e in error],
        "error": ["model output is not finite" if e else None for e in error],
    }
    data = {k: pa.array(v, from_pandas=False) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
            for k, v in data.items()}
    if embedding_dim is None:
        return pa.table(data, schema=OUTPUT_SCHEMA)
    vectors = rng.random((n, embedding_dim)).astype(np.float32)
    data[EMBEDDING_COLUMN] = embedding_array(vectors, ~error)
    return pa.table(data, schema=output_schema(embedding_dim))


@pytest.fixture
def no_fsync(monkeypatch):
    monkeypatch.setattr(shard_store, "_fsync", lambda path: None)  # hundreds of shards: durability is not tested here


def written_store(tmp_path, manifest, shards, name="s.parquet") -> ShardStore:
    store = ShardStore(tmp_path / name, manifest)
    for index, table in shards:
        store.write_shard(index, table)
    return store


def batches_in_order(rng, num_rows: int, **kw) -> list:
    """Contiguous batches of uneven sizes (as egal score writes them, the last one short)."""
    shards, start, index = [], 0, 0
    while start < num_rows:
        size = min(int(rng.integers(1, 12)), num_rows - start)
        shards.append((index, scored_rows(rng, np.arange(start, start + size), **kw)))
        start, index = start + size, index + 1
    return shards


CASES = {
    "contiguous batches": dict(num_rows=1500),
    "rows out of order": dict(num_rows=900, shuffled=True),
    "odd ids": dict(num_rows=len(ODD_IDS) * 3, odd_ids=True),
    "labelled rows": dict(num_rows=700, labelled=True),
    "labelled rows, included": dict(num_rows=700, labelled=True, include_labelled=True),
    "combine rank": dict(num_rows=600, combine="rank"),
    "embeddings in the shards": dict(num_rows=400, embedding_dim=4),
    "one row": dict(num_rows=1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_finalize_writes_the_table_the_per_file_merge_wrote(tmp_path, no_fsync, case):
    spec = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    num_rows = spec["num_rows"]
    ids = None
    if spec.get("odd_ids"):
        ids = [ODD_IDS[i % len(ODD_IDS)] + "#" * (i // len(ODD_IDS)) for i in range(num_rows)]  # unique as Arrow text
    kw = dict(ids=ids, embedding_dim=spec.get("embedding_dim"))
    if spec.get("shuffled"):  # a shard holds any rows, in any order (a Ray shard, a future engine)
        order = rng.permutation(num_rows)
        cuts = np.sort(rng.choice(np.arange(1, num_rows), 80, replace=False))
        shards = [(i, scored_rows(rng, part, **kw)) for i, part in enumerate(np.split(order, cuts))]
    else:
        shards = batches_in_order(rng, num_rows, **kw)
    rng.shuffle(shards)  # written in any order: merged in batch order
    manifest = {"alpha": 0.3, "combine": spec.get("combine", "raw"),
                "include_labelled": spec.get("include_labelled", False), "case": case}
    labelled = rng.random(num_rows) < 0.2 if spec.get("labelled") else None
    store = written_store(tmp_path, manifest, shards)
    assert len(store.completed_batches()) == len(shards)
    expected = old_output(store.parts_dir, manifest, labelled, tmp_path / "expected.parquet")
    ranked = store.finalize(num_rows, labelled=labelled)
    assert_same_table(ranked, expected)
    assert (tmp_path / "s.parquet").read_bytes() == (tmp_path / "expected.parquet").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expected.parquet", "s.parquet"]  # parts folder gone


def test_the_merged_shards_are_the_per_file_merge(tmp_path, no_fsync):
    rng = np.random.default_rng(5)
    store = written_store(tmp_path, {"alpha": 0.5}, batches_in_order(rng, 2000, embedding_dim=3))
    merged = store._merged_shards(2000)
    expected = old_merge(store.parts_dir)
    assert_same_table(merged, expected)  # in batch order, only OUTPUT_SCHEMA's columns (no embeddings)
    assert merged.schema.equals(OUTPUT_SCHEMA, check_metadata=True)
    assert shard_store.read_shards([]).equals(OUTPUT_SCHEMA.empty_table())
    store.release()


def test_finalize_still_refuses_shards_without_every_row_once(tmp_path, no_fsync):
    rng = np.random.default_rng(6)
    shards = batches_in_order(rng, 300)
    store = written_store(tmp_path, {"alpha": 0.5}, shards + [(len(shards), shards[3][1])])  # a batch twice
    with pytest.raises(OutputError, match=r"do not hold each of the pool's 300 rows exactly once \(3\d\d rows\)"):
        store.finalize(300)
    os.remove(store._path(f"part-{len(shards):06d}.parquet"))
    os.remove(store._path("part-000000.parquet"))  # a batch missing
    with pytest.raises(OutputError, match="exactly once"):
        store.finalize(300)
    assert os.path.isdir(store.parts_dir) and not os.path.exists(store.out_path)  # nothing written, nothing deleted
    store.release()


def test_a_shard_that_cannot_be_read_at_the_merge_fails_as_before(tmp_path, no_fsync):
    rng = np.random.default_rng(7)
    store = written_store(tmp_path, {"alpha": 0.5}, batches_in_order(rng, 200))
    with open(store._path("part-000004.parquet"), "wb") as f:
        f.write(b"not parquet" * 20)
    with pytest.raises(pa.ArrowInvalid) as old:
        old_merge(store.parts_dir)
    with pytest.raises(pa.ArrowInvalid) as new:
        store.finalize(200)
    assert str(new.value) == str(old.value) and "part-000004.parquet" in str(new.value)
    assert os.path.isdir(store.parts_dir) and not os.path.exists(store.out_path)
    store.release()


def test_finalize_removes_the_whole_parts_folder(tmp_path, no_fsync):
    rng = np.random.default_rng(8)
    store = written_store(tmp_path, {"alpha": 0.5}, batches_in_order(rng, 3000))  # hundreds of shards: many chunks
    assert len(store.completed_batches()) > 4 * shard_store.UNLINK_CHUNK
    for name in ("part-000001.parquet.unreadable", "part-000002.parquet.tmp-1-0123abcd"):
        with open(store._path(name), "wb") as f:
            f.write(b"x")
    os.mkdir(store._path(shard_store.RAY_OUTPUT))
    store.finalize(3000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]
    store.release()


def test_a_run_stopped_while_unlinking_its_shards_leaves_them_to_the_next_run(tmp_path, no_fsync, monkeypatch):
    rng = np.random.default_rng(9)
    store = written_store(tmp_path, {"alpha": 0.5}, batches_in_order(rng, 3000))
    real_unlink = os.unlink

    def stopped(name, *args, **kwargs):
        if name == "part-000100.parquet":
            raise KeyboardInterrupt
        return real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", stopped)
    with pytest.raises(KeyboardInterrupt):
        store.finalize(3000)
    monkeypatch.setattr(os, "unlink", real_unlink)
    store.release()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left[0] == "s.parquet" and left[1].startswith("s.parquet.parts.done-") and len(left) == 2
    assert os.path.isfile(tmp_path / left[1] / "part-000100.parquet")
    ShardStore(tmp_path / "s.parquet", {"alpha": 0.5}, resume=True).release()  # finished: the next run clears it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]


@pytest.mark.parametrize("seed", range(12))
def test_rank_table_as_before(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    rows = rng.permutation(n) if seed % 2 else np.arange(n)
    ids = [ODD_IDS[i % len(ODD_IDS)] + "~" * (i // len(ODD_IDS)) for i in range(n)]
    table = scored_rows(rng, rows, ids=ids)
    if seed % 3 == 0:
        table = pa.concat_tables([table.slice(i, 7) for i in range(0, n, 7)])  # chunked, as merged shards are
    if seed % 4 == 1:
        table = table.set_column(table.column_names.index("status"), "status",  # a null status is not "ok"
                                 pa.array([None if i % 5 == 0 else s for i, s in
                                           enumerate(table.column("status").to_pylist())], pa.string()))
    labelled = rng.random(n) < 0.1 if seed % 3 == 1 else None
    for combine in ("raw", "rank"):
        for include in (False, True):
            got = rank_table(table, alpha=0.4, combine=combine, labelled=labelled, include_labelled=include)
            want = old_rank_table(table, alpha=0.4, combine=combine, labelled=labelled, include_labelled=include)
            assert_same_table(got, want)
            assert got.column("rank").num_chunks == want.column("rank").num_chunks


def test_rank_table_of_tied_scores_and_of_integer_ids():
    n = 50
    same = pa.table({"row": np.arange(n)[::-1].copy(), "id": list(range(n)), "score": np.full(n, 0.5),
                     "status": ["ok"] * n, "error": [None] * n})
    got, want = rank_table(same), old_rank_table(same)
    assert_same_table(got, want)  # every score tied: ids compared as text ("10" before "9"), as before
    assert got.column("id").to_pylist()[np.argmin(got.column("rank").to_numpy())] == 0


def test_count_ok_counts_as_the_list_did():
    for values in (["ok", "error", None, "ok", "OK", "ok "], [], [None], ["ok"] * 3):
        column = pa.chunked_array([pa.array(values, pa.string())])
        assert count_ok(column) == values.count("ok")
