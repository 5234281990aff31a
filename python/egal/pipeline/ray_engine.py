"""Scoring a pool on a Ray cluster with Ray Data.

    read_parquet(pool files) -> map_batches(PoolScorer actors: decode, model, fused scorer)
    -> the scored rows stream back to the driver (progress) -> one shard in the parts folder
    -> the same merge and ranking as the local engine

Each actor loads the model once and scores batches exactly as the local engine
does (batch_scoring.score_decoded_batch), so scores and selection agree with
`--engine local`. With `--device cuda` every actor asks Ray for one GPU.
Point it at a cluster with --ray-address (or RAY_ADDRESS); the pool and the
model must then be readable at the same paths on every node (shared storage).
Ray's own output (its logging, its core worker's, Ray Data's progress bars) goes to
a log file next to the output, unless --verbose: the terminal shows egal's lines.
A Ray instance that egal starts itself keeps its session files in a private folder, removed
when it stops (private_session_folder).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa

from ..errors import EgalError
from .batch_scoring import output_schema


class PoolScorer:
    """A Ray Data actor: the model is loaded once per actor, then batches stream through."""

    def __init__(self, model_path: str, device: str, alpha: float, image_column: str, roi_column,
                 embeddings: bool = False):
        from ..pool import DecodeSettings
        from .model_runner import load_runner

        self.runner = load_runner(model_path, device, embeddings=embeddings)
        self.embeddings = embeddings
        self.settings = DecodeSettings(input_size=self.runner.input_size, in_channels=self.runner.in_channels)
        self.alpha = alpha
        self.image_column = image_column
        self.roi_column = roi_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ..pool import RawBatch, decode_batch
        from .batch_scoring import score_decoded_batch

        roi = batch.column(self.roi_column).to_pylist() if self.roi_column else [None] * batch.num_rows
        raw = RawBatch(
            index=0, start_row=0, ids=batch.column("id").to_pylist(),
            images=batch.column(self.image_column).to_pylist(), image_is_path=self.image_column == "image_path",
            rois=roi, roi_kind=self.roi_column,
            base_dirs=[os.path.dirname(p) for p in batch.column("path").to_pylist()], extra={},
        )
        return score_decoded_batch(decode_batch(raw, self.settings), self.runner, alpha=self.alpha,
                                   embeddings=self.embeddings)


def check_reachable(address, seconds: float = 10.0) -> None:
    """A cluster address HOST:PORT (or ray://HOST:PORT) that nothing answers on is named at once: ray.init
    would retry it for minutes, silently."""
    if not address or address in ("auto", "local"):
        return
    host_port = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return  # a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise EgalError(f"cannot reach the Ray cluster at {address!r} (--ray-address): nothing answers on "
                        f"{host}:{port} ({exc.strerror or exc}); check the address and that the cluster is "
                        "up") from None


def score_pool_on_ray(spec, model_path, store, *, alpha: float, batch_size: int, device: str, address,
                      actors: int, progress, log_path=None, embedding_dim: int | None = None) -> None:
    """log_path: a file that takes everything Ray prints (its logging, its C++ core worker's, Ray
    Data's progress bars) for the whole Ray part, so that only egal's own lines reach the terminal;
    None shows Ray's output as it comes (--verbose). embedding_dim: also keep each row's selection
    embedding, of that size (egal score --embeddings)."""
    if store.completed_batches():
        return  # a resumed run whose Ray output was already collected
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    with ray_output_to(log_path), private_session_folder(address is None and not ray.is_initialized()) as temp_dir:
        started_here = False
        if not ray.is_initialized():
            try:
                with sigterm_handler_kept():
                    ray.init(address=address, log_to_driver=log_path is None, logging_level=logging.WARNING,
                             include_dashboard=False if address is None else None,
                             **({"_temp_dir": temp_dir} if temp_dir else {}))
            except ConnectionError as exc:
                raise EgalError(
                    f"cannot join the Ray cluster at {address!r} ({exc}); check the address, and for a "
                    "token-authenticated cluster set RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
                ) from exc
            started_here = True
        try:
            _score(ray, spec, model_path, store, alpha=alpha, batch_size=batch_size, device=device, actors=actors,
                   progress=progress, quiet=log_path is not None, embedding_dim=embedding_dim)
        finally:
            if started_here:
                ray.shutdown()  # here, while its farewell lines still go to the log


@contextlib.contextmanager
def private_session_folder(starting_ray: bool):
    """The folder for the session files of a Ray instance that egal starts itself (starting_ray), removed when the
    block ends; None when Ray is joined, not started, or RAY_TMPDIR chooses the folder.

    Ray's default, /tmp/ray, is readable and writable by every user of the machine (Ray makes it so, for shared
    clusters), and Ray never removes a session: its logs name the pool's files, and each run left one session
    (about 1 MB) behind. This folder is made by mkdtemp (owner-only), and Ray's own folder, which
    Ray opens to everyone, goes inside it."""
    if not starting_ray or "RAY_TMPDIR" in os.environ:
        yield None
        return
    base = tempfile.gettempdir()
    if len(base) + len(_LONGEST_SOCKET_UNDER_BASE) > _UNIX_SOCKET_PATH_MAX:
        base = "/tmp"  # a long TMPDIR: Ray's sockets would not fit in a socket address there
    owner_only = tempfile.mkdtemp(prefix="egal-", dir=base)
    try:
        yield os.path.join(owner_only, "r")
    finally:
        shutil.rmtree(owner_only, ignore_errors=True)


# Ray puts its sockets in the session folder; a Unix socket's path has at most 107 bytes on Linux.
_UNIX_SOCKET_PATH_MAX = 107
_LONGEST_SOCKET_UNDER_BASE = "/egal-xxxxxxxx/r/session_2026-11-28_13-43-34_892713_4194304/sockets/plasma_store"


@contextlib.contextmanager
def sigterm_handler_kept():
    """ray.init replaces the SIGTERM handler with one that exits with status 15 at once: egal's own (egal.cli:
    stop like Ctrl-C, exit 143, say what is kept) is put back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _score(ray, spec, model_path, store, *, alpha, batch_size, device, actors, progress, quiet,
           embedding_dim=None) -> None:
    if device == "cpu":
        # Each actor holds a CPU for its lifetime; reading Parquet needs one too, or the job
        # waits forever for a free CPU.
        actors = max(1, min(actors, int(ray.cluster_resources().get("CPU", 2)) - 1))
    if quiet:
        ray.data.DataContext.get_current().enable_progress_bars = False  # egal's own progress shows instead
    _import_fsspec_http_once()
    columns = ["id", spec.image_column] + ([spec.roi_column] if spec.roi_column else [])
    dataset = ray.data.read_parquet([os.path.abspath(f) for f in spec.files], columns=columns, include_paths=True)
    scored = dataset.map_batches(
        PoolScorer,
        fn_constructor_kwargs=dict(model_path=os.path.abspath(model_path), device=device, alpha=alpha,
                                   image_column=spec.image_column, roi_column=spec.roi_column,
                                   embeddings=embedding_dim is not None),
        batch_size=batch_size, batch_format="pyarrow", concurrency=max(1, actors),
        num_gpus=1 if device == "cuda" else 0,
    )
    # The scored rows (a few numbers and strings each) stream back to this process as they are
    # done, which is what the progress display counts.
    pieces = []
    for piece in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        pieces.append(piece)
        progress.update(piece.num_rows, errors=piece.num_rows - piece.column("status").to_pylist().count("ok"))
    schema = output_schema(embedding_dim)
    table = _in_pool_order(pa.concat_tables(pieces) if pieces else schema.empty_table(), spec)
    store.write_shard(0, table.cast(schema))  # the whole pool as one shard; then the usual merge


@contextlib.contextmanager
def ray_output_to(log_path):
    """Send this process's file descriptors 1 and 2 to `log_path` (appended to) while Ray runs;
    None: leave them alone. Python's sys.stdout / sys.stderr write to those descriptors too, so
    egal writes its own lines to a duplicate of the original stderr (see ScoringJob)."""
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "ab") as log:
        log.write(f"\n==== egal score, Ray engine, {time.strftime('%Y-%m-%d %H:%M:%S')} (pid {os.getpid()})\n".encode())
        log.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _in_pool_order(table: pa.Table, spec) -> pa.Table:
    """Ray returns rows in any order: give each its position in the pool (ids are unique)."""
    position = {name: i for i, name in enumerate(_pool_ids(spec))}
    rows = np.array([position[name] for name in table.column("id").to_pylist()], dtype=np.int64)
    table = table.set_column(table.column_names.index("row"), "row", pa.array(rows))
    return table.sort_by("row")


def _import_fsspec_http_once() -> None:
    """Ray Data lists files from several threads, each importing fsspec's HTTP filesystem;
    importing it once here first keeps those threads from racing on a half-imported module."""
    try:
        import fsspec.implementations.http  # noqa: F401
    except ImportError:
        pass  # without aiohttp: pip install "egal-al[ray]" brings it


def _pool_ids(spec):
    return spec.column_values("id")
