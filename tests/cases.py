"""Random inputs for the scorer tests."""
import numpy as np

# Scores lie in [0, 1]; these bound |backend - float64| per input dtype. The
# maps are accumulated in float32 whatever the input dtype, and the float64
# reference reads the same (already rounded) half-precision values, so the
# half-precision bounds only add headroom for float32 rounding of larger sums.
TOLERANCE = {"float32": 2e-5, "float16": 5e-5, "bfloat16": 5e-5}

# (B, K, h, w, C, H, W): the shapes every backend is checked at against the float64 definition
SHAPES = {
    "B1-K1-7x7-to-224": (1, 1, 7, 7, 2, 224, 224),
    "K1024-densenet": (4, 1024, 7, 7, 3, 224, 224),
    "h!=w-C100-nonmultiple": (3, 32, 5, 9, 100, 37, 61),
    "downsampling": (2, 16, 14, 10, 2, 9, 6),
    "1x1-map": (2, 8, 1, 1, 2, 10, 10),
    "same-size": (5, 64, 28, 28, 4, 28, 28),
    "1x1-roi": (2, 4, 3, 4, 5, 1, 1),
}
MASK_KINDS = ["hard", "bool", "soft", "sparse", "empty"]


def make_masks(rng, B, H, W, kind):
    if kind == "hard":
        return (rng.random((B, H, W)) < 0.3).astype(np.uint8)
    if kind == "bool":
        return rng.random((B, H, W)) < 0.3
    if kind == "soft":
        return rng.random((B, H, W)).astype(np.float32)
    if kind == "sparse":  # a small blob, as expert tumour masks are
        masks = np.zeros((B, H, W), dtype=np.uint8)
        for b in range(B):
            y, x = rng.integers(0, H), rng.integers(0, W)
            masks[b, y : y + max(1, H // 6), x : x + max(1, W // 6)] = 1
        return masks
    if kind == "empty":
        masks = (rng.random((B, H, W)) < 0.3).astype(np.uint8)
        masks[::2] = 0  # every other sample has no ROI
        return masks
    raise ValueError(kind)


def make_case(rng, B, K, h, w, C, H, W, mask_kind="hard"):
    return dict(
        activations=np.abs(rng.standard_normal((B, K, h, w))).astype(np.float32),
        gradients=rng.standard_normal((B, K, h, w)).astype(np.float32),
        weights=rng.standard_normal((B, K)).astype(np.float32),
        logits=(3 * rng.standard_normal((B, C))).astype(np.float32),
        masks=make_masks(rng, B, H, W, mask_kind),
    )


def make_boxes(rng, B, N, H, W):
    """Overlapping, partly out-of-range boxes with NaN and x1 <= x0 padding rows."""
    x0 = rng.uniform(-0.2 * W, W, (B, N))
    y0 = rng.uniform(-0.2 * H, H, (B, N))
    x1 = x0 + rng.uniform(0, 0.7 * W, (B, N))
    y1 = y0 + rng.uniform(0, 0.7 * H, (B, N))
    boxes = np.stack([x0, y0, x1, y1], axis=-1).astype(np.float32)
    boxes[:, -1] = np.nan  # padding
    if N > 2:
        boxes[:, -2, 2] = boxes[:, -2, 0] - 1  # x1 <= x0: padding too
    return boxes


def assert_matches(result, expected, atol, fields=("entropy", "entropy_norm", "misalignment", "score")):
    for name in fields:
        got = np.asarray(getattr(result, name), dtype=np.float64)
        want = np.asarray(expected[name], dtype=np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaN pattern of {name}")
        np.testing.assert_allclose(got, want, rtol=0, atol=atol, equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(result.pred, expected["pred"])
