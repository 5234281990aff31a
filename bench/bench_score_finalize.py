"""`egal score`'s finalize (ShardStore.finalize): the merge of one Parquet shard per batch, as it was against now.

Run: python bench/bench_score_finalize.py            (200,000 rows in batches of 32, 1,000,000 in batches of 1,024)
     python bench/bench_score_finalize.py --cases 1000000x32 --rounds 1    (31,250 shards: minutes)

Before 2026-11-28 finalize read every shard with its own pq.read_table (a pyarrow dataset built per file) and
concatenated them, ranked with Python objects (every id turned into a Python string, the status compared
string by string), and deleted the parts folder with shutil.rmtree; run_scoring counted the "ok" rows through
Python strings too. The old code is reproduced below (old_*), verbatim but for the names; the new is
egal.pipeline.shard_store and egal.pipeline.ranking as they are.

Each case writes a template parts folder once, with ShardStore.write_shard (realistic rows: string ids, three
classes, float32-precision scores, so some scores tie, 10 % of rows without an ROI (NaN misalignment), 1 % in
error; its per-shard fsync skipped while building, then one sync). Each round copies the shards into a fresh
store's parts folder for each implementation and syncs them to disk, as a run leaves them (write_shard fsyncs
every shard), then times, wall seconds (deleting waits on the disk, not the CPU):
  read + check   the shards merged and the completeness check (each pool row exactly once)
  rank           rank_table, 5 % of rows labelled, and the run record in the metadata
  write          the ranked output, fsynced (the same code in both: a measure of the noise)
  delete         the parts folder renamed away and removed
  status count   run_scoring's count of rows "ok"
The two implementations alternate within each round (their order swapped every round); their outputs are
checked identical (the ranked tables, schema and metadata, and the written files byte for byte).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from egal.pipeline import shard_store
from egal.pipeline.batch_scoring import OUTPUT_SCHEMA
from egal.pipeline.output_layout import RUN_METADATA_KEY
from egal.pipeline.ranking import count_ok
from egal.pipeline.shard_store import DISCARDED, ShardStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from finalize_before import old_merge, old_rank_table  # noqa: E402  (the code as it was)

CASES = ((200_000, 32), (1_000_000, 1024))
PHASES = ("read + check", "rank", "write", "delete", "status count")
CLASSES = ("benign", "malignant", "normal")
MANIFEST = {"alpha": 0.5, "combine": "raw", "include_labelled": False, "note": "bench_score_finalize"}


# -- the code as it was before 2026-11-28 ---------------------------------------------------------------------------
def old_merged(store: ShardStore, num_rows: int) -> pa.Table:
    merged = old_merge(store.parts_dir)
    rows = np.sort(merged.column("row").to_numpy())
    if merged.num_rows != num_rows or not np.array_equal(rows, np.arange(num_rows)):
        raise shard_store.OutputError("incomplete")
    return merged


def old_ranked(store: ShardStore, merged: pa.Table, labelled) -> pa.Table:
    ranked = old_rank_table(merged, labelled=labelled, include_labelled=store.manifest.get("include_labelled", False))
    metadata = {**(ranked.schema.metadata or {}), RUN_METADATA_KEY: json.dumps(store.manifest, sort_keys=True)}
    return ranked.replace_schema_metadata(metadata)


def old_discard(store: ShardStore) -> None:
    done = f"{store.parts_dir}{DISCARDED}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.replace(store.parts_dir, done)
    shutil.rmtree(done, ignore_errors=True)


def old_count(ranked: pa.Table) -> int:
    return ranked.column("status").to_pylist().count("ok")


IMPLS = {
    "before": dict(merge=old_merged, rank=old_ranked, discard=old_discard, count=old_count),
    "after": dict(merge=lambda s, n: s._merged_shards(n), rank=lambda s, m, lab: s._ranked(m, lab),
                  discard=lambda s: s._discard_parts(), count=lambda r: count_ok(r.column("status"))),
}


# -- the shards -----------------------------------------------------------------------------------------------------
def batch_table(rng, start: int, size: int) -> pa.Table:
    """One batch as score_decoded_batch builds it."""
    rows = np.arange(start, start + size, dtype=np.int64)
    error = rng.random(size) < 0.01
    floats = {"entropy": rng.random(size) * np.log(3), "entropy_norm": rng.random(size),
              "misalignment": np.where(rng.random(size) < 0.1, np.nan, rng.random(size)),
              "score": rng.random(size)}
    floats = {k: np.where(error, np.nan, v.astype(np.float32).astype(np.float64)) for k, v in floats.items()}
    pred = np.array(CLASSES, dtype=object)[rng.integers(0, 3, size)]
    return pa.table({
        "row": rows, "id": [f"case_{r:08d}.png" for r in rows],
        "pred": [None if e else p for e, p in zip(error, pred, strict=True)],
        **{k: pa.array(v, from_pandas=False) for k, v in floats.items()},
        "status": ["error" if e else "ok" for e in error],
        "error": ["could not decode the image: truncated PNG" if e else None for e in error],
    }, schema=OUTPUT_SCHEMA)


def write_template(folder: Path, rows: int, batch: int) -> list:
    """The shards of a whole run, written by ShardStore.write_shard; returns their paths."""
    rng = np.random.default_rng(rows + batch)
    folder.mkdir()
    store = ShardStore(folder / "template.parquet", MANIFEST)
    keep, shard_store._fsync = shard_store._fsync, lambda path: None  # one sync below instead of two per shard
    try:
        for index, start in enumerate(range(0, rows, batch)):
            store.write_shard(index, batch_table(rng, start, min(batch, rows - start)))
    finally:
        shard_store._fsync = keep
        store.release()
    os.sync()
    return sorted(str(p) for p in Path(store.parts_dir).glob("part-*.parquet"))


def fresh_store(folder: Path, name: str, shards: list) -> ShardStore:
    """A store as a run leaves it before finalize: its run.json, every shard, all on disk."""
    store = ShardStore(folder / f"{name}.parquet", MANIFEST)
    for path in shards:
        shutil.copyfile(path, store._path(os.path.basename(path)))
    os.sync()
    return store


def finalize(impl: dict, store: ShardStore, rows: int, labelled) -> tuple[dict, pa.Table]:
    """ShardStore.finalize's steps (without embeddings), timed one by one."""
    times = {}
    start = time.perf_counter()
    merged = impl["merge"](store, rows)
    times["read + check"] = time.perf_counter() - start
    start = time.perf_counter()
    ranked = impl["rank"](store, merged, labelled)
    times["rank"] = time.perf_counter() - start
    start = time.perf_counter()
    store._write_output(ranked)
    times["write"] = time.perf_counter() - start
    start = time.perf_counter()
    impl["discard"](store)
    times["delete"] = time.perf_counter() - start
    start = time.perf_counter()
    impl["count"](ranked)
    times["status count"] = time.perf_counter() - start
    store.release()
    return times, ranked


def same_table(a: pa.Table, b: pa.Table) -> bool:
    if not a.schema.equals(b.schema, check_metadata=True) or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns, strict=True):
        x, y = x.combine_chunks(), y.combine_chunks()
        if pa.types.is_floating(x.type):
            if not (np.array_equal(x.is_null(), y.is_null()) and np.array_equal(
                    x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), equal_nan=True)):
                return False
        elif not x.equals(y):
            return False
    return True


def run_case(rows: int, batch: int, rounds: int, folder: Path) -> dict:
    started = time.perf_counter()
    shards = write_template(folder / "template", rows, batch)
    print(f"  {len(shards):,} shards written in {time.perf_counter() - started:.1f} s", flush=True)
    labelled = np.random.default_rng(1).random(rows) < 0.05
    times = {name: {phase: [] for phase in PHASES} for name in IMPLS}
    for r in range(rounds):
        names = list(IMPLS) if r % 2 == 0 else list(IMPLS)[::-1]
        outputs = {}
        for name in names:
            round_folder = folder / f"round-{r}-{name}"
            round_folder.mkdir()
            store = fresh_store(round_folder, "scores", shards)
            measured, ranked = finalize(IMPLS[name], store, rows, labelled)
            for phase, seconds in measured.items():
                times[name][phase].append(seconds)
            outputs[name] = (ranked, (round_folder / "scores.parquet").read_bytes())
            leftovers = sorted(p.name for p in round_folder.iterdir())
            assert leftovers == ["scores.parquet"], leftovers
        (old, old_bytes), (new, new_bytes) = outputs["before"], outputs["after"]
        assert same_table(old, new), "the ranked tables differ"
        assert old_bytes == new_bytes, "the written outputs differ"
        print(f"  round {r + 1}: " + ", ".join(f"{name} {sum(times[name][p][-1] for p in PHASES):.2f} s"
                                               for name in IMPLS) + " (outputs identical)", flush=True)
        for name in names:
            shutil.rmtree(folder / f"round-{r}-{name}")
    shutil.rmtree(folder / "template")
    return times


def table(results: dict, rounds: int) -> str:
    lines = ["| rows | batch | shards | phase | before, s | after, s | before / after |",
             "| ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for (rows, batch), times in results.items():
        shards = -(-rows // batch)
        for phase in (*PHASES, "total"):
            if phase == "total":
                best = {name: min(sum(times[name][p][r] for p in PHASES) for r in range(rounds)) for name in IMPLS}
                median = {name: float(np.median([sum(times[name][p][r] for p in PHASES) for r in range(rounds)]))
                          for name in IMPLS}
            else:
                best = {name: min(times[name][phase]) for name in IMPLS}
                median = {name: float(np.median(times[name][phase])) for name in IMPLS}
            before, after = best["before"], best["after"]
            label = f"**{phase}**" if phase == "total" else phase
            lines.append(f"| {rows:,} | {batch:,} | {shards:,} | {label} | {before:.3f} ({median['before']:.3f}) | "
                         f"{after:.3f} ({median['after']:.3f}) | {before / after:.1f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(f"{r}x{b}" for r, b in CASES),
                        help="ROWSxBATCH,... (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write the shards (default: a temporary folder)")
    args = parser.parse_args()
    cases = [tuple(int(x) for x in case.split("x")) for case in args.cases.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="finalize-") as tmp:
        for rows, batch in cases:
            print(f"{rows:,} rows in batches of {batch:,}:", flush=True)
            folder = Path(tmp) / f"{rows}x{batch}"
            folder.mkdir()
            results[(rows, batch)] = run_case(rows, batch, args.rounds, folder)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"\n{datetime.date.today()}, {model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"pyarrow {pa.__version__}, numpy {np.__version__}; load average at the end {os.getloadavg()[0]:.1f}")
    print(f"Wall seconds, best of {args.rounds} (median in brackets):\n{table(results, args.rounds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
