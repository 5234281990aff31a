"""Run an exported egal graph with onnxruntime and score its outputs, without PyTorch.

On a node with onnxruntime-gpu and a GPU, the session uses the CUDA execution
provider with IOBinding: images go in once, and logits, activations and
cam_weights stay in GPU memory as OrtValues, which egal.score_batch reads in
place through DLPack (the fused CUDA scorer). Elsewhere the CPU provider runs
and the outputs are numpy arrays, scored by the CPU scorer.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._images import check_model_images
from ..combine import DEFAULT_ALPHA
from ..errors import EgalError
from . import graph

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class GraphOutputs:
    """One batch through the graph: numpy arrays (CPU) or CUDA OrtValues (GPU)."""

    logits: Any  # [B, C]
    activations: Any  # [B, K, h, w]
    cam_weights: Any  # [B, K]
    embedding: Any = None  # [B, D] the selection embedding, when asked for (run(..., embedding=True))

    def scorer_kwargs(self) -> dict:
        return {"activations": self.activations, "logits": self.logits, "weights": self.cam_weights}


class OnnxGradCAM:
    """An exported egal model, ready to score batches of images.

        scorer = OnnxGradCAM("model.onnx")            # CUDA + IOBinding when available
        result = scorer.score(images, masks)          # egal.ScoreResult
    """

    def __init__(self, path, *, providers: Sequence[str] | None = None, device_id: int = 0, session_options=None,
                 io_binding: bool | None = None):
        """providers: onnxruntime execution providers (default: CUDA when available, else CPU).
        io_binding: run through IOBinding with outputs left on the session's device as
        OrtValues (default: on CUDA only; on CPU it exercises the same code path)."""
        import onnxruntime as ort

        if os.path.isdir(path):
            raise IsADirectoryError(f"model file {str(path)!r} is a folder: name the .onnx file in it")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file {str(path)!r} does not exist")
        self._ort = ort
        if providers is None:
            cuda = CUDA_PROVIDER in ort.get_available_providers()
            providers = [CUDA_PROVIDER, CPU_PROVIDER] if cuda else [CPU_PROVIDER]
        provider_list = provider_settings(providers, device_id)
        failed_to_load = load_cuda_libraries(ort) if CUDA_PROVIDER in providers else None
        self.session, cuda_error = _open_session(ort, path, session_options, provider_list)
        self.device_id = device_id
        self.config = _read_config(self.session, path)
        self.path = str(path)
        # Graphs exported before the selection embedding existed score as before, but cannot give it.
        self.has_embedding = graph.EMBEDDING in [o.name for o in self.session.get_outputs()]
        self.on_cuda = self.session.get_providers()[0] == CUDA_PROVIDER
        # Why a session asked to run on CUDA runs on the CPU.
        self.cuda_unavailable_reason = None
        if CUDA_PROVIDER in providers and not self.on_cuda:
            self.cuda_unavailable_reason = (
                f"onnxruntime could not start its CUDA execution provider ({cuda_error})" if cuda_error else
                "onnxruntime could not start its CUDA execution provider (no GPU, or its CUDA and cuDNN libraries "
                "are missing: pip install 'egal-al[onnx]' brings them)"
            ) + (f"; loading its libraries said: {failed_to_load}" if failed_to_load else "")
        self.io_binding = self.on_cuda if io_binding is None else bool(io_binding)
        self._device = "cuda" if self.on_cuda else "cpu"

    @property
    def classes(self):
        return tuple(self.config["classes"])

    @property
    def input_size(self):
        return tuple(self.config["input_size"])

    def run(self, images, *, embedding: bool = False) -> GraphOutputs:
        """images: [B, in_channels, H, W] float32 in [0, 1]: numpy, an OrtValue, or (CUDA) any
        __cuda_array_interface__ array already on the GPU. embedding: also return the selection embedding
        (a graph exported without it raises EgalError saying to export it again)."""
        names = list(graph.SCORING_OUTPUTS)
        if embedding:
            if not self.has_embedding:
                raise EgalError(missing_embedding_message(self.path))
            names.append(graph.EMBEDDING)
        if self.io_binding:
            return self._run_bound(images, names)
        images = self._check_images(_as_numpy(images))
        if images.shape[0] == 0:  # the exported graph cannot broadcast a batch of none: run one, keep none
            one = np.zeros((1, *images.shape[1:]), np.float32)
            return GraphOutputs(*(output[:0] for output in self.session.run(names, {graph.INPUT: one})))
        return GraphOutputs(*self.session.run(names, {graph.INPUT: images}))

    def score(self, images, masks=None, *, boxes=None, roi_size=None, roi=None, alpha: float = DEFAULT_ALPHA,
              return_cam: bool = False, backend: str = "auto"):
        """EG-AL scores (egal.ScoreResult) of a batch, ROI given as for egal.score_batch.

        On the CUDA path, host (numpy) ROIs are copied to the GPU first; pass a
        ProjectedROI already on the GPU to avoid that per batch.
        """
        import egal

        outputs = self.run(images)
        if self.on_cuda:
            masks, boxes, roi = self.to_device(masks), self.to_device(boxes), self._roi_to_device(roi)
        return egal.score_batch(**outputs.scorer_kwargs(), masks=masks, boxes=boxes, roi_size=roi_size, roi=roi,
                                alpha=alpha, return_cam=return_cam, backend=backend)

    # -- IOBinding (CUDA; CPU when asked) ----------------------------------------------------
    def _run_bound(self, images, names) -> GraphOutputs:
        ort = self._ort
        binding = self.session.io_binding()
        if isinstance(images, ort.OrtValue):
            self._check_shape(tuple(images.shape()))
            binding.bind_ortvalue_input(graph.INPUT, images)
        elif self.on_cuda and hasattr(images, "__cuda_array_interface__"):
            iface = images.__cuda_array_interface__
            if np.dtype(iface["typestr"]) != np.float32 or iface.get("strides") is not None:
                raise TypeError("GPU images must be contiguous float32")
            self._check_shape(tuple(iface["shape"]))
            binding.bind_input(graph.INPUT, "cuda", self.device_id, np.float32, list(iface["shape"]), iface["data"][0])
        else:
            # On CUDA, one host-to-device copy of the images, made by onnxruntime.
            binding.bind_cpu_input(graph.INPUT, self._check_images(_as_numpy(images)))
        for name in names:
            binding.bind_output(name, self._device, self.device_id)
        self.session.run_with_iobinding(binding)
        # OrtValue.__dlpack__ ignores the consumer's stream: make the results
        # visible before the scorer's kernels read them.
        binding.synchronize_outputs()
        return GraphOutputs(*binding.get_outputs())

    def to_device(self, array):
        if array is None or not isinstance(array, np.ndarray):
            return array  # already a device array (or absent)
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", self.device_id)

    def _roi_to_device(self, roi):
        if roi is None or not isinstance(roi.weights, np.ndarray):
            return roi
        import egal

        return egal.ProjectedROI(self.to_device(roi.weights), self.to_device(np.asarray(roi.area)), roi.roi_size)

    # -- checks -----------------------------------------------------------------------------
    def _check_images(self, images: np.ndarray) -> np.ndarray:
        """The host images as the graph takes them (contiguous float32), after the shape and pixel checks."""
        self._check_shape(images.shape)
        check_model_images(images)
        return np.ascontiguousarray(images, dtype=np.float32)

    def _check_shape(self, shape) -> None:
        expected = (self.config["in_channels"], *self.config["input_size"])
        if len(shape) != 4 or tuple(shape[1:]) != expected:
            raise ValueError(f"images must be [B, {expected[0]}, {expected[1]}, {expected[2]}] for this model, got "
                             f"{tuple(shape)}")


class OnnxModelError(EgalError):
    """A model file that cannot be scored: onnxruntime cannot load it (corrupt, truncated, not ONNX), or it is
    not an egal Grad-CAM graph."""


def provider_settings(providers: Sequence[str], device_id: int) -> list:
    """onnxruntime's providers argument: the CUDA provider on `device_id` in full float32.

    onnxruntime's CUDA provider convolves and multiplies float32 in TF32 by default (use_tf32), as cuDNN does
    for PyTorch: that moved scores by 3e-4 and reordered rows on an H100 (bench/README.md). egal's scores are
    float32 on every path (egal.gradcam.extract.full_float32 for PyTorch).
    """
    return [(p, {"device_id": device_id, "use_tf32": "0"}) if p == CUDA_PROVIDER else p for p in providers]


@functools.cache
def load_cuda_libraries(ort) -> str | None:
    """Load the CUDA and cuDNN libraries of the nvidia pip packages (onnxruntime-gpu[cuda,cudnn]) into this
    process, once, so that onnxruntime's CUDA provider finds them without LD_LIBRARY_PATH. Returns what
    onnxruntime printed about the ones that failed to load, or None.

    Not done after `import torch`, which has loaded its own (the same major versions; a second copy could
    clash), nor with an onnxruntime older than preload_dlls (1.21).
    """
    if sys.modules.get("torch") is not None or not hasattr(ort, "preload_dlls"):
        return None
    said = io.StringIO()  # preload_dlls prints its failures: they belong in egal's error, not on stdout
    with contextlib.redirect_stdout(said):
        try:
            ort.preload_dlls()
        except Exception as exc:  # e.g. RuntimeError for a missing folder: the session start will tell
            print(f"{type(exc).__name__}: {exc}")
    return " ".join(said.getvalue().split()) or None


def _open_session(ort, path, session_options, providers):
    """(onnxruntime session, why the CUDA provider could not start or None).

    A CUDA provider that fails to start would make onnxruntime print its error to stdout and retry on the CPU:
    egal asks it not to fall back, keeps the error, and opens the CPU session itself.
    """
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    # What onnxruntime raises for a file that is not a loadable model; other failures (an
    # execution provider that cannot start, say) keep their own exception.
    unloadable = tuple(getattr(state, name)
                       for name in ("InvalidProtobuf", "InvalidArgument", "InvalidGraph", "NoModel", "Fail",
                                    "NotImplemented")
                       if hasattr(state, name))
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    try:
        if CUDA_PROVIDER not in names:
            return ort.InferenceSession(str(path), sess_options=session_options, providers=providers), None
        try:
            return ort.InferenceSession(str(path), sess_options=session_options, providers=providers,
                                        enable_fallback=0), None
        except unloadable:
            raise
        except (RuntimeError, ValueError) as exc:
            cuda_error = " ".join(str(exc).split()) or type(exc).__name__
        others = [p for p, name in zip(providers, names, strict=True) if name != CUDA_PROVIDER] or [CPU_PROVIDER]
        return ort.InferenceSession(str(path), sess_options=session_options, providers=others), cuda_error
    except unloadable as exc:
        reason = onnxruntime_reason(exc)
        if "IR version" in reason or "opset" in reason.lower():
            raise OnnxModelError(
                f"model file {str(path)!r} cannot be loaded by onnxruntime {ort.__version__} ({reason}): it was "
                f"written for a newer onnxruntime; export it again with egal's defaults (`egal export --model "
                f"model.pt --out model.onnx`: IR version {graph.IR_VERSION}, opset {graph.OPSET}), or upgrade "
                "onnxruntime") from None
        raise OnnxModelError(
            f"model file {str(path)!r} cannot be loaded by onnxruntime ({reason}): a truncated or partly copied file, "
            "or not an ONNX graph; copy it again, or export it again with `egal export --model model.pt --out "
            "model.onnx`") from None


def onnxruntime_reason(exc) -> str:
    """What onnxruntime says is wrong, without the C++ source location and signature it puts first."""
    reason = str(exc).split(" failed:", 1)[-1].strip()
    reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", reason)
    return re.sub(r"/\S+\.(?:cc|cpp|h):\d+ .*?\) (?=[A-Z])", "", reason).strip() or type(exc).__name__


def _as_numpy(images) -> np.ndarray:
    if isinstance(images, np.ndarray):
        return images
    if hasattr(images, "__dlpack__") and getattr(images, "__dlpack_device__", lambda: (1, 0))()[0] == 1:
        return np.from_dlpack(images)  # a CPU array from any framework, without a copy
    return np.asarray(images)


def missing_embedding_message(path) -> str:
    return (f"model file {str(path)!r} was exported without the selection embedding (by an egal export before "
            "2026-12): it scores as before, but cannot give the embeddings that embeddings=True (--embeddings) "
            "writes; export it again (`egal export --model model.pt --out model.onnx`) or score the .pt model")


def _read_config(session, path) -> dict:
    meta = session.get_modelmeta().custom_metadata_map
    version = meta.get(graph.FORMAT_KEY)
    if version not in (graph.FORMAT, graph.FORMAT_BEFORE_PROTOTYPE_FIX) or graph.CONFIG_KEY not in meta:
        raise OnnxModelError(f"{path!s} is not an egal Grad-CAM graph (export it with `egal export`); metadata "
                             f"{sorted(meta)}")
    names_in = [i.name for i in session.get_inputs()]
    names_out = [o.name for o in session.get_outputs()]
    if names_in != [graph.INPUT] or sorted(names_out) not in (sorted(graph.OUTPUTS), sorted(graph.SCORING_OUTPUTS)):
        raise OnnxModelError(f"{path!s} has inputs {names_in} and outputs {names_out}; expected "
                             f"[{graph.INPUT!r}] and {list(graph.OUTPUTS)}")
    try:
        config = json.loads(meta[graph.CONFIG_KEY])
    except ValueError as exc:
        config = exc
    if not isinstance(config, dict):
        raise OnnxModelError(f"{path!s}: its embedded model config ({graph.CONFIG_KEY}) is damaged "
                             f"({config if isinstance(config, ValueError) else type(config).__name__}); export it "
                             "again (`egal export --model model.pt --out model.onnx`)")
    if version == graph.FORMAT_BEFORE_PROTOTYPE_FIX and config.get("head") == "prototypical":
        raise OnnxModelError(f"{path!s} was exported before 2026-11-27: its Grad-CAM weights are those of the "
                             "prototypical head's old gradient, which leaves most maps all zero; export it again "
                             "(`egal export --model model.pt --out model.onnx`) or score the .pt model")
    missing = [k for k in ("classes", "input_size", "in_channels") if k not in config]
    if missing:
        raise OnnxModelError(f"{path!s}: the embedded model config lacks {missing}")
    _check_input(session.get_inputs()[0], config, path)
    return config


def _check_input(declared, config: dict, path) -> None:
    """The graph takes what egal feeds it: float32 [batch of any size, in_channels, H, W] as its config says. A
    graph edited after export (a batch size fixed by a shape tool, another input size or dtype) would fail in
    onnxruntime at the first batch that differs, after the batches before it were scored."""
    try:
        expected = [int(config["in_channels"]), *(int(v) for v in config["input_size"])]
    except (TypeError, ValueError):
        expected = None
    shape = list(declared.shape)
    fixed = lambda dim: isinstance(dim, int) and dim > 0  # noqa: E731  (a name or None: any size)
    problem = None
    if declared.type != "tensor(float)":
        problem = f"its input {graph.INPUT!r} is {declared.type}, not tensor(float) (float32)"
    elif expected is None or len(expected) != 3:
        problem = f"its embedded model config has in_channels {config['in_channels']!r} and input_size " \
                  f"{config['input_size']!r}, not a channel count and (H, W)"
    elif len(shape) != 4:
        problem = f"its input {graph.INPUT!r} has {len(shape)} dimensions {shape}, not [batch, C, H, W]"
    elif fixed(shape[0]):
        problem = (f"its input {graph.INPUT!r} takes batches of exactly {shape[0]} images (a fixed batch axis), but "
                   "egal feeds batches of any size (the last one is smaller), as `egal export` graphs take them")
    elif any(fixed(dim) and dim != want for dim, want in zip(shape[1:], expected, strict=True)):
        problem = (f"its input {graph.INPUT!r} is {shape}, but its embedded config says images are "
                   f"[batch, {expected[0]}, {expected[1]}, {expected[2]}]")
    if problem:
        raise OnnxModelError(f"{path!s} cannot be scored: {problem}; export it again with `egal export --model "
                             "model.pt --out model.onnx`")
