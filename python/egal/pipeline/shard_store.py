"""Crash-safe output: one Parquet shard per scored batch, then an atomic merge.

    scores.parquet.parts/
        run.json              what this run is (pool, model, alpha, batch size, ...): checked on --resume
        part-000000.parquet   batch 0, written to a temporary name, fsynced, renamed
        part-000001.parquet   ...

A shard either exists completely under its final name or not at all, so a run
killed at any moment (SIGKILL included) loses at most the batches in flight,
and `--resume` scores exactly the batches without a shard. The final output is
written to a temporary file and renamed over `scores.parquet` only once every
batch has a shard; the parts folder is removed after that rename. Killed during
the merge, a resumed run simply merges again. The output keeps the run's
manifest in its Parquet metadata (key "egal.run"), so that resuming a finished
run is accepted only with the arguments that produced it (egal.pipeline.run_record
reads and compares those records; egal.pipeline.output_layout names the files).

overwrite replaces an existing output (atomically, once the new one is
complete) and deletes an unfinished run's parts folder first, saying so. A run
holds a lock on its parts folder while it lives, so that a second run on the
same output (an overlapping scheduled job) is refused instead of racing it.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .._atomic import replaced_atomically
from .batch_scoring import OUTPUT_SCHEMA
from .output_layout import MANIFEST, OVERWRITE, RESUME, RUN_METADATA_KEY, OutputError, parts_dir_of
from .ranking import rank_table
from .run_record import refuse_changed_arguments, rows_missing_or_added

PART = re.compile(r"^part-(\d{6,})\.parquet$")
RAY_OUTPUT = "ray-output"  # what older versions of the Ray engine left in the parts folder
DISCARDED = ".done-"  # NAME.parquet.parts.done-PID-HEX: a finished run's shards, being deleted


class ShardStore:
    def __init__(self, out_path, manifest: dict, *, resume: bool = False, overwrite: bool = False, log=None):
        """log: called with a line of text for what the store does on its own (clearing an unfinished run)."""
        self.out_path = os.path.abspath(os.fspath(out_path))
        self.parts_dir = parts_dir_of(self.out_path)
        self.manifest = manifest
        self.already_complete = False
        folder = os.path.dirname(self.out_path)
        if not os.path.isdir(folder):
            raise OutputError(f"out {out_path!r} (--out): folder {folder!r} does not exist")
        self._lock_fd = None
        self._remove_discarded_parts()
        has_parts = os.path.isdir(self.parts_dir)
        if has_parts:
            self._lock(out_path)  # before reading or deleting anything in it
        if resume:
            if has_parts:
                self._check_manifest()
                self._set_aside_unreadable_shards(log)
            elif os.path.exists(self.out_path):
                self._check_finished_run(out_path)
                self.already_complete = True  # finished earlier with these very arguments; nothing to score
                return
        else:
            if has_parts and not overwrite:
                raise OutputError(
                    f"an unfinished run left {self.parts_dir!r}: pass {RESUME} to finish it (only the missing "
                    f"batches are scored), or {OVERWRITE} to delete it and start over")
            if os.path.exists(self.out_path) and not overwrite:
                raise OutputError(f"out {out_path!r} (--out) already exists: pass {OVERWRITE} to replace it, or choose "
                                  "another path")
            if has_parts:
                batches = self._remove_unfinished_run()
                self.release()  # that lock was on the folder just deleted: the new one is locked below
                if log is not None:
                    log(f"{OVERWRITE}: deleted the unfinished run in {self.parts_dir} ({batches} scored batch(es)); "
                        "starting over")
        os.makedirs(self.parts_dir, exist_ok=True)
        if self._lock_fd is None:
            self._lock(out_path)
        self._remove_output_temporaries()
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
        with replaced_atomically(final) as tmp:
            pq.write_table(table, tmp)
            _fsync(tmp)
        _fsync(self.parts_dir)

    # -- the merge --------------------------------------------------------------------------
    def finalize(self, num_rows: int, *, embeddings_path: str | None = None, embedding_kind: str = "",
                 labelled=None) -> pa.Table:
        """Merge every shard into the ranked output; returns the ranked table (from which the caller selects).

        labelled: [num_rows] bool, the rows the pool labels (egal.pipeline.ranking.rank_table).

        embeddings_path: also gather the shards' selection embeddings, in pool order, into that file
        (egal.selection.embedding_file), written before the scores so that a run killed in between
        still has its shards and merges both again. Refuses unless the shards hold every pool row
        exactly once."""
        if self.already_complete:
            ranked = pq.read_table(self.out_path)
        else:
            merged = self._merged_shards(num_rows)
            if embeddings_path is not None:
                self._write_embeddings(embeddings_path, embedding_kind)
            ranked = self._ranked(merged, labelled)
            self._write_output(ranked)
        if os.path.isdir(self.parts_dir):
            self._discard_parts()
        return ranked

    def _merged_shards(self, num_rows: int) -> pa.Table:
        """Every shard's OUTPUT_SCHEMA columns, in batch order; refuses unless they hold each pool row once.

        One dataset over the shard files (read by pyarrow's thread pool, in the order given) rather than a
        pq.read_table per file: the same table, without building a dataset for each of thousands of shards."""
        paths = [self._path(f"part-{i:06d}.parquet") for i in sorted(self.completed_batches())]
        merged = read_shards(paths)
        rows = np.sort(merged.column("row").to_numpy())
        if merged.num_rows != num_rows or not np.array_equal(rows, np.arange(num_rows)):
            raise OutputError(f"the shards in {self.parts_dir!r} do not hold each of the pool's {num_rows} rows "
                              f"exactly once ({merged.num_rows} rows); delete that folder and score again")
        return merged

    def _ranked(self, merged: pa.Table, labelled) -> pa.Table:
        ranked = rank_table(merged, alpha=self.manifest.get("alpha"), combine=self.manifest.get("combine", "raw"),
                            labelled=labelled, include_labelled=self.manifest.get("include_labelled", False))
        # The output records the arguments that produced it: a later --resume checks them.
        metadata = {**(ranked.schema.metadata or {}), RUN_METADATA_KEY: json.dumps(self.manifest, sort_keys=True)}
        return ranked.replace_schema_metadata(metadata)

    def _write_output(self, ranked: pa.Table) -> None:
        with replaced_atomically(self.out_path) as tmp:
            pq.write_table(ranked, tmp)
            _fsync(tmp)
        _fsync(os.path.dirname(self.out_path))

    def _discard_parts(self) -> None:
        """Delete the shards of the finished run. Renamed away first, in one step: a run stopped while the files
        are deleted leaves no parts folder without its run.json (which --resume could not read, nor a new run
        clear); the next run removes the renamed folder. The shards are unlinked by a few threads, and this
        waits for them (see _unlink_shards); rmtree removes the rest and the folder."""
        done = f"{self.parts_dir}{DISCARDED}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(self.parts_dir, done)
        _unlink_shards(done)
        shutil.rmtree(done, ignore_errors=True)

    def _write_embeddings(self, path: str, kind: str) -> None:
        from ..selection.embedding_file import EMBEDDING_COLUMN, write_embedding_file

        def shards():
            for i in sorted(self.completed_batches()):
                table = pq.read_table(self._path(f"part-{i:06d}.parquet"), columns=["row", "id", EMBEDDING_COLUMN])
                yield table.sort_by("row")

        write_embedding_file(path, shards(), run=self.manifest, kind=kind)

    # -- helpers ----------------------------------------------------------------------------
    def _lock(self, out_path) -> None:
        """Hold an exclusive lock on the parts folder for as long as this process lives (the kernel
        drops it when the process ends, killed or not): two runs never write, merge or delete the
        same shards at once, as overlapping scheduled jobs would."""
        try:
            fd = os.open(self.parts_dir, os.O_RDONLY)
        except FileNotFoundError:
            return  # merged and removed by the run that held it just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"another egal score is writing to out {out_path!r} (--out) now (it holds "
                              f"{self.parts_dir!r}); wait for it to end, or choose another out") from None
        except OSError:
            pass  # a file system without locks: go on unlocked
        self._lock_fd = fd

    def release(self) -> None:
        """Drop the lock (the end of the run; the process ending drops it too)."""
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self):
        self.release()

    def _path(self, name: str) -> str:
        return os.path.join(self.parts_dir, name)

    def _set_aside_unreadable_shards(self, log) -> None:
        """A shard whose Parquet footer cannot be read (a disk or copy fault: egal writes them whole) is renamed
        to NAME.unreadable (it goes with the parts folder when the run completes) and its batch is scored again."""
        for name in sorted(os.listdir(self.parts_dir)):
            if not PART.match(name):
                continue
            try:
                pq.read_metadata(self._path(name))
            except (OSError, pa.ArrowException) as exc:
                os.replace(self._path(name), self._path(name + ".unreadable"))
                if log is not None:
                    log(f"resume: shard {self._path(name)} cannot be read ({exc}); set aside as {name}.unreadable, "
                        "its batch is scored again")

    def _check_manifest(self) -> None:
        try:
            with open(self._path(MANIFEST)) as f:
                previous = json.load(f)
            if not isinstance(previous, dict):
                raise ValueError(f"a JSON {type(previous).__name__}, not the record of a run")
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot resume: {self._path(MANIFEST)!r} is unreadable ({exc}); delete "
                              f"{self.parts_dir!r} (or pass {OVERWRITE} instead of {RESUME}) to start over") from exc
        refuse_changed_arguments(previous, self.manifest, self.out_path, finished=False)

    def _check_finished_run(self, out_path) -> None:
        """Resuming a run that already finished: only with the arguments that produced it."""
        try:
            metadata = pq.read_schema(self.out_path).metadata or {}
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"cannot resume: out {out_path!r} (--out) exists but is not a readable Parquet file "
                              f"({exc}); pass {OVERWRITE} instead of {RESUME} to score again") from exc
        try:
            previous = json.loads(metadata[RUN_METADATA_KEY])
            if not isinstance(previous, dict):
                raise ValueError("not the record of a run")
        except (KeyError, ValueError):
            raise OutputError(
                f"cannot resume: out {out_path!r} (--out) exists but does not record the arguments of the run that "
                "wrote it (not written by this version of egal score), so it cannot be checked against this one; "
                f"pass {OVERWRITE} instead of {RESUME} to score again, or choose another out") from None
        refuse_changed_arguments(previous, self.manifest, out_path, finished=True)
        changed = rows_missing_or_added(pq.ParquetFile(self.out_path).metadata.num_rows, previous)
        if changed:
            raise OutputError(f"cannot resume: out {out_path!r} (--out) {changed}; pass {OVERWRITE} instead of "
                              f"{RESUME} to score the pool again")

    def _remove_unfinished_run(self) -> int:
        """Delete the parts folder, after checking it holds nothing but what a scoring run writes there."""
        names = os.listdir(self.parts_dir)
        foreign = [n for n in names if not (n == MANIFEST or PART.match(n) or ".tmp-" in n or n == RAY_OUTPUT
                                            or n.endswith(".unreadable"))]
        if foreign:
            raise OutputError(
                f"{self.parts_dir!r} holds files that egal score did not write ({', '.join(sorted(foreign)[:5])}); "
                "it was left as it is: move them away, or delete the folder yourself")
        batches = sum(1 for n in names if PART.match(n))
        shutil.rmtree(self.parts_dir)
        return batches

    def _remove_discarded_parts(self) -> None:
        """The parts folders of finished runs that were stopped while deleting them (no run uses them again)."""
        folder, prefix = os.path.dirname(self.out_path), os.path.basename(self.parts_dir) + DISCARDED
        for entry in os.listdir(folder):
            if entry.startswith(prefix) and os.path.isdir(os.path.join(folder, entry)):
                shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)

    def _remove_output_temporaries(self) -> None:
        """The output's temporary copy that a run killed while writing it left beside it. Only a run holding
        this store's lock writes one, and this one holds it: none is in use now."""
        folder, name = os.path.split(self.out_path)
        for entry in os.listdir(folder):
            if re.fullmatch(re.escape(name) + r"\.tmp-\d+-[0-9a-f]{8}", entry):
                os.remove(os.path.join(folder, entry))

    def _remove_temporaries(self) -> None:
        for name in os.listdir(self.parts_dir):
            if ".tmp-" in name:
                os.remove(self._path(name))


def read_shards(paths: list) -> pa.Table:
    """The OUTPUT_SCHEMA columns of these shard files, concatenated in the order given (what
    pa.concat_tables([pq.read_table(p, schema=OUTPUT_SCHEMA) for p in paths]) reads)."""
    if not paths:
        return OUTPUT_SCHEMA.empty_table()
    import pyarrow.dataset as ds  # (imported by pq.read_table too, on first use)

    return ds.dataset(paths, schema=OUTPUT_SCHEMA, format="parquet", filesystem=pafs.LocalFileSystem()).to_table()


UNLINK_THREADS = 8
UNLINK_CHUNK = 64  # shards per task: a stop (Ctrl-C) waits for at most the tasks running


def _unlink_shards(folder: str) -> None:
    """Unlink the shard files in `folder` (errors ignored, as rmtree's), with a few threads, and return once all
    are gone. Unlinking fsynced files one at a time waits on the disk for each: on the development machine (ext4
    mounted with discard, as cloud disks often are) at times 2-3.7 ms a shard with rmtree against about 0.5 ms
    with 8 threads, whose waits overlap; when the disk is quicker both take 0.2-0.6 ms, and files only in the
    page cache go as fast either way (bench/bench_score_finalize.py, bench/README.md)."""
    try:
        names = [name for name in os.listdir(folder) if PART.match(name)]
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    chunks = [names[i:i + UNLINK_CHUNK] for i in range(0, len(names), UNLINK_CHUNK)]

    def unlink(chunk):
        for name in chunk:
            try:
                os.unlink(name, dir_fd=fd)
            except OSError:
                pass

    try:
        if len(chunks) <= 1:
            for chunk in chunks:
                unlink(chunk)
            return
        with ThreadPoolExecutor(min(UNLINK_THREADS, len(chunks)), thread_name_prefix="egal-unlink") as pool:
            futures = [pool.submit(unlink, chunk) for chunk in chunks]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # stopped: only the chunks already running finish
                raise
    finally:
        os.close(fd)


def _atomic_write_bytes(path: str, data: bytes) -> None:
    with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: str) -> None:
    """Flush a file, or a folder's entries (so a rename survives a power cut), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
