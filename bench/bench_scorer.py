"""The fused scorer (C++ CPU backend) against the pure-Python PyTorch reference.

Run: python bench/report_scorer.py  (runs this file under pytest-benchmark and
writes the table with ratios and the memory-bandwidth floor), or directly:
    python -m pytest bench/bench_scorer.py --benchmark-only

Every case runs both implementations on the same inputs in one run. A third
benchmark times a large numpy copy in the same run: its bandwidth turns each
case's bytes-that-must-be-read into a floor time.
"""
import numpy as np
import pytest
import torch

import egal

# (name, K, h, w, H, W): DenseNet-121's last block, and a 32-channel layer.
LAYERS = [("densenet121-block4", 1024, 7, 7, 224, 224), ("32ch-56x56", 32, 56, 56, 224, 224)]
BATCHES = [64, 256]
DTYPES = ["float32", "float16"]
SOURCES = ["gradients", "weights"]
ROIS = ["masks", "boxes", "cached"]
COPY_BYTES = 1 << 29


def _case(layer, B, dtype, seed=0):
    _, K, h, w, H, W = layer
    rng = np.random.default_rng(seed)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    A = np.abs(rng.standard_normal((B, K, h, w), dtype=np.float32)).astype(np_dtype)
    G = rng.standard_normal((B, K, h, w), dtype=np.float32).astype(np_dtype)
    Wt = rng.standard_normal((B, K), dtype=np.float32).astype(np_dtype)
    Z = rng.standard_normal((B, 3), dtype=np.float32)
    masks = np.zeros((B, H, W), dtype=np.uint8)  # one lesion-sized blob each, as in real ROI masks
    boxes = np.full((B, 2, 4), np.nan, dtype=np.float32)
    for b in range(B):
        y, x = rng.integers(0, H - 48), rng.integers(0, W - 48)
        masks[b, y : y + 40, x : x + 48] = 1
        boxes[b, 0] = (x, y, x + 48, y + 40)
    return dict(activations=A, gradients=G, weights=Wt, logits=Z, masks=masks, boxes=boxes)


def bytes_read(case, source, roi):
    n = case["activations"].nbytes + case[source].nbytes + case["logits"].nbytes
    if roi == "masks":
        n += case["masks"].nbytes
    elif roi == "boxes":
        n += case["boxes"].nbytes
    else:
        B, _, h, w = case["activations"].shape
        n += B * h * w * 4 + B * 4
    return n


def _call(case, source, roi, backend, projected):
    kwargs = {source: case[source]}
    if roi == "masks":
        kwargs["masks"] = case["masks"]
    elif roi == "boxes":
        kwargs["boxes"], kwargs["roi_size"] = case["boxes"], case["masks"].shape[1:]
    else:
        kwargs["roi"] = projected
    return lambda: egal.score_batch(case["activations"], case["logits"], backend=backend, **kwargs)


@pytest.mark.parametrize("roi", ROIS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_score_batch(benchmark, impl, layer, B, dtype, source, roi):
    if roi == "cached" and (source, dtype) != ("gradients", "float32"):
        pytest.skip("the cached-projection case is reported for float32 gradients only")
    case = _case(layer, B, dtype)
    torch.set_num_threads(egal.backends()["cpu"]["threads"])  # both sides use every core
    projected = None
    if roi == "cached":
        _, _, h, w, _, _ = layer
        projected = egal.project_roi(case["masks"], cam_size=(h, w))
        if impl == "reference":
            projected = egal.ProjectedROI(torch.from_numpy(projected.weights), torch.from_numpy(projected.area),
                                          projected.roi_size)
    fn = _call(case, source, roi, "cpu" if impl == "fused" else "reference", projected)
    benchmark.group = f"{layer[0]} B={B} {dtype} {source} {roi}"
    benchmark.extra_info.update(impl=impl, layer=layer[0], B=B, dtype=dtype, source=source, roi=roi,
                                bytes_read=bytes_read(case, source, roi))
    result = benchmark.pedantic(fn, rounds=7 if impl == "fused" else 3, warmup_rounds=1)
    assert np.isfinite(result.score).all()


def test_memory_copy_bandwidth(benchmark):
    """Bandwidth of a large numpy copy, in the same run: read + write bytes per second."""
    src = np.ones(COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    benchmark.group = "memory bandwidth"
    benchmark.extra_info.update(impl="numpy-copy", bytes_moved=2 * src.nbytes)
    benchmark.pedantic(lambda: np.copyto(dst, src), rounds=7, warmup_rounds=1)
