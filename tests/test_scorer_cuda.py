"""The CUDA backend against the CPU backend and the float64 definition.

Skipped, with the reason, where no GPU can run it; bench/gpu_check.sh runs these
on a GPU machine.
"""
import numpy as np
import pytest

import egal
import scoring_f64
from cases import MASK_KINDS, SHAPES, TOLERANCE, assert_matches, make_boxes, make_case
from roi_cases import INCONSISTENT, ROI_FORMS, TIGHT, inconsistent_roi, roi_arguments, tight_case

torch = pytest.importorskip("torch")
_cuda = egal.backends()["cuda"]
pytestmark = pytest.mark.skipif(
    not (_cuda["available"] and torch.cuda.is_available()),
    reason=f"no usable CUDA GPU (egal CUDA backend compiled={_cuda['compiled']}: {_cuda['reason']})",
)

# The CPU backends' shapes (cases.SHAPES), and shapes that matter to the kernel's blocks: a 1 x 1 map onto a
# 1 x 1 ROI, 7 samples (not a multiple of a warp), a 56 x 56 and a full-resolution 224 x 224 map.
CUDA_SHAPES = {**SHAPES, "all-1x1": (1, 1, 1, 1, 2, 1, 1), "B7-K1024-densenet": (7, 1024, 7, 7, 3, 224, 224),
               "56x56-map": (3, 8, 56, 56, 4, 224, 224), "224x224-map": (2, 32, 224, 224, 2, 224, 224),
               # the projection's threads own 256 mask columns at a time: three tiles, the last partial
               "600-wide-roi": (2, 8, 7, 9, 3, 40, 600)}


@pytest.fixture(autouse=True, params=[("projection", "cell-blocks"), ("projection", "channel-warps"),
                                      ("per-pixel", "channel-warps"), ("vector-projection", "channel-tiles")],
                ids=lambda p: "+".join(p))
def cuda_passes(request):
    """Every test with each of the CUDA backend's passes: masks and boxes projected first (a column or four a
    thread) or read per pixel; small maps by channel tiles and large ones by blocks of cells (the default), maps by
    channel warps, or small ones by channel tiles and large ones by channel warps (tiles and cell blocks take
    projected ROIs only)."""
    core = egal._core
    previous = core.cuda_roi_pass(), core.cuda_map_pass()
    core.set_cuda_roi_pass(request.param[0])
    core.set_cuda_map_pass(request.param[1])
    yield request.param
    core.set_cuda_roi_pass(previous[0])
    core.set_cuda_map_pass(previous[1])


def cuda(x):
    return torch.from_numpy(np.ascontiguousarray(x)).cuda()


@pytest.mark.parametrize("shape", CUDA_SHAPES.values(), ids=CUDA_SHAPES.keys())
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("source", ["gradients", "weights"])
def test_cuda_matches_cpu_and_float64(shape, mask_kind, source):
    rng = np.random.default_rng(sum(shape))
    B, K, h, w, C, H, W = shape
    case = make_case(rng, B, K, h, w, C, H, W, mask_kind)
    on_gpu = egal.score_batch(cuda(case["activations"]), cuda(case["logits"]), cuda(case["masks"]),
                              **{source: cuda(case[source])}, return_cam=True)
    on_cpu = egal.score_batch(case["activations"], case["logits"], case["masks"], **{source: case[source]},
                              return_cam=True)
    expected = scoring_f64.score(case["activations"], case["logits"], case["masks"], **{source: case[source]})
    assert_matches(on_gpu, expected, TOLERANCE["float32"])
    np.testing.assert_allclose(on_gpu.score, on_cpu.score, atol=2e-5, equal_nan=True)
    np.testing.assert_allclose(on_gpu.cam, on_cpu.cam, atol=2e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_half_precision(dtype):
    rng = np.random.default_rng(3)
    case = make_case(rng, 16, 1024, 7, 7, 3, 224, 224)
    tdtype = getattr(torch, dtype)
    A = torch.from_numpy(case["activations"]).to(tdtype)
    G = torch.from_numpy(case["gradients"]).to(tdtype)
    result = egal.score_batch(A.cuda(), cuda(case["logits"]).half(), cuda(case["masks"]), gradients=G.cuda())
    expected = scoring_f64.score(A.double().numpy(), torch.from_numpy(case["logits"]).half().double().numpy(),
                                 case["masks"], gradients=G.double().numpy())
    assert_matches(result, expected, TOLERANCE[dtype])


def test_cuda_boxes_and_projected_roi():
    rng = np.random.default_rng(4)
    case = make_case(rng, 8, 64, 7, 7, 3, 224, 224)
    boxes = make_boxes(rng, 8, 5, 224, 224)
    masks = scoring_f64.rasterise(boxes, 224, 224)
    expected = scoring_f64.score(case["activations"], case["logits"], masks, gradients=case["gradients"])
    via_boxes = egal.score_batch(cuda(case["activations"]), cuda(case["logits"]), boxes=cuda(boxes),
                                 roi_size=(224, 224), gradients=cuda(case["gradients"]))
    assert_matches(via_boxes, expected, TOLERANCE["float32"])
    roi = egal.project_roi(boxes=boxes, roi_size=(224, 224), cam_size=(7, 7))
    roi_gpu = egal.ProjectedROI(cuda(roi.weights), cuda(roi.area), roi.roi_size)
    via_roi = egal.score_batch(cuda(case["activations"]), cuda(case["logits"]), roi=roi_gpu,
                               gradients=cuda(case["gradients"]))
    assert_matches(via_roi, expected, TOLERANCE["float32"])
    weights = roi.weights.copy()
    weights[5, 3, 3] = -1.0
    for bad in (egal.ProjectedROI(cuda(weights), cuda(roi.area), roi.roi_size),
                egal.ProjectedROI(cuda(roi.weights), cuda(np.where(np.arange(8) == 5, np.nan, roi.area)
                                                          .astype(np.float32)), roi.roi_size)):
        with pytest.raises(ValueError, match="finite values >= 0.*sample 5"):
            egal.score_batch(cuda(case["activations"]), cuda(case["logits"]), roi=bad,
                             gradients=cuda(case["gradients"]))


def on_gpu(roi_arguments):
    """score_batch's ROI arguments with their arrays moved to the GPU."""
    moved = dict(roi_arguments)
    if "roi" in moved:
        roi = moved["roi"]
        moved["roi"] = egal.ProjectedROI(torch.as_tensor(roi.weights).cuda(), torch.as_tensor(roi.area).cuda(),
                                         roi.roi_size)
    for name in ("masks", "boxes"):
        if name in moved:
            moved[name] = cuda(moved[name])
    return moved


@pytest.mark.parametrize("kind", TIGHT)
@pytest.mark.parametrize("grid", [(7, 7, 224, 224), (7, 7, 512, 512), (14, 14, 224, 224), (20, 20, 80, 80)],
                         ids=["7x7-224", "7x7-512", "14x14-224", "20x20-80"])
def test_cuda_never_takes_a_roi_whose_intersection_meets_its_bound_for_a_bad_mask(kind, grid):
    # tests/roi_cases.py: a mask of ones (I = SU), a mask inside a map at 1 (I = SM); rounding must not refuse them.
    rng = np.random.default_rng(8)
    h, w, H, W = grid
    for features in ("float32", "bfloat16"):
        case = tight_case(rng, 3, h, w, H, W, kind, features)
        for form in ROI_FORMS:
            result = egal.score_batch(case["activations"].cuda(), cuda(case["logits"]), weights=cuda(case["weights"]),
                                      **on_gpu(roi_arguments(case, form, rng, (h, w))))
            assert np.nanmin(result.misalignment) >= -1e-6, (features, form)


@pytest.mark.parametrize("which", INCONSISTENT)
def test_cuda_refuses_a_projected_roi_inconsistent_with_its_area(which):
    rng = np.random.default_rng(9)
    A, roi = inconsistent_roi(rng, which)
    with pytest.raises(egal.EgalError, match=r"consistent with area.*sample 2 is not$"):
        egal.score_batch(cuda(A), cuda(rng.standard_normal((4, 3)).astype(np.float32)), **on_gpu({"roi": roi}),
                         weights=cuda(np.ones((4, 8), np.float32)))


def test_cuda_strided_and_non_finite():
    rng = np.random.default_rng(5)
    case = make_case(rng, 6, 64, 9, 8, 4, 60, 70)
    A = cuda(case["activations"]).to(memory_format=torch.channels_last)
    masks = cuda(np.pad(case["masks"], ((0, 0), (0, 60), (0, 70))))[:, :60, :70]
    G = cuda(case["gradients"])
    G[2, 0, 0, 0] = float("nan")
    result = egal.score_batch(A, cuda(case["logits"]), masks, gradients=G)
    clean = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    assert np.isnan(result.score[2])
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(result.score[keep], clean.score[keep], atol=2e-5)


def test_cuda_finite_gradients_whose_float32_sum_overflows_have_their_finite_mean():
    rng = np.random.default_rng(8)
    case = make_case(rng, 4, 40, 7, 7, 3, 28, 28)  # 40 channels: more than one per warp
    A = case["activations"] * np.float32(1e-30)
    G = case["gradients"].copy()
    G[1, 2] = np.float32(3e38)
    G[3, 33, :4] = np.float32(-3.3e38)
    result = egal.score_batch(cuda(A), cuda(case["logits"]), cuda(case["masks"]), gradients=cuda(G))
    expected = scoring_f64.score(A, case["logits"], case["masks"], gradients=G)
    assert np.isfinite(result.score).all()
    assert_matches(result, expected, TOLERANCE["float32"])


@pytest.mark.parametrize("layout", ["channels_last", "padded_rows", "every_other_column"])
def test_cuda_maps_whose_planes_are_not_row_after_row(layout):
    # The kernel reads a plane stored row after row by its cell number, any other by its row and column:
    # both kinds of activations and gradients, against the CPU backend on contiguous copies.
    rng = np.random.default_rng(9)
    case = make_case(rng, 5, 40, 7, 9, 3, 56, 72)

    def laid_out(x):
        if layout == "channels_last":
            return cuda(x).to(memory_format=torch.channels_last)
        if layout == "padded_rows":  # stride[2] = w + 3
            return cuda(np.pad(x, ((0, 0), (0, 0), (0, 0), (0, 3))))[..., : x.shape[3]]
        wide = np.zeros(x.shape[:3] + (2 * x.shape[3],), x.dtype)  # stride[3] = 2
        wide[..., ::2] = x
        return cuda(wide)[..., ::2]

    A, G = laid_out(case["activations"]), laid_out(case["gradients"])
    assert not A.is_contiguous() and not G.is_contiguous()
    result = egal.score_batch(A, cuda(case["logits"]), cuda(case["masks"]), gradients=G)
    clean = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    np.testing.assert_allclose(result.score, clean.score, atol=2e-5)
    np.testing.assert_allclose(result.misalignment, clean.misalignment, atol=2e-5)


def test_cuda_inputs_are_not_copied_to_host():
    rng = np.random.default_rng(6)
    case = make_case(rng, 4, 16, 7, 7, 3, 32, 32)
    A = cuda(case["activations"])
    before = A.data_ptr()
    egal.score_batch(A, cuda(case["logits"]), cuda(case["masks"]), gradients=cuda(case["gradients"]))
    assert A.data_ptr() == before and A.is_cuda


@pytest.mark.parametrize("layout", ["float16", "transposed", "bool-strided"])
def test_cuda_masks_of_every_dtype_and_layout(layout):
    rng = np.random.default_rng(10)
    case = make_case(rng, 5, 24, 7, 7, 3, 90, 300, "soft" if layout == "float16" else "hard")
    masks = case["masks"]
    if layout == "float16":
        masks = masks.astype(np.float16)
        on_gpu = cuda(masks)
    elif layout == "transposed":  # stride[1] = 1, stride[2] = H
        on_gpu = cuda(masks.transpose(0, 2, 1).copy()).transpose(1, 2)
    else:  # stride[1] = W + 7
        masks = masks.astype(bool)
        on_gpu = cuda(np.pad(masks, ((0, 0), (0, 0), (0, 7))))[:, :, :300]
    result = egal.score_batch(cuda(case["activations"]), cuda(case["logits"]), on_gpu,
                              gradients=cuda(case["gradients"]))
    expected = scoring_f64.score(case["activations"], case["logits"], masks.astype(np.float64),
                                 gradients=case["gradients"])
    assert_matches(result, expected, TOLERANCE["float32"])


@pytest.mark.parametrize("bad", [2, -0.5, float("nan"), float("inf")])
def test_cuda_a_mask_value_outside_0_1_is_named_by_sample(bad):
    rng = np.random.default_rng(11)
    case = make_case(rng, 6, 16, 7, 7, 3, 50, 300, "soft")
    masks = case["masks"].copy()
    masks[4, 49, 299] = bad  # the last pixel of the last tile
    with pytest.raises(ValueError, match="sample 4"):
        egal.score_batch(cuda(case["activations"]), cuda(case["logits"]), cuda(masks),
                         gradients=cuda(case["gradients"]))


# 3,040 boxes: their ranges (48,640 bytes) fit the 48 KB a block gets without opting in, but not beside the
# kernel's static shared memory.
@pytest.mark.parametrize("n_boxes", [300, 3040])
def test_cuda_many_overlapping_boxes_match_their_rasterised_masks(n_boxes):
    rng = np.random.default_rng(12)
    case = make_case(rng, 4, 16, 7, 7, 3, 224, 224)
    boxes = make_boxes(rng, 4, n_boxes, 224, 224)
    masks = scoring_f64.rasterise(boxes, 224, 224)
    via_boxes = egal.score_batch(cuda(case["activations"]), cuda(case["logits"]), boxes=cuda(boxes),
                                 roi_size=(224, 224), gradients=cuda(case["gradients"]))
    via_masks = egal.score_batch(cuda(case["activations"]), cuda(case["logits"]), cuda(masks.astype(np.uint8)),
                                 gradients=cuda(case["gradients"]))
    np.testing.assert_allclose(via_boxes.misalignment, via_masks.misalignment, atol=2e-5)
    np.testing.assert_allclose(via_boxes.score, via_masks.score, atol=2e-5)
