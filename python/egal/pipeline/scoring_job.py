"""Scoring a pool as a library call: `score_pool` checks everything, scores the missing batches,
merges and ranks, and returns what it did (`PoolScores`). `egal score` is this call plus printing."""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

import pyarrow as pa

from .. import __version__
from .._checks import bad_argument
from .._paths import (
    check_distinct_outputs,
    check_new_file,
    check_not_an_input,
    check_outside_folder_pool,
    check_replaceable,
    check_utf8_name,
    file_sha256,
    has_parquet_columns,
    has_parquet_metadata,
    sidecar_path,
)
from ..errors import EgalError
from ..pool import open_pool
from ..pool.decode import DECODE_RULES
from ..pool.labels import LABEL_COLUMN, check_label_column, read_labels, reads_as_missing
from ..pool.workers import check_worker_count
from ..selection.csv_file import is_selection_csv, write_selection_csv
from ..selection.embedding_file import EMBEDDING_KEY
from .local_engine import score_pool_locally
from .model_runner import load_runner
from .options import ScoreOptions
from .output_layout import RUN_METADATA_KEY, parts_dir_of
from .progress import RowProgress
from .ranking import count_ok
from .run_record import check_resume_arguments, recorded_run
from .runtime import RuntimeChoice, choose_runtime
from .shard_store import ShardStore


class PoolLabelWarning(UserWarning):
    """The pool's labels do not read as the model's classes: classes the model was not trained on, or text that
    reads like a missing value ('nan'), which counts as a label, so that such rows are never selected."""


@dataclass(frozen=True)
class PoolScores:
    """What `score_pool` did.

    out:             the ranked output written (Parquet, one row per pool row, in pool order)
    selection_path:  the selection CSV written, None without `select`
    rows:            pool rows
    rows_scored:     rows with status "ok"
    rows_in_error:   rows with status "error" (the reason is in the table's `error` column)
    seconds:         time this call spent scoring (0 for an already complete output)
    rows_per_second: rows scored by this call per second (a resumed run skips the finished batches)
    resumed:         batches from an earlier, interrupted run were kept
    already_complete: `out` was a finished run with these options (resume=True); nothing was scored
    table:           the ranked output as a pyarrow Table (columns id, pred, entropy, entropy_norm,
                     misalignment, score, rank, status, error)
    selection:       the `select` top-ranked rows (rank, id, score, entropy_norm, misalignment, pred),
                     fewer when fewer rows could be scored; None without `select`. With a group cap or
                     diversity: the batch egal.selection chose (and the group column last, with a cap)
    options:         the ScoreOptions of the run
    ray_log:         where Ray's own output went (engine "ray" without verbose), else None
    runtime:         what ran the model: "torch" or "onnxruntime" (chosen by runtime="auto"; egal.pipeline.runtime)
    runtime_note:    why that runtime, and what choosing it cost (an export, the first-batch check)
    embeddings_path: the embeddings file written (embeddings=True), else None
    batch:           the egal.selection.Selection behind `selection` (how many rows could be selected, the
                     candidates of a diverse batch); None without `select`
    warnings:        what the run warned of the pool's labels (PoolLabelWarning), in order
    """

    out: str
    selection_path: str | None
    rows: int
    rows_scored: int
    rows_in_error: int
    seconds: float
    rows_per_second: float
    resumed: bool
    already_complete: bool
    table: pa.Table
    selection: pa.Table | None
    options: ScoreOptions
    ray_log: str | None = None
    runtime: str | None = None
    runtime_note: str = ""
    embeddings_path: str | None = None
    batch: object | None = None
    warnings: tuple = ()

    def __repr__(self) -> str:
        # The dataclass's own repr would print both tables and every option: pages for a large pool.
        selected = "" if self.selection is None else f", selected={self.selection.num_rows}"
        return (f"PoolScores(out={self.out!r}, rows={self.rows}, scored={self.rows_scored}, "
                f"errors={self.rows_in_error}{selected}"
                + (f", selection_path={self.selection_path!r}" if self.selection_path else "") + ")")

    def errors(self, limit: int | None = None) -> list:
        """(id, reason) of the rows in error, in pool order (the first `limit` of them)."""
        ids, reasons = self.table.column("id").to_pylist(), self.table.column("error").to_pylist()
        found = [(i, r) for i, r in zip(ids, reasons, strict=True) if r]
        return found if limit is None else found[:limit]


def score_pool(
    pool,
    model,
    *,
    out: str = ScoreOptions.out,
    alpha: float = ScoreOptions.alpha,
    combine: str = ScoreOptions.combine,
    batch_size: int = ScoreOptions.batch_size,
    device: str = ScoreOptions.device,
    runtime: str = ScoreOptions.runtime,
    workers: int | None = ScoreOptions.workers,
    engine: str = ScoreOptions.engine,
    ray_address: str | None = ScoreOptions.ray_address,
    resume: bool = ScoreOptions.resume,
    overwrite: bool = ScoreOptions.overwrite,
    select: int | None = ScoreOptions.select,
    select_out: str | None = ScoreOptions.select_out,
    embeddings: bool = ScoreOptions.embeddings,
    diversity: str = ScoreOptions.diversity,
    group_column: str | None = ScoreOptions.group_column,
    per_group: int | None = ScoreOptions.per_group,
    include_labelled: bool = ScoreOptions.include_labelled,
    label_column: str = ScoreOptions.label_column,
    progress: bool = ScoreOptions.progress,
    verbose: bool = ScoreOptions.verbose,
) -> PoolScores:
    """Score every image of a pool with a trained model and rank what to annotate next.

    Writes `out` (one row per pool row: id, pred, entropy, entropy_norm, misalignment, score,
    rank, status, error, labelled) crash-safely, and with `select` the top rows to `select_out`; returns
    a PoolScores. The arguments are ScoreOptions' fields (see it for each). A bad argument,
    pool or model raises ValueError / TypeError / FileNotFoundError before anything is written;
    an existing `out` is refused without overwrite=True or resume=True (egal.pipeline.shard_store).
    A dead decoder worker raises egal.pool.DecoderDied; every finished batch is kept for
    resume=True, also after KeyboardInterrupt.
    """
    return run_scoring(ScoreOptions(
        pool=pool, model=model, out=out, alpha=alpha, combine=combine, batch_size=batch_size, device=device,
        runtime=runtime,
        workers=workers, engine=engine, ray_address=ray_address, resume=resume, overwrite=overwrite, select=select,
        select_out=select_out, embeddings=embeddings, diversity=diversity, group_column=group_column,
        per_group=per_group, include_labelled=include_labelled, label_column=label_column, progress=progress,
        verbose=verbose))


def _is_score_output(path) -> bool:
    """Written by egal score: its run record, or (an older egal's, or one another tool rewrote) its columns."""
    return has_parquet_metadata(path, RUN_METADATA_KEY) or has_parquet_columns(path, ("id", "score", "rank",
                                                                                      "status"))


def _is_embeddings_file(path) -> bool:
    return has_parquet_metadata(path, EMBEDDING_KEY)


def _check_output_paths(o: ScoreOptions) -> None:
    """Every file the run will write can be written, none is an input and no two are the same file, before any
    scoring: the output (whose existence the shard store judges, with resume and overwrite) and the selection and
    embeddings files beside it, which replace an existing file only with overwrite=True or resume=True. Each
    replaces only an earlier file of its own kind (a mistyped path never turns a pool or an image into scores)."""
    inputs = {"pool (--pool)": o.pool, "model (--model)": o.model}
    for name, path in (("out (--out)", o.out), ("the embeddings file (--embeddings)", o.embeddings_path)):
        if path is not None:
            check_utf8_name(path, name)
    check_not_an_input(o.out, "out (--out)", inputs)
    for name, path in (("out (--out)", o.out), ("the embeddings file (--embeddings)", o.embeddings_path)):
        if path is not None:
            check_outside_folder_pool(path, name, o.pool)
    check_replaceable(o.out, "out (--out)", _is_score_output, "an egal score output")
    check_new_file(o.out, "out (--out)", replace=True)
    sidecars = [("select_out (--select-out)", o.selection_path, is_selection_csv, "a selection CSV that egal wrote"),
                ("the embeddings file (--embeddings)", o.embeddings_path, _is_embeddings_file,
                 "an egal embeddings file")]
    check_distinct_outputs({"out (--out)": o.out, **{name: path for name, path, _, _ in sidecars}})
    parts = os.path.realpath(parts_dir_of(o.out))
    for name, path, is_own, what in sidecars:
        if path is not None:
            check_not_an_input(path, name, inputs)
            if os.path.commonpath([parts, os.path.realpath(path)]) == parts:
                raise EgalError(f"{name} {os.fspath(path)!r} is in the folder of the run's shards ({parts!r}), which "
                                "is removed when the run completes; choose another path")
            check_replaceable(path, name, is_own, what)  # before "pass --overwrite" for a file it never replaces
            check_new_file(path, name, replace=o.overwrite or o.resume)


def run_scoring(options: ScoreOptions) -> PoolScores:
    """score_pool with its arguments given as a ScoreOptions."""
    if not isinstance(options, ScoreOptions):
        raise TypeError(f"options must be an egal.ScoreOptions, got {type(options).__name__}")
    job = ScoringJob.prepare(options)
    ranked = job.run()
    statuses = ranked.column("status")
    scored = count_ok(statuses)
    return PoolScores(
        out=options.out, selection_path=options.selection_path, rows=len(statuses), rows_scored=scored,
        rows_in_error=len(statuses) - scored, runtime=job.choice.runtime, runtime_note=job.choice.note,
        seconds=0.0 if job.store.already_complete else job.progress.elapsed(),
        rows_per_second=0.0 if job.store.already_complete else job.progress.rate(),
        resumed=job.resumed, already_complete=job.store.already_complete, table=ranked,
        selection=None if job.selection is None else job.selection.table, options=options, ray_log=job.ray_log,
        embeddings_path=options.embeddings_path, batch=None if job.selection is None else job.selection.selection,
        warnings=tuple(job.label_warnings),
    )


@dataclass
class ScoringJob:
    options: ScoreOptions
    spec: object
    runner: object
    store: ShardStore
    progress: RowProgress | None = None
    resumed: bool = False
    ray_log: str | None = None  # where Ray's own output goes (engine "ray" without verbose)
    console: object | None = None  # egal's stderr while Ray's output is redirected
    choice: RuntimeChoice | None = None  # the runtime that runs the model, and why
    selection: object | None = None  # egal.selection.from_scores.TableSelection, with a group cap or diversity
    label_warnings: tuple = ()  # label_warnings' lines, as said
    labels: object | None = None  # the pool's label column (egal.pool.labels.PoolLabels), read once by prepare

    @classmethod
    def prepare(cls, options: ScoreOptions) -> ScoringJob:
        """Validate the pool, the model and the output before any scoring."""
        o = options
        spec, runner, labels = _checked_inputs(o)
        log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if o.progress else (lambda *a: None)
        _describe_inputs(o, spec, runner, log)
        if labels is None:  # (read by the group column's check, when it needed them)
            labels = read_labels(spec, o.label_column)
        said = label_warnings(spec, o.label_column, runner.classes, o.include_labelled, counts=labels.counts)
        for line in said:
            if o.progress:
                log(f"warning: {line}")
            else:
                warnings.warn(line, PoolLabelWarning, stacklevel=4)
        model_sha256 = file_sha256(o.model)  # so a resumed run can check it uses the same model
        manifest = _run_manifest(o, spec, model_sha256)
        if o.resume:  # before the runtime check, which exports and scores a batch
            _check_resume_before_the_runtime(o, runner, manifest)
        choice = _chosen_runtime(o, spec, runner, model_sha256, log)
        runner = choice.runner
        manifest["runtime"] = choice.runtime
        if o.embeddings:  # only then, so that runs without embeddings record (and resume) as before
            manifest["embeddings"] = runner.embedding_kind
        store = ShardStore(o.out, manifest, resume=o.resume, overwrite=o.overwrite,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
        done_rows = _rows_already_scored(o, spec, store, log)
        console, ray_log = _ray_console(o, store, log)
        return cls(o, spec, runner, store, resumed=done_rows > 0, ray_log=ray_log, console=console, choice=choice,
                   label_warnings=tuple(said), labels=labels,
                   progress=RowProgress(spec.num_rows, initial=done_rows, enabled=o.progress, stream=console))

    def run(self) -> pa.Table:
        """Score what is missing, merge and rank; returns the ranked table."""
        o = self.options
        try:
            if self.store.already_complete:
                pass
            elif o.engine == "ray":
                from .ray_engine import score_pool_on_ray

                try:
                    score_pool_on_ray(self.spec, self.runner.path, self.store, alpha=o.alpha, batch_size=o.batch_size,
                                      device=o.device, address=o.ray_address, actors=max(1, o.worker_count),
                                      progress=self.progress, log_path=self.ray_log,
                                      embedding_dim=self.runner.embedding_dim)
                except BaseException:
                    if self.ray_log:
                        print(f"egal score: Ray's own output is in {self.ray_log}", file=sys.stderr, flush=True)
                    raise
            else:
                score_pool_locally(self.spec, self.runner, self.store, alpha=o.alpha, batch_size=o.batch_size,
                                   workers=o.worker_count, progress=self.progress, embeddings=o.embeddings)
            ranked = self.store.finalize(self.spec.num_rows, embeddings_path=o.embeddings_path,
                                         embedding_kind=self.runner.embedding_kind,
                                         labelled=None if self.store.already_complete else self.labels.rows)
            if o.select is not None:
                self.selection = self._select(ranked)
            return ranked
        finally:
            self.progress.close()
            if self.console is not None:
                self.console.close()
            self.store.release()

    def _select(self, ranked: pa.Table):
        """The batch (the top k, or with a group cap or diversity: egal.selection), written to the selection CSV;
        on a resumed finished run too, so that a run stopped before its CSV was written still gets it."""
        from ..selection.embedding_file import EmbeddingFile
        from ..selection.from_scores import read_groups, select_from_table

        o = self.options
        source = EmbeddingFile(o.embeddings_path, run=self.store.manifest) if o.diversity != "none" else None
        groups = None
        if o.group_column is not None:
            groups = read_groups(self.spec, o.group_column, ranked.column("id").to_pylist())
        chosen = select_from_table(ranked, o.select, diversity=o.diversity, embeddings=source, groups=groups,
                                   group_column=o.group_column, per_group=o.per_group,
                                   include_labelled=o.include_labelled)
        write_selection_csv(chosen.table, o.selection_path)
        return chosen


# -- the steps of ScoringJob.prepare, in its order --------------------------------------------------------------------
def _checked_inputs(o: ScoreOptions) -> tuple:
    """(the pool's spec, the model's runner, the pool's labels (egal.pool.labels.PoolLabels) where the group column's
    check read them, else None), once the worker count, the output paths, the pool, the model, the group column and
    the Ray cluster are checked: before anything is written."""
    if o.engine == "local":
        check_worker_count(o.worker_count)
    _check_output_paths(o)
    spec = open_pool(o.pool)  # refuses a bad schema, duplicate ids, escaping or missing files
    check_label_column(spec, o.label_column)
    # With Ray the actors load the model where it runs; here it is only checked, on the CPU
    # (the driver need not have a GPU).
    runner = load_runner(o.model, "cpu" if o.engine == "ray" else o.device, embeddings=o.embeddings)
    labels = _check_group_column(o, spec)
    if o.engine == "ray":
        _check_ray_cluster(o)
    return spec, runner, labels


def _check_group_column(o: ScoreOptions, spec):
    """A cap per group names a column of the pool, whose type fits and which gives a group to every row that may
    be selected. Returns the pool's labels (egal.pool.labels.PoolLabels) where it read them, else None."""
    if o.group_column is not None and o.group_column not in spec.columns:
        from ..selection import SelectionError

        raise bad_argument(SelectionError, "group_column", f"{o.group_column!r} (--group-column) is not a "
                           f"column of the pool; it has {', '.join(repr(c) for c in spec.columns)}")
    if o.group_column is not None and o.per_group is not None:
        from ..selection.from_scores import check_pool_groups

        # Its type, and a group for every row that may be selected: before the scoring.
        labels = None if o.include_labelled else read_labels(spec, o.label_column)
        check_pool_groups(spec, o.group_column, None if labels is None else ~labels.rows)
        return labels
    return None


def _check_ray_cluster(o: ScoreOptions) -> None:
    """Ray is installed and the cluster answers."""
    import ray  # noqa: F401  (missing: the CLI names the extra to install, before anything is written)

    from .ray_engine import check_reachable

    check_reachable(o.ray_address or os.environ.get("RAY_ADDRESS"))


def _describe_inputs(o: ScoreOptions, spec, runner, log) -> None:
    """What the run scores, with what, and what the pool lacks."""
    log(f"pool: {o.pool} ({spec.num_rows} rows in {len(spec.files)} file(s), images from "
        f"{spec.image_column!r}, ROI from {spec.roi_column!r})")
    if o.label_column not in spec.columns and not o.include_labelled:
        log("note: the pool has no 'label' column, so no row counts as labelled and any row may be selected "
            "(--label-column names the column that holds the labels)")
    if spec.roi_column is None:
        log("warning: the pool has no ROI column (mask, mask_path or boxes): every row is scored by entropy "
            "alone (docs/scoring.md, empty ROI)")
    log(f"model: {runner.describe()}" + (f"; scored on {o.device} by Ray actors" if o.engine == "ray" else ""))


def label_warnings(spec, column: str, classes, include_labelled: bool, *, counts: dict | None = None) -> list[str]:
    """What the pool's labels say that the user may not expect, one line each: labels the model has no class for,
    and labels whose text reads like a missing value (egal.pool.labels.reads_as_missing), which count as labels all
    the same: such a row is scored but never selected. counts: the column's label_counts, where the caller has
    read them (egal.pool.labels.read_labels); None: read here."""
    if counts is None:
        counts = read_labels(spec, column).counts
    like_missing = {k: n for k, n in counts.items() if reads_as_missing(k)}
    unknown = {k: n for k, n in counts.items() if k not in classes and k not in like_missing}
    lines = []
    if unknown:
        known = ", ".join(map(repr, classes))
        lines.append(f"the pool labels rows with {len(unknown)} class(es) that the model was not trained on: "
                     f"{_counted(unknown)} (column {column!r}; the model's classes: {known}); is this the model "
                     "trained on this pool?")
    if like_missing:
        fate = "marked labelled" if include_labelled else "never selected"
        lines.append(f"label(s) of column {column!r} that read like a missing value count as labels: "
                     f"{_counted(like_missing)}; those rows are {fate}. If they mean no label, the pool should hold "
                     "null there")
    return lines


def _counted(counts: dict) -> str:
    """"'nan' (160 rows), 'tumour' (3 rows)", the most frequent first."""
    return ", ".join(f"{k!r} ({n} row{'s' if n != 1 else ''})" for k, n in sorted(counts.items(),
                                                                                key=lambda kv: (-kv[1], kv[0])))


def _run_manifest(o: ScoreOptions, spec, model_sha256: str) -> dict:
    """The record of the run (egal.pipeline.run_record) but for what runs the model, which is added once chosen (and
    the embeddings' kind, with embeddings): a resumed run must match it."""
    return {
        "egal_version": __version__,
        "decode_rules": DECODE_RULES,  # a resumed run decodes its images as the batches already scored did
        "pool": spec.fingerprint(),
        "model_sha256": model_sha256,
        "device": o.device,
        "alpha": o.alpha,
        "combine": o.combine,
        "batch_size": o.batch_size,
        "engine": o.engine,
        "include_labelled": o.include_labelled,  # the ranks written depend on it
        **({"label_column": o.label_column} if o.label_column != LABEL_COLUMN else {}),  # and so on this
    }


def _check_resume_before_the_runtime(o: ScoreOptions, runner, manifest: dict) -> None:
    """A resume with other arguments is refused before the runtime check (which exports and scores a batch), on
    what is known by then; the store checks the whole record."""
    early = {**manifest, "embeddings": runner.embedding_kind if o.embeddings else None,
             "label_column": o.label_column}
    # (auto is resolved by _chosen_runtime, to the recorded runtime; a graph runs on onnxruntime only, and the
    # runtime check says so if torch is asked for it)
    if o.runtime != "auto" and runner.kind == "torch":
        early["runtime"] = o.runtime
    check_resume_arguments(o.out, early)


def _chosen_runtime(o: ScoreOptions, spec, runner, model_sha256: str, log) -> RuntimeChoice:
    """What runs the model (egal.pipeline.runtime), announced: the runtime asked for, or on a resume with "auto",
    the one the run was scored with."""
    requested = o.runtime
    if o.resume and requested == "auto":
        # auto may choose otherwise this time (on a GPU it times both): resume with what the run used
        requested = (recorded_run(o.out) or {}).get("runtime", "auto")
        if requested != "auto":
            log(f"runtime: resuming a run scored with {requested}: the same again")
    try:
        choice = choose_runtime(
            runner, requested=requested, model_sha256=model_sha256, spec=spec, batch_size=o.batch_size,
            alpha=o.alpha, load=lambda graph: load_runner(graph, runner.device, embeddings=o.embeddings), log=log,
            on_cuda=o.device != "cpu" and o.engine == "local",
            gpus_elsewhere=o.device != "cpu" and o.engine == "ray",
            graph_beside_model=o.engine == "ray" and bool(o.ray_address or os.environ.get("RAY_ADDRESS")))
    except EgalError as exc:
        if requested == o.runtime:
            raise
        raise EgalError(f"cannot resume {o.out!r} (--out) with {requested}, the runtime it was scored with: "
                        f"{exc}; pass --overwrite instead of --resume to score again") from exc
    choice.announce(log, o.progress)
    return choice


def _rows_already_scored(o: ScoreOptions, spec, store: ShardStore, log) -> int:
    """The rows an earlier run of this output scored (its batches kept by the store), said."""
    if store.already_complete:
        log(f"{o.out} is already complete, from a run with these same arguments; nothing to resume")
    done_rows = min(len(store.completed_batches()) * o.batch_size, spec.num_rows)
    if done_rows > 0:
        log(f"resuming: {len(store.completed_batches())} of {spec.num_batches(o.batch_size)} batches "
            "already scored")
    return done_rows


def _ray_console(o: ScoreOptions, store: ShardStore, log) -> tuple:
    """(egal's stderr, the file of Ray's own output) while Ray's output goes to that file: engine "ray" without
    verbose, with batches to score; (None, None) otherwise."""
    if o.engine != "ray" or o.verbose or store.already_complete:
        return None, None
    # Ray's output goes to a file (descriptors 1 and 2, see ray_engine); egal's progress keeps
    # a duplicate of the terminal's stderr.
    try:
        console = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # a stderr without a descriptor (captured)
        return None, None
    ray_log = os.path.abspath(sidecar_path(o.out, ".ray.log"))
    log(f"Ray's own output goes to {ray_log} (verbose=True, --verbose, shows it here)")
    return console, ray_log
