"""Which runtime runs the model of an `egal score` run: PyTorch or onnxruntime (`runtime=`, `--runtime`).

    auto         (the default) a `.pt` model is exported once to ONNX (egal.onnx.cache: kept beside the
                 model, keyed by its content), the graph's scores are checked against PyTorch's on the
                 pool's first batch, and onnxruntime scores the pool: on the CPU it runs these models
                 faster than PyTorch (bench/README.md). PyTorch scores instead, with a one-line notice,
                 when onnxruntime or the exporter (egal-al[export]) is not installed, when the model
                 has no closed-form Grad-CAM (an ONNX graph has no backward pass), when no folder can
                 hold the graph, or when the graph's scores differ from PyTorch's by more than
                 PARITY_ATOL (a warning gives the difference; an intact graph, one that matches the
                 checksum written with it, is not exported again for that). A resumed run keeps the
                 runtime it was scored with (egal.pipeline.scoring_job). On a CUDA device both runtimes score
                 the first batch CUDA_TIMING_ROUNDS times more, in turn, and the one with the faster
                 fastest round scores the pool;
                 there, an onnxruntime without its CUDA provider (the CPU-only wheel) means PyTorch, with
                 nothing exported;
                 with Ray actors on GPUs (engine "ray", device "cuda"), which cannot be timed from the
                 driver, auto keeps PyTorch.
                 An `.onnx` model runs with onnxruntime.
    torch        PyTorch, always (a `.pt` model only).
    onnxruntime  onnxruntime, always: a `.pt` model is exported (cached) and checked as for auto, and
                 an error names what is missing where auto would fall back.

This module imports nothing heavy: egal.pipeline.options reads RUNTIMES from it.
"""
from __future__ import annotations

import importlib.util
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from .._checks import check_choice
from ..errors import EgalError

RUNTIMES = ("auto", "torch", "onnxruntime")
# How many times each runtime scores the first batch again on a CUDA device, its fastest round counting: the
# rounds after the first both runtimes' warm-up (cuDNN's and onnxruntime's algorithm searches, memory arenas).
CUDA_TIMING_ROUNDS = 3

# How far onnxruntime's score, entropy_norm and misalignment may be from PyTorch's on the first batch
# (absolute; all three lie in [0, 1]). Both run the same float32 arithmetic in another order (onnxruntime
# fuses convolutions with their BatchNorm and activation): measured differences are 1e-7 to 1e-5
# (tests/test_score_runtime.py, bench/README.md). A graph beyond this is wrong, not reordered.
PARITY_ATOL = 1e-4


class RuntimeMismatchWarning(UserWarning):
    """The exported graph's scores differ from PyTorch's: the pool is scored with PyTorch instead."""


@dataclass(frozen=True)
class RuntimeChoice:
    """What scores a run, and why.

    runner:     the egal.pipeline.model_runner.ModelRunner that scores the pool
    runtime:    "torch" or "onnxruntime"
    requested:  the runtime asked for ("auto", "torch" or "onnxruntime")
    note:       one line: why this runtime, and what choosing it cost (export, check)
    difference: the largest |onnxruntime - PyTorch| over score, entropy_norm and misalignment on the
                first batch, when both ran; else None
    warning:    why auto fell back to PyTorch when the graph's scores differ from PyTorch's; else None
    """

    runner: object
    runtime: str
    requested: str
    note: str
    difference: float | None = None
    warning: str | None = None

    def announce(self, log: Callable, progress: bool) -> None:
        """The choice on the run's log; a mismatch also as a RuntimeMismatchWarning when the run is quiet."""
        if progress:  # a warning says what the note would, and which runtime scores
            log(f"warning: {self.warning}" if self.warning else f"runtime: {self.note}")
        elif self.warning:
            warnings.warn(self.warning, RuntimeMismatchWarning, stacklevel=3)


def choose_runtime(runner, *, requested: str, model_sha256: str, spec, batch_size: int, alpha: float,
                   load: Callable, on_cuda: bool = False, gpus_elsewhere: bool = False,
                   graph_beside_model: bool = False, log: Callable = print) -> RuntimeChoice:
    """The runtime that scores a run, given the model file loaded as it is (`runner`).

    spec, batch_size: the pool (egal.pool.PoolSpec) and the run's batch size: the two runtimes are compared
                      on its first batch
    load:             (path) -> ModelRunner of an ONNX graph, loaded like `runner` (device, embeddings)
    on_cuda:          the run is on a CUDA device here: pick the faster runtime there
    gpus_elsewhere:   the model runs on GPUs of other machines (Ray actors), which cannot be timed from here:
                      auto keeps PyTorch
    graph_beside_model: the graph is read where the model is (Ray actors of a cluster elsewhere): one that
                      only the user cache folder of this machine can hold is of no use to them
    log:              where progress lines go (the export can take a minute for a large model)
    """
    check_choice(requested, "runtime", RUNTIMES)
    if runner.kind == "onnx":
        if requested == "torch":
            raise EgalError(f"runtime='torch' (--runtime torch) needs a PyTorch model (.pt); {runner.path!r} is an "
                            "ONNX graph, which only onnxruntime runs: use runtime='auto' or 'onnxruntime'")
        return RuntimeChoice(runner, "onnxruntime", requested, "onnxruntime (the model is an ONNX graph)")
    if requested == "torch":
        return RuntimeChoice(runner, "torch", requested, "PyTorch (runtime='torch')")
    if requested == "auto" and gpus_elsewhere:
        return RuntimeChoice(runner, "torch", requested, "PyTorch (auto: the Ray actors' GPUs cannot be timed from "
                             "here; runtime='onnxruntime' exports the model for them)")
    batch = _FirstBatch(spec, batch_size, runner.input_size, runner.in_channels)
    return _OnnxFromTorch(runner, requested, model_sha256, batch, alpha, load, on_cuda, log,
                          graph_beside_model).choose()


def missing_for_export() -> str | None:
    """What keeps a `.pt` model's onnxruntime path from running here, naming the extra to install, or None."""
    for extra, names in (("onnx-cpu", ("onnxruntime",)), ("export", ("onnx", "onnxscript"))):
        what = "onnxruntime" if extra == "onnx-cpu" else "the ONNX exporter"
        for name in names:
            try:
                if importlib.util.find_spec(name) is None:
                    return f"{what} is not installed (pip install 'egal-al[{extra}]')"
            except (ImportError, ValueError) as exc:
                return f"{what} cannot be found ({type(exc).__name__}: {exc})"
    try:
        import onnxruntime  # noqa: F401  (found but broken, e.g. a missing shared library: said now, not mid-export)
    except Exception as exc:
        return f"onnxruntime cannot be imported ({type(exc).__name__}: {exc})"
    return None


class _Unusable(Exception):
    """The onnxruntime path cannot be taken; the message says why."""


@dataclass
class _OnnxFromTorch:
    """auto / onnxruntime with a `.pt` model: the cached graph, checked against PyTorch."""

    torch_runner: object
    requested: str
    model_sha256: str
    first_batch: Callable
    alpha: float
    load: Callable
    on_cuda: bool
    log: Callable
    graph_beside_model: bool = False

    def choose(self) -> RuntimeChoice:
        missing = missing_for_export()
        if missing is not None:
            return self._torch_or_raise(missing)
        if self.on_cuda:
            from .model_runner import NO_CUDA_PROVIDER, onnxruntime_lacks_cuda

            if onnxruntime_lacks_cuda():  # said before the export, which would be of no use
                return self._torch_or_raise(f"on the GPU: {NO_CUDA_PROVIDER}")
        try:
            onnx_runner, how, difference = self._checked_graph()
            self._check_reachable(onnx_runner.path)
        except _Unusable as exc:
            return self._torch_or_raise(str(exc))
        if difference > PARITY_ATOL:
            message = (f"onnxruntime's scores differ from PyTorch's by up to {difference:.2e} on the first batch "
                       f"(tolerance {PARITY_ATOL:g})")
            if self.requested == "onnxruntime":
                raise EgalError(f"runtime='onnxruntime' (--runtime onnxruntime): {message}; score with "
                                "runtime='torch' (--runtime torch)")
            return RuntimeChoice(self.torch_runner, "torch", self.requested, f"PyTorch (auto: {message})", difference,
                                 warning=f"{message}: the pool is scored with PyTorch")
        how = f"{how}; first batch within {difference:.1e} of PyTorch (tolerance {PARITY_ATOL:g})"
        if self.on_cuda and self.requested == "auto":
            return self._faster_on_cuda(onnx_runner, how, difference)
        return RuntimeChoice(onnx_runner, "onnxruntime", self.requested, f"onnxruntime ({how})", difference)

    def _checked_graph(self):
        """(ONNX runner, how it was obtained, difference to PyTorch on the first batch).

        A cached graph is used when it matches the checksum written with it; one that does not (a damaged
        file) is exported again, never trusted. An intact graph that onnxruntime cannot run, or whose scores
        differ from PyTorch's, is not exported again: a new export would be the same file."""
        from ..onnx.cache import find_cached, unverified_cached
        from ..onnx.runner import OnnxModelError

        path = find_cached(self.torch_runner.path, self.model_sha256)
        if path is not None:
            try:
                onnx_runner = self._load(path)
            except OnnxModelError as exc:  # written by another egal, say: what this one exports is needed
                self.log(f"runtime: the cached graph {path} cannot be used ({exc}); exporting it again")
            else:
                return onnx_runner, f"cached graph {path}", self._difference(onnx_runner)
        else:
            damaged = unverified_cached(self.torch_runner.path, self.model_sha256)
            if damaged:
                self.log(f"runtime: the cached graph {damaged[0]} does not match the checksum written with it "
                         "(damaged, or from an egal before checksums); exporting it again")
            else:
                self.log(f"runtime: exporting {self.torch_runner.path} to ONNX for onnxruntime (once per model "
                         "file)")
        onnx_runner, how = self._export()
        return onnx_runner, how, self._difference(onnx_runner)

    def _check_reachable(self, graph_path: str) -> None:
        model_folder = os.path.dirname(os.path.abspath(self.torch_runner.path))
        if self.graph_beside_model and os.path.dirname(os.path.abspath(graph_path)) != model_folder:
            raise _Unusable(f"the graph is in {os.path.dirname(graph_path)!r}, on this machine only, where Ray "
                            f"actors elsewhere cannot read it (the model's folder {model_folder!r} is read-only; "
                            "`egal export` a graph beside the model, or score it with runtime='torch')")

    def _load(self, path):
        """The ONNX runner of `path`; onnxruntime's failures other than an unloadable file make the path
        unusable (a CUDA provider that cannot start, say)."""
        from ..onnx.runner import OnnxModelError

        try:
            return self.load(path)
        except OnnxModelError:
            raise
        except (EgalError, OSError, RuntimeError) as exc:
            raise _Unusable(f"onnxruntime cannot run the graph {path} ({exc})") from exc

    def _export(self):
        from ..onnx.cache import GraphCacheError, export_to_cache
        from ..onnx.runner import OnnxModelError

        try:
            cached = export_to_cache(self.torch_runner.path, self.model_sha256)
        except GraphCacheError as exc:
            raise _Unusable(str(exc)) from exc
        except Exception as exc:  # ExportError (no closed form), an operator the exporter cannot write
            raise _Unusable(f"the model cannot be exported to ONNX ({type(exc).__name__}: {exc})") from exc
        try:
            onnx_runner = self._load(cached.path)
        except OnnxModelError as exc:
            raise _Unusable(f"onnxruntime cannot load the graph just exported to {cached.path} ({exc})") from exc
        return onnx_runner, f"graph exported in {cached.seconds:.1f} s to {cached.path}"

    def _difference(self, onnx_runner) -> float:
        """Largest |onnxruntime - PyTorch| over the first batch's score, entropy_norm and misalignment."""
        import numpy as np

        from .batch_scoring import score_decoded_batch

        batch = self.first_batch()
        try:
            onnx_table = score_decoded_batch(batch, onnx_runner, alpha=self.alpha)
        except Exception as exc:
            raise _Unusable(f"onnxruntime failed on the first batch ({type(exc).__name__}: {exc})") from exc
        tables = (score_decoded_batch(batch, self.torch_runner, alpha=self.alpha), onnx_table)
        if tables[0].column("status").to_pylist() != tables[1].column("status").to_pylist():
            return float("inf")  # a row scored by one runtime and in error with the other
        worst = 0.0
        for name in ("score", "entropy_norm", "misalignment"):
            a, b = (t.column(name).to_numpy(zero_copy_only=False) for t in tables)
            if not np.array_equal(np.isnan(a), np.isnan(b)):
                return float("inf")
            both = ~np.isnan(a)
            if both.any():
                worst = max(worst, float(np.max(np.abs(a[both] - b[both]))))
        return worst

    def _faster_on_cuda(self, onnx_runner, how: str, difference: float) -> RuntimeChoice:
        """Score the first batch CUDA_TIMING_ROUNDS times more with each, in turn, and keep the one whose fastest
        round is faster. One round each was not enough: on an H200 (2026-11-28) onnxruntime's second batch of
        DenseNet-121 still took 0.105 s, slower than the 1,385 rows/s (0.092 s a batch of 128) it then scored
        the pool at, and auto kept PyTorch, the slower there (bench/README.md)."""
        from .batch_scoring import score_decoded_batch

        batch = self.first_batch()
        seconds = {"torch": float("inf"), "onnxruntime": float("inf")}
        for _ in range(CUDA_TIMING_ROUNDS):
            for name, runner in (("torch", self.torch_runner), ("onnxruntime", onnx_runner)):
                start = time.perf_counter()
                score_decoded_batch(batch, runner, alpha=self.alpha)  # returns host numbers: the GPU work is done
                seconds[name] = min(seconds[name], time.perf_counter() - start)
        timing = (f"first batch on the GPU in {seconds['torch']:.3f} s with PyTorch, {seconds['onnxruntime']:.3f} s "
                  f"with onnxruntime, the fastest of {CUDA_TIMING_ROUNDS} rounds each")
        if seconds["torch"] < seconds["onnxruntime"]:
            return RuntimeChoice(self.torch_runner, "torch", self.requested, f"PyTorch (auto: {timing})", difference)
        return RuntimeChoice(onnx_runner, "onnxruntime", self.requested, f"onnxruntime ({how}; {timing})", difference)

    def _torch_or_raise(self, reason: str) -> RuntimeChoice:
        if self.requested == "onnxruntime":
            raise EgalError(f"runtime='onnxruntime' (--runtime onnxruntime) with a PyTorch model: {reason}")
        return RuntimeChoice(self.torch_runner, "torch", self.requested, f"PyTorch (auto: {reason})")


class _FirstBatch:
    """The pool's first batch, decoded once when first asked for. A first batch without a single decodable row
    gives no comparison, so a synthetic batch (seeded noise, a centred square ROI) stands in for it."""

    def __init__(self, spec, batch_size: int, input_size, in_channels: int):
        self._args = (spec, batch_size, tuple(input_size), in_channels)
        self._batch = None

    def __call__(self):
        if self._batch is None:
            self._batch = self._decode()
        return self._batch

    def _decode(self):
        import numpy as np

        from ..pool import DecodedBatch, DecodeSettings, decode_batch

        spec, batch_size, (height, width), in_channels = self._args
        raw = next(iter(spec.iter_batches(batch_size)), None)
        if raw is not None:
            decoded = decode_batch(raw, DecodeSettings(input_size=(height, width), in_channels=in_channels))
            if decoded.ok.any():
                return decoded
        n = min(batch_size, 8)
        images = np.random.default_rng(0).random((n, in_channels, height, width), dtype=np.float32)
        masks = np.zeros((n, height, width), dtype=np.uint8)
        masks[:, height // 4:3 * height // 4, width // 4:3 * width // 4] = 1
        return DecodedBatch(index=0, start_row=0, ids=[f"synthetic_{i}" for i in range(n)], images=images,
                            masks=masks, has_roi=np.ones(n, dtype=bool), errors=[None] * n, rows=list(range(n)))
