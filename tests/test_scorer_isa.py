"""The CPU kernels in every vector instruction set this CPU can run, against the float64
implementation of docs/scoring.md.

The mask pass (cpp/src/mask_projection_cpu.cpp) and the raw map (cpp/src/raw_map_cpu.cpp)
are compiled three times, for baseline x86-64, AVX2 and AVX-512, and the widest the CPU has
runs (cpp/src/cpu_isa.h). Each variant is checked here, not only the widest: on the edges of
the mask pass (byte masks' chunks of rows, bands longer than a chunk, rows that are not a multiple of
the four taken at once, the largest sums a valid chunk and band hold; float rows with and without a
tail past the last full vector; long bands of rows), every mask dtype and
layout, its [0, 1] check wherever the bad value sits, and the raw
map for every activation dtype.
"""
import numpy as np
import pytest

import egal
import scoring_f64
from cases import TOLERANCE, assert_matches

_core = egal._core
ORDER = ("baseline", "avx2", "avx512")
ISAS = ORDER[: ORDER.index(_core.best_cpu_isa()) + 1]


@pytest.fixture(params=ISAS)
def isa(request):
    previous = _core.cpu_isa()
    _core.set_cpu_isa(request.param)
    yield request.param
    _core.set_cpu_isa(previous)


def _masks(rng, kind, B, H, W):
    """Masks of every stored form the scorer reads: (masks as passed, their values as float64)."""
    hard = rng.random((B, H, W)) < 0.3
    soft = rng.random((B, H, W), dtype=np.float32)
    if kind == "uint8":
        m = hard.astype(np.uint8)
    elif kind == "bool":
        m = hard
    elif kind == "float32":
        m = soft
    elif kind == "float16":
        m = soft.astype(np.float16)
    elif kind == "uint8-strided":  # every other column of a wider array
        wide = np.zeros((B, H, 2 * W), dtype=np.uint8)
        wide[:, :, ::2] = hard
        m = wide[:, :, ::2]
    elif kind in ("float32-rows-padded", "float16-rows-padded"):  # contiguous rows, with a gap between rows
        wide = np.zeros((B, H, W + 3), dtype=kind[:7])
        wide[:, :, :W] = soft
        m = wide[:, :, :W]
    elif kind == "float16-rows-reversed":  # a negative row stride
        m = soft.astype(np.float16)[:, ::-1, :]
    elif kind == "float16-strided":  # every other column of a wider array
        wide = np.zeros((B, H, 2 * W), dtype=np.float16)
        wide[:, :, ::2] = soft
        m = wide[:, :, ::2]
    else:
        raise ValueError(kind)
    return m, np.asarray(m, dtype=np.float64)


KINDS = ["uint8", "bool", "float32", "float16", "uint8-strided", "float32-rows-padded", "float16-rows-padded",
         "float16-rows-reversed", "float16-strided"]
# (H, W, h, w): rows with and without a remainder past the last full vector, narrow masks, bands of
# 32 rows (a chunk of 20 and one of 12), of 21 and 23 rows (a chunk, then 1 or 3 rows that are not
# four), one-pixel maps and masks, maps larger than the mask, and bands longer than the 64 rows a band
# may hold.
GEOMETRIES = [
    pytest.param((224, 224, 7, 7), id="224-to-7"),
    pytest.param((224, 224, 56, 56), id="224-to-56"),
    pytest.param((37, 61, 5, 9), id="37x61-to-5x9"),
    pytest.param((20, 129, 3, 4), id="W129"),
    pytest.param((9, 13, 2, 3), id="W13"),
    pytest.param((6, 5, 2, 2), id="W5"),
    pytest.param((1, 1, 3, 4), id="1x1-mask"),
    pytest.param((17, 19, 1, 1), id="1x1-map"),
    pytest.param((9, 6, 14, 10), id="map-larger"),
    pytest.param((600, 40, 3, 2), id="long-bands"),
    pytest.param((84, 50, 4, 3), id="bands-of-21-rows"),
    pytest.param((69, 70, 3, 5), id="bands-of-23-rows"),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("kind", KINDS)
def test_projection_matches_the_dense_operator(isa, kind, geometry, rng):
    H, W, h, w = geometry
    masks, values = _masks(rng, kind, 3, H, W)
    roi = egal.project_roi(masks, cam_size=(h, w))
    expected = scoring_f64.upsample_operator(H, h).T @ values @ scoring_f64.upsample_operator(W, w)
    np.testing.assert_allclose(roi.weights, expected, rtol=2e-6, atol=2e-6 * max(1.0, H * W / (h * w)))
    if kind in ("uint8", "bool", "uint8-strided"):
        np.testing.assert_array_equal(roi.area, values.sum(axis=(1, 2)))  # integer masks: the area is exact
    else:
        np.testing.assert_allclose(roi.area, values.sum(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("kind", KINDS)
def test_scores_match_float64(isa, kind, geometry, rng):
    H, W, h, w = geometry
    B, K = 3, 6
    masks, values = _masks(rng, kind, B, H, W)
    masks[..., :1, :] = 0  # a mask row of zeros, and a sample with no ROI at all
    values[..., :1, :] = 0
    masks[1] = 0
    values[1] = 0
    A = np.abs(rng.standard_normal((B, K, h, w))).astype(np.float32)
    G = rng.standard_normal((B, K, h, w)).astype(np.float32)
    Z = (3 * rng.standard_normal((B, 3))).astype(np.float32)
    result = egal.score_batch(A, Z, masks, gradients=G, alpha=0.3)
    expected = scoring_f64.score(A, Z, values, gradients=G, alpha=0.3)
    assert_matches(result, expected, TOLERANCE["float32"])


# Where a bad value sits: first column, last column (past the last full vector of a row of 150), the
# middle, the last row.
POSITIONS = {"first": (0, 0), "last-column": (3, -1), "middle": (10, 100), "last-row": (-1, 57)}
BAD_VALUES = {
    "uint8": [2, 255],
    "float32": [np.nan, -0.5, 1.5, np.inf, -np.inf],
    "float16": [np.nan, -0.25, 1.5, np.inf, -np.inf, np.float16(6e-8) * -1],  # the last: the smallest negative half
}


@pytest.mark.parametrize("position", sorted(POSITIONS))
@pytest.mark.parametrize("dtype", sorted(BAD_VALUES))
def test_a_value_outside_0_1_is_refused_wherever_it_is(isa, dtype, position, rng):
    masks = (rng.random((3, 40, 150)) < 0.3).astype(dtype)
    A = np.abs(rng.standard_normal((3, 4, 7, 7))).astype(np.float32)
    G = rng.standard_normal((3, 4, 7, 7)).astype(np.float32)
    Z = rng.standard_normal((3, 3)).astype(np.float32)
    y, x = POSITIONS[position]
    for bad in BAD_VALUES[dtype]:
        broken = masks.copy()
        broken[2, y, x] = bad
        with pytest.raises(ValueError, match=r"masks must hold values in \[0, 1\].*sample 2 does not"):
            egal.score_batch(A, Z, broken, gradients=G)
        with pytest.raises(ValueError, match="sample 2"):
            egal.project_roi(broken, cam_size=(7, 7))


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", ["uint8", "bool"])
def test_a_mask_of_ones_is_projected_exactly(isa, dtype, geometry):
    """All ones fills the byte lanes to their largest valid sums (a chunk's running sum, a band's
    sum of k M[k]), which wrap if a chunk or a band is longer than the lanes allow."""
    H, W, h, w = geometry
    masks = np.ones((2, H, W), dtype=dtype)
    masks[1, ::2] = 0  # every other row: the ramps of a band differ from its sums
    values = masks.astype(np.float64)
    roi = egal.project_roi(masks, cam_size=(h, w))
    expected = scoring_f64.upsample_operator(H, h).T @ values @ scoring_f64.upsample_operator(W, w)
    np.testing.assert_allclose(roi.weights, expected, rtol=2e-6, atol=2e-6 * max(1.0, H * W / (h * w)))
    np.testing.assert_array_equal(roi.area, values.sum(axis=(1, 2)))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_negative_zero_and_one_are_valid_mask_values(isa, dtype, rng):
    masks = np.zeros((2, 30, 70), dtype=dtype)
    masks[0, :, :35] = -0.0
    masks[0, :, 66:] = -0.0  # in the last columns, past the last full vector
    masks[0, 5:9, 40:50] = 1.0
    masks[1, 2, 3] = np.finfo(dtype).smallest_subnormal  # tiny but positive: not empty
    roi = egal.project_roi(masks, cam_size=(7, 7))
    assert roi.area[0] == 40.0 and roi.area[1] > 0


ACTIVATION_DTYPES = ["float32", "float16", "bfloat16"]


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("source", ["gradients", "weights"])
@pytest.mark.parametrize("dtype", ACTIVATION_DTYPES)
def test_raw_map_matches_float64(isa, dtype, source, layout, rng):
    torch = pytest.importorskip("torch")
    B, K, h, w = 3, 37, 7, 9
    A = torch.from_numpy(np.abs(rng.standard_normal((B, K, h, w))).astype(np.float32)).to(getattr(torch, dtype))
    G = torch.from_numpy(rng.standard_normal((B, K, h, w)).astype(np.float32)).to(A.dtype)
    Wt = torch.from_numpy(rng.standard_normal((B, K)).astype(np.float32)).to(A.dtype)
    if layout == "strided":  # every other channel and column of larger arrays
        A = torch.repeat_interleave(torch.repeat_interleave(A, 2, dim=1), 2, dim=3)[:, ::2, :, ::2]
        G = torch.repeat_interleave(torch.repeat_interleave(G, 2, dim=1), 2, dim=3)[:, ::2, :, ::2]
        assert not A.is_contiguous()
    Z = torch.from_numpy((3 * rng.standard_normal((B, 3))).astype(np.float32))
    masks = (rng.random((B, 50, 60)) < 0.3).astype(np.uint8)
    given = {"gradients": G} if source == "gradients" else {"weights": Wt}
    result = egal.score_batch(A, Z, masks, **given)
    as64 = {k: v.double().numpy() for k, v in given.items()}
    expected = scoring_f64.score(A.double().numpy(), Z.double().numpy(), masks, **as64)
    assert_matches(result, expected, TOLERANCE[dtype])


# Map sizes around the raw map's register-held maps (8 to 71 values, float32 and float16: 7 x 7 at
# DenseNet-121's last block), below and above them, with and without a remainder past the last full vector.
MAP_SIZES = [(2, 2), (1, 8), (3, 5), (7, 7), (8, 8), (7, 10), (8, 9), (9, 9), (14, 14)]


@pytest.mark.parametrize("source", ["gradients", "weights"])
@pytest.mark.parametrize("map_size", MAP_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_float16_inputs_score_exactly_as_their_float32_widening(isa, map_size, source, rng):
    """The float16 paths widen inside the arithmetic and keep the float32 path's operations in its order,
    so their numbers are the float32 path's on the widened values, bit for bit (cpp/src/half_cpu.h,
    cpp/src/raw_map_registers_cpu.h)."""
    (h, w), B, K = map_size, 3, 37
    A = np.abs(rng.standard_normal((B, K, h, w))).astype(np.float16)
    given = rng.standard_normal((B, K, h, w) if source == "gradients" else (B, K)).astype(np.float16)
    Z = rng.standard_normal((B, 3)).astype(np.float32)
    masks = rng.random((B, 40, 40)) < 0.3
    half = egal.score_batch(A, Z, masks, **{source: given}, return_cam=True)
    widened = egal.score_batch(A.astype(np.float32), Z, masks, **{source: given.astype(np.float32)}, return_cam=True)
    np.testing.assert_array_equal(half.cam, widened.cam)
    np.testing.assert_array_equal(half.score, widened.score)


@pytest.mark.parametrize("source", ["gradients", "weights"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("map_size", MAP_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_contiguous_and_strided_planes_give_the_same_numbers(isa, map_size, dtype, source, rng):
    """Contiguous planes take the kernel's fast paths (small maps held in registers with AVX2), planes
    with strided columns the general loop; both do the same operations in the same order, bit for bit."""
    (h, w), B, K = map_size, 3, 37
    A = np.abs(rng.standard_normal((B, K, h, w))).astype(dtype)
    given = rng.standard_normal((B, K, h, w) if source == "gradients" else (B, K)).astype(dtype)
    Z = rng.standard_normal((B, 3)).astype(np.float32)
    masks = rng.random((B, 40, 40)) < 0.3

    def strided(x):  # the same values, every other column of a wider array
        wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]

    fast = egal.score_batch(A, Z, masks, **{source: given}, return_cam=True)
    general = egal.score_batch(strided(A), Z, masks, **{source: strided(given) if given.ndim == 4 else given},
                               return_cam=True)
    np.testing.assert_array_equal(fast.cam, general.cam)
    np.testing.assert_array_equal(fast.score, general.score)


def test_the_backends_report_the_instruction_set(isa):
    assert egal.backends()["cpu"]["isa"] == isa == _core.cpu_isa()


def test_an_unknown_or_unsupported_instruction_set_is_refused():
    with pytest.raises(ValueError, match="unknown instruction set 'sse9'"):
        _core.set_cpu_isa("sse9")
    if _core.best_cpu_isa() != "avx512":
        with pytest.raises(ValueError, match="does not support avx512"):
            _core.set_cpu_isa("avx512")
    assert _core.cpu_isa() == _core.best_cpu_isa()
