"""Every CPU-side backend against the float64 implementation of docs/scoring.md."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import egal
import scoring_f64
from cases import MASK_KINDS, SHAPES, TOLERANCE, assert_matches, make_boxes, make_case
from conftest import CPU_BACKENDS


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("source", ["gradients", "weights"])
def test_matches_float64_over_shapes(backend, shape, source, rng):
    B, K, h, w, C, H, W = shape
    case = make_case(rng, B, K, h, w, C, H, W)
    kwargs = {source: case[source]}
    result = egal.score_batch(case["activations"], case["logits"], case["masks"], alpha=0.3, backend=backend, **kwargs)
    expected = scoring_f64.score(case["activations"], case["logits"], case["masks"], alpha=0.3, **kwargs)
    assert_matches(result, expected, TOLERANCE["float32"])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
def test_mask_kinds(backend, mask_kind, rng):
    case = make_case(rng, 6, 32, 7, 7, 3, 50, 40, mask_kind)
    result = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"],
                              backend=backend)
    expected = scoring_f64.score(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    assert_matches(result, expected, TOLERANCE["float32"])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_roi_policy(backend, rng):
    case = make_case(rng, 4, 8, 7, 7, 3, 20, 20, "empty")
    result = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"],
                              alpha=0.2, backend=backend)
    empty = case["masks"].sum(axis=(1, 2)) == 0
    assert empty.any() and (~empty).any()
    assert np.isnan(result.misalignment[empty]).all()
    np.testing.assert_array_equal(result.score[empty], result.entropy_norm[empty])
    assert np.isfinite(result.score[~empty]).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_inputs(backend, dtype, rng):
    case = make_case(rng, 4, 256, 7, 7, 3, 64, 64)
    tdtype = getattr(torch, dtype)
    A = torch.from_numpy(case["activations"]).to(tdtype)
    G = torch.from_numpy(case["gradients"]).to(tdtype)
    Wt = torch.from_numpy(case["weights"]).to(tdtype)
    Z = torch.from_numpy(case["logits"]).half()
    for kwargs, f64_kwargs in [({"gradients": G}, {"gradients": G.double().numpy()}),
                               ({"weights": Wt}, {"weights": Wt.double().numpy()})]:
        result = egal.score_batch(A, Z, case["masks"], backend=backend, **kwargs)
        expected = scoring_f64.score(A.double().numpy(), Z.double().numpy(), case["masks"], **f64_kwargs)
        assert_matches(result, expected, TOLERANCE[dtype])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", [(3, 16, 7, 7, 224, 224), (2, 8, 5, 9, 37, 61), (2, 4, 6, 6, 3, 4)])
def test_boxes_equal_rasterised_masks(backend, shape, rng):
    B, K, h, w, H, W = shape
    case = make_case(rng, B, K, h, w, 3, H, W)
    boxes = make_boxes(rng, B, 5, H, W)
    boxes[0] = np.nan  # one sample with no valid box: an empty ROI
    masks = scoring_f64.rasterise(boxes, H, W)
    result = egal.score_batch(case["activations"], case["logits"], boxes=boxes, roi_size=(H, W),
                              gradients=case["gradients"], backend=backend)
    expected = scoring_f64.score(case["activations"], case["logits"], masks, gradients=case["gradients"])
    assert_matches(result, expected, TOLERANCE["float32"])
    via_masks = egal.score_batch(case["activations"], case["logits"], masks.astype(np.uint8),
                                 gradients=case["gradients"], backend=backend)
    np.testing.assert_allclose(result.score, via_masks.score, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_hundreds_of_overlapping_boxes_equal_their_rasterised_masks(backend, rng):
    # The projection keeps box coverage row by row of cells (boxes entering and leaving at shared edges, nested,
    # duplicated); it tested every box against every cell before, and took a minute for 2,000 boxes.
    case = make_case(rng, 3, 8, 7, 7, 3, 96, 80)
    corners = rng.integers(0, 70, (3, 300, 2)).astype(np.float32)
    sizes = rng.integers(1, 12, (3, 300, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + sizes], axis=-1)
    boxes[:, 100:150] = boxes[:, :50]  # duplicates
    boxes[1] = np.where(np.arange(300)[:, None] % 2, boxes[1], np.nan)  # padding between them
    masks = scoring_f64.rasterise(boxes, 96, 80)
    result = egal.score_batch(case["activations"], case["logits"], boxes=boxes, roi_size=(96, 80),
                              gradients=case["gradients"], backend=backend)
    expected = scoring_f64.score(case["activations"], case["logits"], masks, gradients=case["gradients"])
    assert_matches(result, expected, TOLERANCE["float32"])
    projected = egal.project_roi(boxes=boxes, roi_size=(96, 80), cam_size=(7, 7))
    np.testing.assert_array_equal(projected.area, masks.sum(axis=(1, 2)))


def test_overlapping_boxes_count_once(rng):
    case = make_case(rng, 1, 8, 7, 7, 3, 32, 32)
    one = np.array([[[4, 4, 20, 20], [np.nan] * 4]], dtype=np.float32)
    twice = np.array([[[4, 4, 20, 20], [4, 4, 20, 20]]], dtype=np.float32)
    nested = np.array([[[4, 4, 20, 20], [8, 8, 12, 12]]], dtype=np.float32)
    scores = [egal.score_batch(case["activations"], case["logits"], boxes=b, roi_size=(32, 32),
                               gradients=case["gradients"]).misalignment[0] for b in (one, twice, nested)]
    assert scores[0] == pytest.approx(scores[1], abs=1e-7) == pytest.approx(scores[2], abs=1e-7)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_strided_inputs(backend, rng):
    case = make_case(rng, 6, 64, 9, 8, 4, 60, 70)
    A = torch.from_numpy(case["activations"]).to(memory_format=torch.channels_last)  # channel stride 1
    G = torch.from_numpy(np.ascontiguousarray(case["gradients"][:, :, :, ::-1]))[:, :, :, ::1].flip(3)
    big_masks = np.zeros((6, 120, 140), dtype=np.uint8)
    big_masks[:, ::2, 1::2] = case["masks"]
    masks = big_masks[:, ::2, 1::2]  # a strided view
    logits = np.asfortranarray(case["logits"])
    weights = np.ascontiguousarray(np.repeat(case["weights"], 2, axis=1))[:, ::2]
    assert not masks.flags.c_contiguous and not A.is_contiguous() and not weights.flags.c_contiguous
    for kwargs in ({"gradients": G}, {"weights": weights}):
        result = egal.score_batch(A, logits, masks, backend=backend, **kwargs)
        f64_kwargs = {k: np.asarray(v) for k, v in kwargs.items()}
        expected = scoring_f64.score(case["activations"], case["logits"], case["masks"], **f64_kwargs)
        assert_matches(result, expected, TOLERANCE["float32"])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_reversed_numpy_views(backend, rng):
    # Negative strides: torch cannot view them (the reference backend copies them), the fused scorer reads them.
    case = make_case(rng, 4, 16, 7, 7, 3, 32, 32)
    activations = np.ascontiguousarray(case["activations"][::-1])[::-1]  # the same values, read backwards
    masks = np.ascontiguousarray(case["masks"][:, ::-1])[:, ::-1]
    assert activations.strides[0] < 0 and masks.strides[1] < 0
    result = egal.score_batch(activations, case["logits"], masks, gradients=case["gradients"], backend=backend)
    expected = scoring_f64.score(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    assert_matches(result, expected, TOLERANCE["float32"])


def test_numpy_and_torch_inputs_agree_exactly(rng):
    case = make_case(rng, 5, 32, 7, 7, 3, 40, 40)
    from_numpy = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"],
                                  return_cam=True)
    t = {k: torch.from_numpy(v) for k, v in case.items()}
    from_torch = egal.score_batch(t["activations"], t["logits"], t["masks"], gradients=t["gradients"],
                                  return_cam=True)
    for name, value in vars(from_numpy).items():
        np.testing.assert_array_equal(value, getattr(from_torch, name), err_msg=name)


def test_readonly_numpy_inputs(rng):
    case = make_case(rng, 3, 8, 7, 7, 3, 20, 20)
    expected = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    for value in case.values():
        value.flags.writeable = False
    result = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    np.testing.assert_array_equal(result.score, expected.score)


def test_big_endian_numpy_inputs_read_or_writable_score_as_their_values(rng):
    # DLPack has no byte order: a read-only big-endian array (a .npy from another machine opened with mmap) was
    # lent by pointer and read as native numbers (scores, masks and boxes all wrong, no error); a writable one
    # was refused. Both are copied to native order now.
    case = make_case(rng, 3, 8, 7, 7, 3, 20, 20)
    boxes = np.array([[[2, 3, 11, 15]], [[0, 0, 20, 20]], [[5, 5, 6, 9]]], np.float32)
    expected = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    expected_boxes = egal.score_batch(case["activations"], case["logits"], boxes=boxes, roi_size=(20, 20),
                                      gradients=case["gradients"])
    for writeable in (False, True):
        swapped = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in case.items()}
        big_boxes = boxes.astype(">f4")
        for value in (*swapped.values(), big_boxes):
            value.flags.writeable = writeable
        result = egal.score_batch(swapped["activations"], swapped["logits"], swapped["masks"],
                                  gradients=swapped["gradients"])
        np.testing.assert_array_equal(result.score, expected.score)
        np.testing.assert_array_equal(egal.score_batch(swapped["activations"], swapped["logits"], boxes=big_boxes,
                                                       roi_size=(20, 20), gradients=swapped["gradients"]).score,
                                      expected_boxes.score)
        np.testing.assert_array_equal(egal.project_roi(swapped["masks"], cam_size=(7, 7)).area,
                                      egal.project_roi(case["masks"], cam_size=(7, 7)).area)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_entropy_norm_of_near_uniform_logits_stays_within_0_1(backend, rng):
    # docs/scoring.md step 1: H_norm in [0, 1]. The reference computed it in float32 and gave 1.0000002.
    for classes, spread in ((5, 1e-7), (1000, 1e-3)):
        case = make_case(rng, 512, 4, 3, 3, classes, 6, 6)
        logits = (rng.standard_normal((512, classes)) * spread).astype(np.float32)
        result = egal.score_batch(case["activations"], logits, case["masks"], gradients=case["gradients"],
                                  backend=backend)
        assert 0.99 < result.entropy_norm.min() and result.entropy_norm.max() <= 1.0


def test_autograd_tensors_are_accepted(rng):
    case = make_case(rng, 2, 8, 7, 7, 3, 20, 20)
    A = torch.from_numpy(case["activations"]).requires_grad_()
    result = egal.score_batch(A, case["logits"], case["masks"], gradients=case["gradients"])
    expected = scoring_f64.score(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    assert_matches(result, expected, TOLERANCE["float32"])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cam_output(backend, rng):
    case = make_case(rng, 3, 16, 5, 6, 3, 30, 30)
    result = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"],
                              return_cam=True, backend=backend)
    expected = scoring_f64.score(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    assert result.cam.shape == (3, 5, 6)
    np.testing.assert_allclose(result.cam, expected["cam"], atol=1e-5)
    assert egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"],
                            backend=backend).cam is None


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_projected_roi_equals_masks_and_boxes(backend, rng):
    case = make_case(rng, 6, 32, 7, 7, 3, 224, 224, "empty")
    boxes = make_boxes(rng, 6, 4, 224, 224)
    for roi_kwargs in ({"masks": case["masks"]}, {"boxes": boxes, "roi_size": (224, 224)}):
        direct = egal.score_batch(case["activations"], case["logits"], gradients=case["gradients"],
                                  backend=backend, **roi_kwargs)
        roi = egal.project_roi(**roi_kwargs, cam_size=(7, 7))
        cached = egal.score_batch(case["activations"], case["logits"], roi=roi, gradients=case["gradients"],
                                  backend=backend)
        np.testing.assert_allclose(cached.score, direct.score, atol=1e-5, equal_nan=True)
        half = egal.score_batch(case["activations"][:3], case["logits"][:3], roi=roi[:3],
                                gradients=case["gradients"][:3], backend=backend)
        np.testing.assert_allclose(half.score, direct.score[:3], atol=1e-5, equal_nan=True)


def test_projection_matches_dense_operator(rng):
    masks = rng.random((3, 37, 50)).astype(np.float32)
    roi = egal.project_roi(masks, cam_size=(6, 9))
    Ry = np.stack([scoring_f64.upsample(np.eye(6)[i][None, :, None], 37, 1)[0, :, 0] for i in range(6)], axis=1)
    Rx = np.stack([scoring_f64.upsample(np.eye(9)[j][None, None, :], 1, 50)[0, 0, :] for j in range(9)], axis=1)
    expected = np.einsum("yi,byx,xj->bij", Ry, masks.astype(np.float64), Rx)
    np.testing.assert_allclose(roi.weights, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(roi.area, masks.sum(axis=(1, 2)), rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_finite_inputs_poison_only_their_sample(backend, rng):
    case = make_case(rng, 6, 16, 7, 7, 3, 30, 30)
    clean = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"],
                             backend=backend)
    A, G, Z = case["activations"].copy(), case["gradients"].copy(), case["logits"].copy()
    A[1, 3, 2, 2] = np.nan
    G[2, 0, 0, 0] = np.inf
    Z[3, 1] = np.inf
    A[4, 5] = np.inf
    dirty = egal.score_batch(A, Z, case["masks"], gradients=G, backend=backend)
    bad = [1, 2, 3, 4]
    good = [0, 5]
    assert np.isnan(dirty.score[bad]).all()
    for name in ("score", "misalignment", "entropy", "entropy_norm", "pred"):
        np.testing.assert_array_equal(getattr(dirty, name)[good], getattr(clean, name)[good])
    assert egal.select_top_k(dirty.score, np.arange(6), 6).tolist() == sorted(
        good, key=lambda i: -clean.score[i])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_finite_gradients_whose_float32_sum_overflows_have_their_finite_mean(backend, layout, rng):
    # 49 gradients of 3e38 sum past float32's 3.4e38; their mean, the weight of step 2, is finite, and
    # small activations keep the raw map finite: the float64 definition scores these samples.
    case = make_case(rng, 4, 8, 7, 7, 3, 28, 28)
    A = case["activations"] * np.float32(1e-30)
    G = case["gradients"].copy()
    G[1, 2] = np.float32(3e38)
    G[3, :, :4] = np.float32(-3.3e38)
    if layout == "strided":
        G = np.pad(G, ((0, 0), (0, 0), (0, 0), (0, 3)))[..., :7]
    result = egal.score_batch(A, case["logits"], case["masks"], gradients=G, backend=backend)
    expected = scoring_f64.score(A, case["logits"], case["masks"], gradients=G)
    assert np.isfinite(result.score).all()
    assert_matches(result, expected, TOLERANCE["float32"])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_logit_of_minus_infinity_is_a_class_of_probability_zero(backend, rng):
    # docs/scoring.md step 1 (0 log 0 = 0): a masked class. Both scorers called the sample bad input (NaN).
    case = make_case(rng, 4, 8, 7, 7, 4, 20, 20)
    Z = case["logits"].copy()
    Z[0, 1] = -np.inf  # one class masked
    Z[1, :3] = -np.inf  # all but one: certain, entropy 0
    Z[2, :] = -np.inf  # none left: bad input
    Z[3, 2] = np.nan
    result = egal.score_batch(case["activations"], Z, case["masks"], gradients=case["gradients"], backend=backend)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = scoring_f64.score(case["activations"][:2], Z[:2].astype(np.float64), case["masks"][:2],
                                     gradients=case["gradients"][:2])
    np.testing.assert_allclose(result.entropy[:2], expected["entropy"], atol=1e-6)
    np.testing.assert_allclose(result.score[:2], expected["score"], atol=1e-6)
    assert result.entropy[1] == 0 and result.pred[:2].tolist() == expected["pred"].tolist() and result.pred[1] == 3
    assert np.isnan(result.score[2:]).all() and result.pred[2:].tolist() == [-1, -1]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_prediction_ties_take_lowest_index(backend, rng):
    case = make_case(rng, 2, 4, 3, 3, 3, 9, 9)
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]], dtype=np.float32)
    result = egal.score_batch(case["activations"], logits, case["masks"], weights=case["weights"], backend=backend)
    assert result.pred.tolist() == [0, 1]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_extremes(alpha, rng):
    case = make_case(rng, 4, 8, 7, 7, 3, 20, 20)
    result = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"],
                              alpha=alpha)
    expected = result.entropy_norm if alpha == 1.0 else result.misalignment
    np.testing.assert_allclose(result.score, expected, atol=1e-7)


def test_empty_batch(rng):
    result = egal.score_batch(np.zeros((0, 4, 7, 7), np.float32), np.zeros((0, 3), np.float32),
                              np.zeros((0, 20, 20), np.uint8), weights=np.zeros((0, 4), np.float32))
    assert len(result) == 0


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 4), K=st.integers(1, 40), h=st.integers(1, 12), w=st.integers(1, 12), C=st.integers(2, 12),
    H=st.integers(1, 80), W=st.integers(1, 80), alpha=st.floats(0, 1), use_weights=st.booleans(),
    mask_kind=st.sampled_from(["hard", "soft", "empty"]), seed=st.integers(0, 2**32 - 1),
)
def test_property_any_shape_matches_float64(B, K, h, w, C, H, W, alpha, use_weights, mask_kind, seed):
    rng = np.random.default_rng(seed)
    case = make_case(rng, B, K, h, w, C, H, W, mask_kind)
    source = "weights" if use_weights else "gradients"
    result = egal.score_batch(case["activations"], case["logits"], case["masks"], alpha=alpha,
                              **{source: case[source]})
    expected = scoring_f64.score(case["activations"], case["logits"], case["masks"], alpha=alpha,
                                 **{source: case[source]})
    assert_matches(result, expected, TOLERANCE["float32"])


def test_onnxruntime_ortvalues_are_read_in_place(rng):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    case = make_case(rng, 4, 16, 7, 7, 3, 32, 32)
    expected = egal.score_batch(case["activations"], case["logits"], case["masks"], weights=case["weights"])
    values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in case.items()}
    result = egal.score_batch(values["activations"], values["logits"], values["masks"], weights=values["weights"])
    for name, value in vars(expected).items():
        np.testing.assert_array_equal(getattr(result, name), value, err_msg=name)
    # the same through the PyTorch reference, which borrows the OrtValue's memory too
    ref = egal.score_batch(values["activations"], values["logits"], values["masks"], weights=values["weights"],
                           backend="reference")
    np.testing.assert_allclose(ref.score, expected.score, atol=1e-6)


# The edge cases as docs/scoring.md's table states them.
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_finite_maps_keep_the_entropy_and_non_finite_logits_keep_the_misalignment(backend, rng):
    case = make_case(rng, 3, 8, 5, 5, 3, 20, 20)
    clean = egal.score_batch(case["activations"], case["logits"], case["masks"], gradients=case["gradients"],
                             return_cam=True, backend=backend)
    A, Z = case["activations"].copy(), case["logits"].copy()
    A[0, 2, 1, 1] = np.nan  # sample 0: bad maps
    Z[1, 2] = np.inf  # sample 1: bad logits
    dirty = egal.score_batch(A, Z, case["masks"], gradients=case["gradients"], return_cam=True, backend=backend)
    assert np.isnan(dirty.misalignment[0]) and np.isnan(dirty.score[0]) and np.isnan(dirty.cam[0]).all()
    assert dirty.pred[0] == clean.pred[0]
    np.testing.assert_array_equal(dirty.entropy[0], clean.entropy[0])
    np.testing.assert_array_equal(dirty.entropy_norm[0], clean.entropy_norm[0])
    assert dirty.pred[1] == -1
    assert np.isnan([dirty.entropy[1], dirty.entropy_norm[1], dirty.score[1]]).all()
    np.testing.assert_array_equal(dirty.misalignment[1], clean.misalignment[1])
    np.testing.assert_array_equal(dirty.cam[1], clean.cam[1])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_roi_with_bad_input_scores_nan(backend, rng):
    case = make_case(rng, 2, 8, 5, 5, 3, 20, 20)
    A, Z = case["activations"].copy(), case["logits"].copy()
    A[0, 0, 0, 0] = np.inf
    Z[1, 0] = np.nan
    result = egal.score_batch(A, Z, np.zeros((2, 20, 20), np.uint8), gradients=case["gradients"], backend=backend)
    assert np.isnan(result.misalignment).all() and np.isnan(result.score).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_flat_map_is_zero_and_fully_misaligned(backend, rng):
    case = make_case(rng, 3, 4, 5, 5, 3, 20, 20)
    masks = np.zeros((3, 20, 20), np.uint8)
    masks[:, 5:9, 5:9] = 1  # SM = 16
    constant = np.full((3, 4, 5, 5), 2.0, np.float32)
    weights = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [-1, 0, 0, 0]], np.float32)  # constant > 0, zero, all < 0
    result = egal.score_batch(constant, case["logits"], masks, weights=weights, return_cam=True, backend=backend)
    np.testing.assert_array_equal(result.cam, np.zeros((3, 5, 5), np.float32))
    np.testing.assert_allclose(result.misalignment, 1 - 1e-6 / (16 + 1e-6), rtol=0, atol=1e-7)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_equal_logits_give_entropy_norm_one_and_class_zero(backend, rng):
    case = make_case(rng, 2, 4, 5, 5, 4, 20, 20)
    result = egal.score_batch(case["activations"], np.full((2, 4), 0.7, np.float32), case["masks"],
                              weights=case["weights"], backend=backend)
    assert result.pred.tolist() == [0, 0]
    np.testing.assert_allclose(result.entropy_norm, 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_boxes_that_hold_no_pixel_centre_are_an_empty_roi(backend, rng):
    case = make_case(rng, 3, 4, 5, 5, 3, 8, 8)
    boxes = np.array([[[0.6, 0.6, 1.4, 1.4]],  # between the centres 0.5 and 1.5
                      [[8.5, 0, 12, 8]],  # right of the grid
                      [[np.nan, np.nan, np.nan, np.nan]]], np.float32)
    result = egal.score_batch(case["activations"], case["logits"], boxes=boxes, roi_size=(8, 8),
                              weights=case["weights"], backend=backend)
    assert np.isnan(result.misalignment).all()
    np.testing.assert_array_equal(result.score, result.entropy_norm)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_torch_tensors_negated_lazily_score_as_their_values(backend, rng):
    # x.conj().imag is a view with torch's negative bit set: DLPack carries no such bit, and the fused scorer read
    # the memory un-negated (silently other scores).
    case = make_case(rng, 3, 4, 5, 6, 3, 20, 30)
    lazy = torch.complex(torch.zeros(3, 4, 5, 6), -torch.from_numpy(case["activations"])).conj().imag
    assert lazy.is_neg()
    result = egal.score_batch(lazy, case["logits"], case["masks"], gradients=case["gradients"], backend=backend)
    expected = scoring_f64.score(case["activations"], case["logits"], case["masks"], gradients=case["gradients"])
    assert_matches(result, expected, TOLERANCE["float32"])
