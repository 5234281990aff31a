"""What a pool-scoring run is asked to do: `ScoreOptions`, checked when made.

The field defaults here are the defaults of `egal.score_pool` and of `egal score`
(its options and their help texts read them from here). This module imports
nothing heavy, so that `egal --help` stays fast.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from .._checks import bad_argument, check_alpha, check_bool, check_choice, check_device, check_int
from .._paths import check_distinct_outputs, parquet_name_problem
from ..combine import DEFAULT_ALPHA
from ..combine import METHODS as COMBINE_METHODS
from ..errors import EgalError
from ..pool.labels import LABEL_COLUMN, check_label_column_name
from ..selection import DIVERSITY_METHODS
from ..selection.csv_file import check_selection_name, selection_path_for
from .runtime import RUNTIMES

MODEL_BATCH_SIZE = 32  # images per model call by default, when scoring a pool and when drawing a page's Grad-CAM
ENGINES = ("local", "ray")


def default_workers() -> int:
    """Decoder processes when none are asked for: CPU count - 1, at most 4, and none below 4 CPUs.

    Measured (bench/README.md): on 2 cores the model already uses both, and a decoder
    process only adds transfer costs; with more cores it decodes while the model runs.
    """
    cpus = os.cpu_count() or 1
    return min(4, cpus - 1) if cpus >= 4 else 0


@dataclass(frozen=True)
class ScoreOptions:
    """One `egal.score_pool` run. Checked when made: a bad value raises ValueError or TypeError
    naming the field.

    pool:        a Parquet file or a folder of them, in egal's pool format (egal.pool)
    model:       a .pt file (egal.models.save_model, egal train) or an .onnx graph (egal export)
    out:         the ranked output, one row per pool row; batches go to OUT.parts/ first (crash safety)
    alpha:       weight of entropy_norm against misalignment, in [0, 1] (1: entropy only)
    combine:     "raw" (docs/scoring.md's formula) or "rank" (the same mix of each term's normalised
                 rank over the pool, egal.combine)
    batch_size:  images per model call and per shard
    device:      where the model runs: "cpu", "cuda" or "cuda:N" (the GPU of index N; engine "ray" takes "cuda",
                 and Ray gives each actor its GPU)
    runtime:     "auto", "torch" or "onnxruntime": what runs the model (egal.pipeline.runtime). auto scores a
                 .pt model with onnxruntime through a cached ONNX export checked against PyTorch on the
                 first batch, and with PyTorch where that cannot be done
    workers:     engine "local": decoder processes beside the model (0: decode in this process);
                 engine "ray": scoring actors (at least 1). None: default_workers()
    engine:      "local" (this machine) or "ray" (Ray Data on a Ray cluster)
    ray_address: the Ray cluster to join (None: RAY_ADDRESS, else a local Ray instance)
    resume:      finish an interrupted (or finished) run at `out` with the same options
    overwrite:   replace `out`, and delete an unfinished run's shards there first
    select:      also write the `select` ids to annotate next to `select_out`
    select_out:  where the selection goes (None: NAME.selection.csv next to `out`)
    embeddings:  also write each row's selection embedding to NAME.embeddings.parquet next to `out`
                 (egal.selection.embedding_file), so that a diverse selection can be made, now or later
    diversity:   "none" (the top `select`), "kcenter" or "cluster": a diverse batch among the top
                 10 x select rows in the embedding space (egal.selection; needs embeddings=True)
    group_column, per_group: at most per_group selected rows per value of the pool's group_column
                 (a patient id), each group's best first
    include_labelled: rank and select rows the pool already labels too (egal.pool.labels.is_label); by
                 default they are scored but get no rank and are never selected, since they need no
                 annotation (the pool after `egal pool add-labels` is scored again in the next round)
    label_column: the pool column whose non-empty cells mark a row as labelled (the pool format's `label`
                 by default; the same column egal train's label_column names)
    progress:    show progress and what the run does on stderr (False: quiet)
    verbose:     engine "ray": show Ray's own output instead of keeping it in NAME.ray.log
    """

    pool: str
    model: str
    out: str = "scores.parquet"
    alpha: float = DEFAULT_ALPHA
    combine: str = "raw"
    batch_size: int = MODEL_BATCH_SIZE
    device: str = "cpu"
    runtime: str = "auto"
    workers: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    resume: bool = False
    overwrite: bool = False
    select: int | None = None
    select_out: str | None = None
    embeddings: bool = False
    diversity: str = "none"
    group_column: str | None = None
    per_group: int | None = None
    include_labelled: bool = False
    label_column: str = LABEL_COLUMN
    progress: bool = True
    verbose: bool = False

    def __post_init__(self):
        for name in ("pool", "model", "out"):
            value = getattr(self, name)
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                what = "a model file (.pt or .onnx)" if name == "model" else "a path"
                raise bad_argument(TypeError, name, f"must be {what}, got {value!r}")
            object.__setattr__(self, name, os.fspath(value))
        problem = parquet_name_problem(self.out)
        if problem:
            raise bad_argument(EgalError, "out", f"is where the scores go, as Parquet: {problem} (the selected ids go "
                               "to a CSV beside it)")
        object.__setattr__(self, "alpha", check_alpha(self.alpha))
        check_choice(self.combine, "combine", COMBINE_METHODS)
        check_int(self.batch_size, "batch_size")
        check_device(self.device, "device")
        check_choice(self.runtime, "runtime", RUNTIMES)
        check_choice(self.engine, "engine", ENGINES)
        if self.workers is not None:
            check_int(self.workers, "workers", minimum=0)
        for name in ("resume", "overwrite", "include_labelled", "progress", "verbose"):
            check_bool(getattr(self, name), name)
        if self.resume and self.overwrite:
            raise bad_argument(ValueError, "resume", "and overwrite exclude each other: resume=True finishes the run "
                               "at out, overwrite=True replaces it")
        if self.select is not None:
            check_int(self.select, "select")
        if self.select_out is not None:
            object.__setattr__(self, "select_out", os.fspath(self.select_out))
        if self.selection_path is not None:
            # One path given for both is named as such first, before the name that path has for one of them; the
            # run checks every output it writes again when it starts (egal.pipeline.scoring_job).
            check_distinct_outputs({"out (--out)": self.out, "select_out (--select-out)": self.selection_path})
            check_selection_name(self.selection_path, "select_out")  # no CSV text under a name such as x.parquet
        check_label_column_name(self.label_column)
        if self.engine == "ray" and self.device.startswith("cuda:"):
            raise bad_argument(EgalError, "device", f"{self.device!r} names one GPU, and engine 'ray' gives each actor "
                               "a GPU of its own: use 'cuda'")
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise bad_argument(TypeError, "ray_address", f"must be a string, got {self.ray_address!r}")
        self._check_selection()

    def _check_selection(self) -> None:
        """The selection options fit together (egal.selection checks the data itself when it selects)."""
        check_bool(self.embeddings, "embeddings")
        check_choice(self.diversity, "diversity", DIVERSITY_METHODS)
        if self.per_group is not None:
            check_int(self.per_group, "per_group")
        if self.group_column is not None and (not isinstance(self.group_column, str) or not self.group_column):
            raise bad_argument(EgalError, "group_column", f"must be a column name, got {self.group_column!r}")
        if (self.group_column is None) != (self.per_group is None):
            given, missing = ("group_column", "per_group") if self.per_group is None else ("per_group", "group_column")
            raise bad_argument(EgalError, missing, f"is needed with {given} (--{given.replace('_', '-')}): a cap needs "
                               "the pool column that names each row's group (a patient id) and the most rows to take "
                               "from one group")
        if self.select is None and (self.diversity != "none" or self.group_column is not None
                                    or self.select_out is not None):
            asked = ("diversity" if self.diversity != "none" else "group_column" if self.group_column is not None
                     else "select_out")
            raise bad_argument(EgalError, asked, "only acts on a selection: add select=K (--select K)")
        if self.diversity != "none" and not self.embeddings:
            raise bad_argument(EgalError, "diversity", f"{self.diversity!r} measures distances between rows in the "
                               "model's embedding space and needs embeddings=True (--embeddings), which writes them")

    @property
    def worker_count(self) -> int:
        """workers, with None resolved to default_workers()."""
        return default_workers() if self.workers is None else self.workers

    @property
    def selection_path(self) -> str | None:
        """Where the selection CSV is written; None without `select`."""
        if self.select is None:
            return None
        return self.select_out if self.select_out is not None else selection_path_for(self.out)

    @property
    def embeddings_path(self) -> str | None:
        """Where the embeddings go (NAME.embeddings.parquet next to `out`); None without `embeddings`."""
        if not self.embeddings:
            return None
        from ..selection.embedding_file import embeddings_path_for

        return embeddings_path_for(self.out)


DEFAULTS = {f.name: f.default for f in fields(ScoreOptions) if f.name not in ("pool", "model")}
