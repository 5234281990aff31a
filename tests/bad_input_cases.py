"""Bad calls of the scorer, run in a child process by test_scorer_errors.py so
that a crash (segfault, abort) fails the tests instead of passing silently.

Each case: name -> (callable, expected exception type, words its message must hold).
"""
import json
import sys

import numpy as np

import egal

rng = np.random.default_rng(0)
A = rng.random((2, 4, 7, 7), dtype=np.float32)
G = rng.random((2, 4, 7, 7), dtype=np.float32)
Wt = rng.random((2, 4), dtype=np.float32)
Z = rng.random((2, 3), dtype=np.float32)
M = (rng.random((2, 20, 20)) < 0.5).astype(np.uint8)
BX = np.array([[[1, 1, 5, 5]], [[2, 2, 9, 9]]], dtype=np.float32)


def _on_fake_gpu(array):
    """A DLPack view that claims to live on cuda:0; only its metadata is ever read."""
    from egal._dlpack import _NUMPY_DTYPES, BorrowedArray

    return BorrowedArray(array, array.ctypes.data, array.shape, _NUMPY_DTYPES[array.dtype.str[1:]], (2, 0))


def _projected(area_sign=1, nan_at=None, weights_scale=1):
    roi = egal.project_roi(M, cam_size=(7, 7))
    weights = roi.weights * np.float32(weights_scale)
    if nan_at is not None:
        weights[nan_at] = np.nan
    return egal.ProjectedROI(weights, roi.area * area_sign, roi.roi_size)


class _Lying:
    """Claims DLPack, hands back something else."""

    def __init__(self, value):
        self.value = value

    def __dlpack_device__(self):
        return (1, 0)

    def __dlpack__(self, stream=None, **_):
        return self.value


def _null_borrow(shape):
    from egal._dlpack import BorrowedArray

    return BorrowedArray(None, 0, shape, (2, 32), (1, 0))


def call(**overrides):
    kwargs = dict(activations=A, logits=Z, masks=M, gradients=G)
    kwargs.update(overrides)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return lambda: egal.score_batch(**kwargs)


CASES = {
    "batch_mismatch_logits": (call(logits=Z[:1]), ValueError, ["logits", "batch"]),
    "batch_mismatch_masks": (call(masks=M[:1]), ValueError, ["masks", "batch"]),
    "gradients_shape": (call(gradients=G[:, :2]), ValueError, ["gradients", "shape"]),
    "weights_shape": (call(gradients=None, weights=Wt[:, :3]), ValueError, ["weights", "(B, K)"]),
    "activations_rank": (call(activations=A[0]), ValueError, ["activations", "rank 4"]),
    "logits_rank": (call(logits=Z[:, :, None]), ValueError, ["logits", "rank 2"]),
    "masks_rank": (call(masks=M[:, 0]), ValueError, ["masks", "rank 3"]),
    "activations_dtype": (call(activations=A.astype(np.float64)), TypeError, ["activations", "float64"]),
    "activations_int": (call(activations=A.astype(np.int32)), TypeError, ["activations", "int32"]),
    "gradients_dtype_mismatch": (call(gradients=G.astype(np.float16)), TypeError, ["gradients", "dtype"]),
    "logits_dtype": (call(logits=Z.astype(np.float64)), TypeError, ["logits", "float64"]),
    "masks_dtype": (call(masks=M.astype(np.int64)), TypeError, ["masks", "int64"]),
    "one_class": (call(logits=Z[:, :1]), ValueError, ["C >= 2"]),
    "both_sources": (call(weights=Wt), ValueError, ["gradients", "weights", "both"]),
    "no_source": (call(gradients=None), ValueError, ["gradients", "weights", "none"]),
    "both_rois": (call(boxes=BX, roi_size=(20, 20)), ValueError, ["masks", "boxes"]),
    "no_roi": (call(masks=None), ValueError, ["masks", "boxes", "none"]),
    "boxes_without_size": (call(masks=None, boxes=BX), ValueError, ["roi_size"]),
    "boxes_dtype": (call(masks=None, boxes=BX.astype(np.float64), roi_size=(20, 20)), TypeError, ["boxes"]),
    "boxes_shape": (call(masks=None, boxes=BX[:, :, :3], roi_size=(20, 20)), ValueError, ["boxes", "(B, N, 4)"]),
    "roi_size_bad": (call(masks=None, boxes=BX, roi_size=(0, 20)), ValueError, ["roi_size"]),
    "roi_size_disagrees": (call(roi_size=(10, 10)), ValueError, ["roi_size", "masks"]),
    "alpha_high": (call(alpha=1.5), ValueError, ["alpha", "[0, 1]"]),
    "alpha_negative": (call(alpha=-0.1), ValueError, ["alpha"]),
    "alpha_nan": (call(alpha=float("nan")), ValueError, ["alpha"]),
    "alpha_string": (call(alpha="0.5"), TypeError, ["alpha"]),
    "mask_255": (call(masks=M * 255), ValueError, ["masks", "[0, 1]", "255", "sample 0"]),
    "mask_negative": (call(masks=np.where(M > 0, -0.5, 0).astype(np.float32)), ValueError, ["masks", "[0, 1]"]),
    "mask_nan": (call(masks=np.where(M > 0, np.nan, 0).astype(np.float32)), ValueError, ["masks", "[0, 1]"]),
    "mask_above_one_second_sample": (
        call(masks=np.stack([M[0], M[1] * 2]).astype(np.float32)), ValueError, ["masks", "sample 1"]),
    "not_an_array": (call(activations="activations"), TypeError, ["activations", "str"]),
    "backend_unknown": (lambda: egal.score_batch(A, Z, M, gradients=G, backend="tpu"), ValueError, ["backend"]),
    "roi_wrong_type": (call(masks=None, roi=M), TypeError, ["roi", "ProjectedROI"]),
    "roi_wrong_grid": (
        lambda: egal.score_batch(A, Z, roi=egal.project_roi(M, cam_size=(5, 5)), gradients=G), ValueError,
        ["roi", "cam_size=(7, 7)"]),
    "mixed_devices": (call(masks=_on_fake_gpu(M)), ValueError, ["masks", "cuda:0", "activations", "cpu"]),
    "cpu_backend_for_cuda_inputs": (
        lambda: egal.score_batch(_on_fake_gpu(A), _on_fake_gpu(Z), _on_fake_gpu(M), gradients=_on_fake_gpu(G),
                                 backend="cpu"), ValueError, ["backend='cpu'", "cuda"]),
    "cuda_backend_for_cpu_inputs": (
        lambda: egal.score_batch(A, Z, M, gradients=G, backend="cuda"), ValueError, ["backend='cuda'", "cpu"]),
    "zero_channels": (call(activations=A[:, :0], gradients=G[:, :0]), ValueError, ["activations", "K, h, w >= 1"]),
    "project_no_roi": (lambda: egal.project_roi(cam_size=(7, 7)), ValueError, ["masks", "boxes"]),
    "project_bad_cam_size": (lambda: egal.project_roi(M, cam_size=(7, -1)), ValueError, ["cam_size", "(7, -1)"]),
    "project_no_cam_size": (lambda: egal.project_roi(M, cam_size=None), TypeError, ["cam_size", "None"]),
    "project_bad_mask": (lambda: egal.project_roi(M * 3, cam_size=(7, 7)), ValueError, ["masks", "[0, 1]"]),
    # A projected ROI built by hand, or from masks another way, is held to what a projection of masks in
    # [0, 1] holds (it was scored as it came: a D of 1.87 from a negative area).
    "projected_negative_area": (call(masks=None, roi=_projected(area_sign=-1)), ValueError,
                                ["roi", "finite values >= 0", "sample 0"]),
    "projected_nan_weight": (call(masks=None, roi=_projected(nan_at=(1, 2, 3))), ValueError,
                             ["roi", "finite values >= 0", "sample 1"]),
    # Finite weights >= 0 but ten times their area: D came out as -4.5, silently.
    "projected_weights_inconsistent_with_area": (call(masks=None, roi=_projected(weights_scale=10)), ValueError,
                                                 ["roi", "consistent with area", "sample 0"]),
    # Producers that lie: the error names the argument, and a null pointer with elements is no crash.
    "dlpack_not_a_capsule": (call(logits=_Lying(5)), TypeError, ["logits", "DLPack", "int"]),
    "dlpack_null_data": (call(activations=_null_borrow(A.shape)), TypeError, ["activations", "null pointer"]),
    "select_bad_k": (lambda: egal.select_top_k([0.1, 0.2], ["a", "b"], -1), ValueError, ["k"]),
    "select_length": (lambda: egal.select_top_k([0.1, 0.2], ["a"], 1), ValueError, ["scores", "ids"]),
    "select_duplicate_ids": (lambda: egal.select_top_k([0.1, 0.2], ["a", "a"], 1), ValueError, ["unique"]),
}

if not egal.backends()["cuda"]["available"]:  # with a GPU this would launch on the fake pointers
    CASES["cuda_inputs_without_gpu"] = (
        lambda: egal.score_batch(_on_fake_gpu(A), _on_fake_gpu(Z), _on_fake_gpu(M), gradients=_on_fake_gpu(G)),
        RuntimeError, ["CUDA"])

TORCH_CASES = {}
try:
    import torch

    def _mixed():
        return egal.score_batch(torch.from_numpy(A), torch.from_numpy(Z), torch.from_numpy(M).to("meta"),
                                gradients=torch.from_numpy(G))

    TORCH_CASES["unsupported_device"] = (_mixed, TypeError, ["masks", "meta"])
    TORCH_CASES["reference_project_bad_mask"] = (
        lambda: __import__("egal.reference").reference.project_roi(torch.from_numpy(M * 255), cam_size=(7, 7)),
        ValueError, ["masks", "[0, 1]", "255"])
except ImportError:
    pass


def run(names):
    results = {}
    for name in names:
        fn, _, _ = {**CASES, **TORCH_CASES}[name]
        try:
            fn()
            results[name] = [[], ""]  # nothing raised
        except Exception as exc:  # the parent checks type and message
            results[name] = [[c.__name__ for c in type(exc).__mro__], str(exc)]
    return results


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list({**CASES, **TORCH_CASES}))))
