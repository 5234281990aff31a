"""Crash-safe output: one Parquet shard per scored batch, then an atomic merge.

    scores.parquet.parts/
        run.json              what this run is (pool, model, alpha, batch size): checked on --resume
        part-000000.parquet   batch 0, written to a temporary name, fsynced, renamed
        part-000001.parquet   ...

A shard either exists completely under its final name or not at all, so a run
killed at any moment (SIGKILL included) loses at most the batches in flight,
and `--resume` scores exactly the batches without a shard. The final output is
written to a temporary file and renamed over `scores.parquet` only once every
batch has a shard; the parts folder is removed after that rename. Killed during
the merge, a resumed run simply merges again.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .batch_scoring import OUTPUT_SCHEMA
from .ranking import rank_table, selection_table

MANIFEST = "run.json"
PART = re.compile(r"^part-(\d{6,})\.parquet$")


class OutputError(ValueError):
    """The output location cannot be used as asked (exists, or belongs to another run)."""


class ShardStore:
    def __init__(self, out_path, manifest: dict, *, resume: bool = False, overwrite: bool = False):
        self.out_path = os.path.abspath(os.fspath(out_path))
        self.parts_dir = self.out_path + ".parts"
        self.manifest = manifest
        self.already_complete = False
        folder = os.path.dirname(self.out_path)
        if not os.path.isdir(folder):
            raise OutputError(f"--out {out_path!r}: folder {folder!r} does not exist")
        has_parts = os.path.isdir(self.parts_dir)
        if resume:
            if has_parts:
                self._check_manifest()
            elif os.path.exists(self.out_path):
                self.already_complete = True  # finished earlier; nothing to do
                return
        else:
            if has_parts:
                raise OutputError(
                    f"an unfinished run left {self.parts_dir!r}: pass --resume to finish it (only the missing batches "
                    f"are scored), or delete that folder to start over")
            if os.path.exists(self.out_path) and not overwrite:
                raise OutputError(f"--out {out_path!r} already exists: pass --overwrite to replace it, or choose another path")
        os.makedirs(self.parts_dir, exist_ok=True)
        if not os.path.exists(self._path(MANIFEST)):
            _atomic_write_bytes(self._path(MANIFEST), json.dumps(manifest, indent=2, sort_keys=True).encode())
        self._remove_temporaries()

    # -- shards -----------------------------------------------------------------------------
    def completed_batches(self) -> set:
        if self.already_complete:
            return set()
        return {int(m.group(1)) for name in os.listdir(self.parts_dir) if (m := PART.match(name))}

    def write_shard(self, batch_index: int, table: pa.Table) -> None:
        final = self._path(f"part-{batch_index:06d}.parquet")
        tmp = f"{final}.tmp-{os.getpid()}"
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(self.parts_dir)

    # -- the merge --------------------------------------------------------------------------
    def finalize(self, num_rows: int, *, select_k: Optional[int] = None,
                 select_path: Optional[str] = None) -> pa.Table:
        """Merge every shard into the ranked output (and the selection CSV); returns the ranked table.

        Refuses unless the shards hold every pool row exactly once."""
        if self.already_complete:
            ranked = pq.read_table(self.out_path)
        else:
            shards = [pq.read_table(self._path(f"part-{i:06d}.parquet"), schema=OUTPUT_SCHEMA)
                      for i in sorted(self.completed_batches())]
            merged = pa.concat_tables(shards) if shards else OUTPUT_SCHEMA.empty_table()
            rows = np.sort(merged.column("row").to_numpy())
            if merged.num_rows != num_rows or not np.array_equal(rows, np.arange(num_rows)):
                raise RuntimeError(f"the shards in {self.parts_dir!r} do not hold each of the pool's {num_rows} rows "
                                   f"exactly once ({merged.num_rows} rows); delete that folder and score again")
            ranked = rank_table(merged)
            tmp = f"{self.out_path}.tmp-{os.getpid()}"
            pq.write_table(ranked, tmp)
            _fsync(tmp)
            os.replace(tmp, self.out_path)
            _fsync(os.path.dirname(self.out_path))
        if select_k is not None and select_path:
            write_selection_csv(selection_table(ranked, select_k), select_path)
        if os.path.isdir(self.parts_dir):
            shutil.rmtree(self.parts_dir)
        return ranked

    # -- helpers ----------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.parts_dir, name)

    def _check_manifest(self) -> None:
        try:
            with open(self._path(MANIFEST)) as f:
                previous = json.load(f)
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot resume: {self._path(MANIFEST)!r} is unreadable ({exc}); delete "
                              f"{self.parts_dir!r} to start over") from exc
        changed = sorted(k for k in set(previous) | set(self.manifest) if previous.get(k) != self.manifest.get(k))
        if changed:
            raise OutputError(
                f"cannot resume: this run differs from the unfinished one in {self.parts_dir!r} in "
                f"{', '.join(changed)}; rerun with the same pool, model and options, or delete that folder to start over")

    def _remove_temporaries(self) -> None:
        for name in os.listdir(self.parts_dir):
            if ".tmp-" in name:
                os.remove(self._path(name))


def write_selection_csv(selection: pa.Table, path: str) -> None:
    tmp = f"{os.path.abspath(path)}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(selection.column_names)
        for row in zip(*(selection.column(c).to_pylist() for c in selection.column_names)):
            writer.writerow([_csv_cell(v) for v in row])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _csv_cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""  # no ROI: misalignment is undefined (SCORING.md, empty ROI)
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: str) -> None:
    """Flush a file, or a folder's entries (so a rename survives a power cut), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
