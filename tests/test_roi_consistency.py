"""The Dice sums' consistency check (cpp/src/score_math.h, dice_sums_consistent): a ProjectedROI whose weights are
no projection of masks in [0, 1] is refused where it would put the misalignment outside [0, 1], and no valid ROI
ever is, not even where I meets min(SU, SM) exactly: a mask of ones (I = SU) or a mask inside a map at 1 (I = SM).
The CUDA kernels' side is tests/cuda_emulation/score_against_cpu.cpp (and tests/test_scorer_cuda.py on a GPU)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import egal
from cases import SHAPES
from conftest import CPU_BACKENDS
from roi_cases import INCONSISTENT, ROI_FORMS, TIGHT, has_plateau, inconsistent_roi, roi_arguments, tight_case

# The grids of the scorer tests, and larger ROIs: (h, w, H, W)
GRIDS = {name: shape[2:4] + shape[5:7] for name, shape in SHAPES.items()} | {
    "7x7-to-512": (7, 7, 512, 512), "14x14-to-224": (14, 14, 224, 224), "2x3-to-512x384": (2, 3, 512, 384)}


def assert_accepted(case, roi, backend):
    result = egal.score_batch(case["activations"], case["logits"], weights=case["weights"], backend=backend, **roi)
    # Rounding alone keeps D within a hair of [0, 1], far inside what the check lets through (D >= -2e-4).
    assert np.nanmin(result.misalignment) >= -1e-6 and np.nanmax(result.misalignment) <= 1


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("form", ROI_FORMS)
@pytest.mark.parametrize("kind", TIGHT)
@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
def test_valid_rois_whose_intersection_meets_its_bound_are_accepted(backend, form, kind, grid, rng):
    h, w, H, W = grid
    if kind != "ones" and not has_plateau(h, w, H, W):
        pytest.skip("every pixel reads cell (0, 0): no mask inside the plateau")
    case = tight_case(rng, 3, h, w, H, W, kind)
    assert_accepted(case, roi_arguments(case, form, rng, (h, w)), backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("features", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", TIGHT)
def test_half_precision_maps_and_a_large_batch_are_accepted(backend, features, kind, rng):
    case = tight_case(rng, 300, 7, 7, 224, 224, kind, features)
    for form in ("uint8", "projected"):
        assert_accepted(case, roi_arguments(case, form, rng, (7, 7)), backend)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 16), w=st.integers(1, 16), H=st.integers(1, 300), W=st.integers(1, 300),
       kind=st.sampled_from(TIGHT), form=st.sampled_from(ROI_FORMS), features=st.sampled_from(["float32", "float16"]),
       seed=st.integers(0, 2**32 - 1))
def test_property_valid_rois_are_never_refused(h, w, H, W, kind, form, features, seed):
    if kind != "ones" and not has_plateau(h, w, H, W):
        kind = "ones"
    rng = np.random.default_rng(seed)
    case = tight_case(rng, 2, h, w, H, W, kind, features)
    for backend in CPU_BACKENDS:
        assert_accepted(case, roi_arguments(case, form, rng, (h, w)), backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("which", INCONSISTENT)
def test_a_projected_roi_inconsistent_with_its_area_is_refused(backend, which, rng):
    A, roi = inconsistent_roi(rng, which)
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    weights = np.ones((4, 8), np.float32)
    with pytest.raises(egal.EgalError, match=r"consistent with area.*sample 2 is not$"):
        egal.score_batch(A, logits, roi=roi, weights=weights, backend=backend)
    kept = np.array([0, 1, 3])  # the other samples are scored as usual
    result = egal.score_batch(A[kept], logits[kept], roi=roi[kept], weights=weights[kept], backend=backend)
    assert ((result.misalignment >= 0) & (result.misalignment <= 1)).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("which", INCONSISTENT)
def test_an_inconsistent_roi_under_a_flat_or_non_finite_map_is_scored(backend, which, rng):
    # The check judges the sums: under a flat map (0 everywhere: I = SU = 0, D = 1 - eps / (SM + eps)) they keep
    # D in [0, 1] whatever the weights, and a map that is not finite has none to judge (its score is NaN).
    A, roi = inconsistent_roi(rng, which)
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    A[2] = 1.0
    flat = egal.score_batch(A, logits, roi=roi, weights=np.ones((4, 8), np.float32), backend=backend)
    assert 0.999 < flat.misalignment[2] <= 1
    A[2, 0, 0, 0] = np.nan
    poisoned = egal.score_batch(A, logits, roi=roi, weights=np.ones((4, 8), np.float32), backend=backend)
    assert np.isnan(poisoned.score[2]) and np.isnan(poisoned.misalignment[2])
