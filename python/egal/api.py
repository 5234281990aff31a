"""The public scoring API: validate, pick a backend, run the fused kernel."""
from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np

from . import _core
from ._checks import check_bool, check_choice, exactly_one
from ._dlpack import capsule
from ._result import ScoreResult
from ._score_inputs import check_boxes, check_cam_grid, check_masks, check_roi_size, check_score_inputs, roi_size_of
from .combine import DEFAULT_ALPHA
from .errors import EgalError
from .roi import ProjectedROI

BACKENDS = ("auto", "cpu", "cuda", "reference")
_STATUS_BAD_MASK = _core.STATUS_BAD_MASK
# The CUDA backend's passes for every process that imports egal (a run's workers too): EGAL_CUDA_ROI_PASS
# "per-pixel" checks a result against the pass that "projection", the default, replaced, and "vector-projection"
# times its four-column variant; EGAL_CUDA_MAP_PASS "channel-warps" or "channel-tiles" those that "cell-blocks",
# the default, outran on the GPU (docs/scoring.md). Read once, at import; a value a setter does not know is a
# warning, not an import that fails (it means nothing to a CPU-only install).
CUDA_PASS_VARIABLES = {"EGAL_CUDA_ROI_PASS": _core.set_cuda_roi_pass, "EGAL_CUDA_MAP_PASS": _core.set_cuda_map_pass}
for _variable, _set_pass in CUDA_PASS_VARIABLES.items():
    if os.environ.get(_variable):
        try:
            _set_pass(os.environ[_variable])
        except ValueError as e:
            warnings.warn(f"{_variable} ignored: {e}", stacklevel=2)


def backends() -> dict:
    """What this installation can run: {"cpu": {...}, "cuda": {...}, "reference": {...}}.

    cuda["compiled"] says whether the CUDA backend was built in; cuda["available"]
    whether a GPU can run it now (cuda["reason"] says why not).
    """
    info = _core.backends()
    # The reference backend is written in PyTorch; look for it without importing it.
    has_torch = importlib.util.find_spec("torch") is not None
    info["reference"] = {"available": has_torch, "reason": None if has_torch else "PyTorch is not installed"}
    return info


def require_array(value, name: str) -> None:
    """A TypeError naming `name` when a required array argument is None.

    None elsewhere means "not given" (gradients / weights, masks / boxes / roi), and the
    exactly-one checks name those; activations and logits are always required.
    """
    if value is None:
        raise TypeError(
            f"{name} must be an array (numpy, torch, an onnxruntime OrtValue, or any DLPack producer), got None"
        )


def _bad_mask_error(status: np.ndarray, mask_dtype: str | None, projected: bool = False) -> EgalError:
    return bad_mask_error(int(np.flatnonzero(status & _STATUS_BAD_MASK)[0]), mask_dtype, projected)


def bad_mask_error(first: int, mask_dtype: str | None, projected: bool = False) -> EgalError:
    """Masks with a value outside [0, 1] (or a projected ROI that is no projection of such masks), the first in
    sample `first`: every backend's message."""
    if projected:
        return EgalError("roi (a ProjectedROI) must be the projection of masks with values in [0, 1], as "
                         "egal.project_roi makes it: finite values >= 0, and weights consistent with area (they sum "
                         "to it, and no cell holds more than a mask of ones gives it), or the misalignment falls "
                         f"outside [0, 1]; sample {first} is not")
    hint = " (uint8 masks must be 0/1: divide a 0/255 mask by 255 or pass it as bool)" if mask_dtype == "uint8" else ""
    return EgalError(f"masks must hold values in [0, 1]{hint}; sample {first} does not")


def score_batch(
    activations,
    logits,
    masks=None,
    *,
    gradients=None,
    weights=None,
    boxes=None,
    roi_size: tuple[int, int] | None = None,
    roi: ProjectedROI | None = None,
    alpha: float = DEFAULT_ALPHA,
    return_cam: bool = False,
    backend: str = "auto",
) -> ScoreResult:
    """Score one batch with the EG-AL acquisition function of docs/scoring.md.

    activations: [B, K, h, w] target-layer feature maps (float32 / float16 / bfloat16)
    logits:      [B, C] class scores, C >= 2 (float32 / float16)
    masks:       [B, H, W] expert ROI, bool, uint8 (0/1), float16 or float32 in [0, 1]
    gradients:   [B, K, h, w] d(logit of the predicted class)/d activations, or
    weights:     [B, K] Grad-CAM channel weights given directly
    boxes:       [B, N, 4] float32 (x0, y0, x1, y1) in pixels of roi_size=(H, W),
                 NaN rows are padding; scored without building a mask
    roi:         a ProjectedROI from `project_roi`, cached across rounds
    alpha:       weight of the normalised entropy; 1 - alpha weighs misalignment

    Give exactly one of gradients / weights and one of masks / boxes / roi. Inputs
    are any DLPack producers (numpy, torch CPU or CUDA, onnxruntime OrtValue) and are
    read in place; CUDA inputs run on the CUDA backend. A sample with NaN or Inf in
    its inputs gets a NaN score (never selected); the others are unaffected.
    An empty ROI gives misalignment NaN and score = entropy_norm.
    """
    check_choice(backend, "backend", BACKENDS)
    check_bool(return_cam, "return_cam")
    require_array(activations, "activations")
    require_array(logits, "logits")
    if roi is not None and not isinstance(roi, ProjectedROI):
        raise TypeError(f"roi must be an egal.ProjectedROI (from egal.project_roi), got {type(roi).__name__}")
    if backend == "reference":
        from . import reference

        return reference.score_batch(
            activations, logits, masks, gradients=gradients, weights=weights, boxes=boxes, roi_size=roi_size,
            roi=roi, alpha=alpha, return_cam=return_cam,
        )

    a_cap, a_spec = capsule(activations, "activations")
    z_cap, z_spec = capsule(logits, "logits")
    g_cap, g_spec = capsule(gradients, "gradients")
    w_cap, w_spec = capsule(weights, "weights")
    m_cap, m_spec = capsule(masks, "masks")
    b_cap, b_spec = capsule(boxes, "boxes")
    rw_cap, rw_spec = capsule(roi.weights if roi is not None else None, "roi.weights")
    ra_cap, ra_spec = capsule(roi.area if roi is not None else None, "roi.area")
    plan = check_score_inputs(
        a_spec, z_spec, gradients=g_spec, weights=w_spec, masks=m_spec, boxes=b_spec, roi_weights=rw_spec,
        roi_area=ra_spec, roi_size=roi_size_of(roi, roi_size), alpha=alpha,
    )
    device = plan.device[0]
    if backend in ("cpu", "cuda") and backend != device:
        raise EgalError(
            f"backend={backend!r} but the inputs are on {device}; egal never copies inputs between devices: "
            f"move them to {backend} first or use backend='auto'"
        )
    if device == "cuda":
        cuda = _core.backends()["cuda"]
        if not cuda["available"]:
            raise RuntimeError(f"the inputs are on a CUDA device but egal cannot run CUDA here: {cuda['reason']}")

    out = _core.score(
        a_cap, g_cap, w_cap, z_cap, plan.roi_kind, m_cap, b_cap, rw_cap, ra_cap,
        plan.roi_size[0], plan.roi_size[1], plan.alpha, bool(return_cam),
    )
    status = out.pop("status")
    if (status & _STATUS_BAD_MASK).any():
        raise _bad_mask_error(status, m_spec.dtype if m_spec else None, projected=plan.roi_kind == "projected")
    return ScoreResult(**out)


def project_roi(masks=None, *, boxes=None, roi_size=None, cam_size: tuple[int, int]) -> ProjectedROI:
    """Project masks or boxes onto the (h, w) Grad-CAM grid, once per pool.

    masks: [B, H, W] bool / uint8 (0/1) / float16 / float32 in [0, 1], in host memory
    boxes: [B, N, 4] float32 (x0, y0, x1, y1), NaN-padded, with roi_size=(H, W)
    Returns a ProjectedROI of numpy arrays; pass it (or a slice, roi[i:j]) as
    `score_batch(..., roi=...)`. Move it to the GPU yourself for CUDA batches.
    """
    h, w = check_roi_size(cam_size, "cam_size")
    check_cam_grid(h, w, f"cam_size={cam_size!r}")
    name = exactly_one([("masks", masks), ("boxes", boxes)], "the expert ROI")
    cap, spec = capsule(masks if name == "masks" else boxes, name)
    H, W = check_masks(spec, roi_size) if name == "masks" else check_boxes(spec, roi_size)
    if spec.device[0] != "cpu":
        raise EgalError(f"project_roi runs on the CPU; {name} is on {spec.device[0]}: pass host arrays")
    weights, area, status = _core.project(
        cap if name == "masks" else None, cap if name == "boxes" else None, H, W, h, w
    )
    if (status & _STATUS_BAD_MASK).any():
        raise _bad_mask_error(status, spec.dtype)
    return ProjectedROI(weights, area, (H, W))
