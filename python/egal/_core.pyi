"""Type stubs of egal's compiled scorer, `egal._core` (cpp/bindings/module.cpp).

Private: call `egal.score_batch`, `egal.project_roi` and `egal.backends`, which check shapes,
dtypes and devices first; the core assumes checked inputs. Every array argument is a DLPack
capsule (`egal._dlpack.capsule` makes them), or None where the argument is optional; the core
reads it in place and never writes it. Outputs are new host numpy arrays.

Shapes: B samples, K channels, h x w the Grad-CAM grid, C classes, H x W the ROI grid, N boxes.
"""

from typing import Any, Literal, TypedDict

import numpy as np
from numpy.typing import NDArray

# A PyCapsule named "dltensor" holding an unconsumed DLManagedTensor (types.CapsuleType from Python 3.13 on).
_Capsule = Any

class _ScoreOutputs(TypedDict):
    pred: NDArray[np.int64]  # [B] argmax of the logits (ties: lowest index)
    entropy: NDArray[np.float32]  # [B] softmax entropy in nats
    entropy_norm: NDArray[np.float32]  # [B] entropy / log(C)
    misalignment: NDArray[np.float32]  # [B] soft Dice distance; NaN for an empty ROI
    score: NDArray[np.float32]  # [B] the acquisition score; NaN for a sample with non-finite inputs
    cam: NDArray[np.float32] | None  # [B, h, w] normalised Grad-CAM map, when return_cam
    status: NDArray[np.int32]  # [B] bits: 1 non-finite activations / weights / logits, 2 a mask value outside [0, 1]

class _CpuBackend(TypedDict):
    compiled: bool  # always True
    available: bool  # always True
    threads: int  # OpenMP threads the CPU backend uses
    isa: Literal["baseline", "avx2", "avx512"]  # vector instruction set of the CPU kernels (cpu_isa())

class _CudaBackend(TypedDict):
    compiled: bool  # the CUDA backend was built in
    devices: int  # usable CUDA devices now
    available: bool  # devices > 0
    reason: str | None  # why not available; None when available
    roi_pass: Literal["projection", "per-pixel", "vector-projection"]  # how CUDA reads masks and boxes
    map_pass: Literal["cell-blocks", "channel-warps", "channel-tiles"]  # how it computes maps (cuda_map_pass())
    default_roi_pass: str  # the ROI pass a process starts with
    default_map_pass: str  # the map pass a process starts with

class _Backends(TypedDict):
    cpu: _CpuBackend
    cuda: _CudaBackend

STATUS_NON_FINITE: int  # status bit: NaN/Inf in a sample's activations, weights or logits
STATUS_BAD_MASK: int  # status bit: a mask value outside [0, 1]

def describe(capsule: _Capsule, name: str) -> tuple[tuple[int, ...], str, str, int]:
    """(shape, dtype name, device name, device id) of a DLPack capsule, without consuming it; ValueError naming
    the argument `name` for a tensor the kernels cannot read (a negative extent, elements without data).

    dtype names: float32, float16, bfloat16, uint8, bool, or e.g. "int64" for unsupported ones;
    device names: cpu, cuda, cuda_host, cuda_managed, rocm, mps, or "deviceN".
    """

def score(
    activations: _Capsule,  # [B, K, h, w] float32 / float16 / bfloat16
    gradients: _Capsule | None,  # [B, K, h, w] same dtype as activations; or None when weights are given
    weights: _Capsule | None,  # [B, K] Grad-CAM channel weights; or None when gradients are given
    logits: _Capsule,  # [B, C] float32 / float16
    roi_kind: Literal["masks", "boxes", "projected"],  # which of masks / boxes / roi_weights is given
    masks: _Capsule | None,  # [B, H, W] bool / uint8 (0/1) / float16 / float32 in [0, 1]
    boxes: _Capsule | None,  # [B, N, 4] float32 (x0, y0, x1, y1) in pixels of H x W, NaN rows are padding
    roi_weights: _Capsule | None,  # [B, h, w] float32, a ProjectedROI's weights
    roi_area: _Capsule | None,  # [B] float32, a ProjectedROI's area
    roi_height: int,  # H
    roi_width: int,  # W
    alpha: float,  # weight of entropy_norm; 1 - alpha weighs misalignment
    return_cam: bool,
) -> _ScoreOutputs:
    """The fused score of docs/scoring.md for one batch, on the device of the inputs (the GIL released);
    ValueError for a roi_kind other than the three."""

def project(
    masks: _Capsule | None,  # [B, H, W] host bool / uint8 (0/1) / float16 / float32 in [0, 1]; None with boxes
    boxes: _Capsule | None,  # [B, N, 4] host float32, NaN-padded; or None when masks are given
    roi_height: int,  # H
    roi_width: int,  # W
    cam_height: int,  # h
    cam_width: int,  # w
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int32]]:
    """The ROI area-averaged onto the h x w Grad-CAM grid: (weights [B, h, w], area [B], status [B]);
    status bit 2 marks a mask value outside [0, 1]."""

def borrow(
    owner: object,  # kept alive until the consumer releases the capsule
    data: int,  # address of the first element
    shape: list[int],
    strides: list[int] | None,  # in elements; None for C-contiguous
    code: int,  # DLPack type code (0 int, 1 uint, 2 float, 4 bfloat, 6 bool)
    bits: int,
    device_type: int,  # DLPack device type (1 CPU, 2 CUDA)
    device_id: int,
) -> _Capsule:
    """A DLPack capsule over memory `owner` holds (an onnxruntime OrtValue, a read-only numpy array), no copy."""

def backends() -> _Backends:
    """What the compiled core can run here: {"cpu": {...}, "cuda": {...}}."""

def cpu_isa() -> Literal["baseline", "avx2", "avx512"]:
    """The vector instruction set the CPU kernels use now (the best the CPU has, unless set_cpu_isa chose another)."""

def best_cpu_isa() -> Literal["baseline", "avx2", "avx512"]:
    """The widest vector instruction set of this CPU that the kernels were compiled for."""

def set_cpu_isa(name: Literal["baseline", "avx2", "avx512"]) -> None:
    """For tests and benchmarks: run the CPU kernels with `name` from the next call on, in every thread.
    ValueError for an unknown name or one this CPU lacks."""

def cuda_roi_pass() -> Literal["projection", "per-pixel", "vector-projection"]:
    """How the CUDA backend reads masks and boxes: "projection" (the default: each ROI projected onto the map's grid
    in a pass whose cost the ROI's content does not change), "per-pixel" (the map upsampled at each ROI pixel) or
    "vector-projection" (the projection with four mask columns a thread: faster with masks at large B, slower with
    boxes, so not the default)."""

def set_cuda_roi_pass(name: Literal["projection", "per-pixel", "vector-projection"]) -> None:
    """For tests and benchmarks: score masks and boxes on CUDA with `name`'s pass from the next call on, in every
    thread. ValueError for another name."""

def cuda_map_pass() -> Literal["cell-blocks", "channel-warps", "channel-tiles"]:
    """How the CUDA backend computes the channel weights and raw map: "cell-blocks" (the default: small contiguous
    maps, at most 256 cells, streamed through shared memory in tiles of channels, larger maps shared out to blocks
    of 256 cells), "channel-warps" (one block a sample, a warp per channel; what the other two fall back to for
    small maps not contiguous per sample and for masks and boxes under the per-pixel ROI pass) or "channel-tiles" (the
    small maps' tiles alone)."""

def set_cuda_map_pass(name: Literal["cell-blocks", "channel-warps", "channel-tiles"]) -> None:
    """For tests and benchmarks: compute maps on CUDA with `name`'s pass from the next call on, in every thread.
    ValueError for another name."""
