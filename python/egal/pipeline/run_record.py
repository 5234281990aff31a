"""The record of a scoring run (its manifest: egal version, pool, model, options), which the run writes beside
its output and, once finished, into it (egal.pipeline.output_layout): read back, and compared with the
arguments of a run that resumes it, which are refused where they differ."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from .output_layout import MANIFEST, OVERWRITE, RESUME, RUN_METADATA_KEY, OutputError, parts_dir_of


def recorded_run(out_path) -> dict | None:
    """The arguments recorded by the run that wrote `out_path`, unfinished (its parts folder) or finished (the
    output's metadata); None where there is no such run or its record cannot be read (the store then says so)."""
    out_path = os.path.abspath(os.fspath(out_path))
    try:
        if os.path.isdir(parts_dir_of(out_path)):
            with open(os.path.join(parts_dir_of(out_path), MANIFEST)) as f:
                recorded = json.load(f)
        elif os.path.exists(out_path):
            recorded = json.loads((pq.read_schema(out_path).metadata or {})[RUN_METADATA_KEY])
        else:
            return None
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None
    return recorded if isinstance(recorded, dict) else None


def rows_missing_or_added(num_rows: int, run: dict) -> str | None:
    """What is wrong when a finished output holds another number of rows than the pool its run scored (rows cut
    out or added by hand or by another tool after egal score wrote it, one row per pool row); None when it holds
    as many, or its record does not say."""
    pool = run.get("pool")
    expected = pool.get("num_rows") if isinstance(pool, dict) else None
    if not isinstance(expected, int) or isinstance(expected, bool) or expected == num_rows:
        return None
    return (f"holds {num_rows} row(s), but the run that wrote it scored a pool of {expected}: rows were removed or "
            "added after egal score wrote it")


def check_resume_arguments(out_path, arguments: dict) -> None:
    """Refuse a resume whose `arguments` (some of a run manifest's keys) differ from the recorded run's, before
    the work that the rest of the manifest needs (the runtime check scores a batch); the store checks all of
    it. Nothing recorded, or a record that cannot be read: left to the store, which says so."""
    previous = recorded_run(out_path)
    if previous is not None:
        finished = not os.path.isdir(parts_dir_of(out_path))
        refuse_changed_arguments({key: previous[key] for key in arguments if key in previous}, arguments, out_path,
                                 finished)


def refuse_changed_arguments(previous: dict, current: dict, out_path, finished: bool) -> None:
    """OutputError naming what differs between the `previous` record and the `current` one, if anything does;
    finished: the record is the output's (a finished run), else its parts folder's."""
    changed = describe_differences(previous, current)
    if not changed:
        return
    if finished:
        raise OutputError(
            f"cannot resume: out {os.fspath(out_path)!r} (--out) is a finished run that differs from this one in "
            f"{changed}; pass {OVERWRITE} instead of {RESUME} to score again with these arguments, or choose "
            "another out")
    raise OutputError(
        f"cannot resume: this run differs from the unfinished one in {parts_dir_of(out_path)!r} in {changed}; rerun "
        f"with the same pool, model and options, or pass {OVERWRITE} instead of {RESUME} to start over")


# Manifest keys written only when not at their default (a run recorded before the key existed had the default).
RECORDED_WHEN_SET = {"label_column": "label"}


def describe_differences(previous: dict, current: dict) -> str:
    """The keys in which two run manifests differ, with both values where they are short; '' when equal."""
    parts = []
    for key in sorted(set(previous) | set(current)):
        before, now = (m.get(key, RECORDED_WHEN_SET.get(key)) for m in (previous, current))
        if before == now:
            continue
        if key == "pool":
            parts.append("pool (other files, or the files changed since)")
        elif key == "model_sha256":
            parts.append("model (another file, or the file changed since)")
        else:
            parts.append(f"{key} ({_show(before)} there, {_show(now)} here)")
    return ", ".join(parts)


def _show(value) -> str:
    return "not recorded" if value is None else json.dumps(value)
