"""The fused scorer (C++ CPU backend) against the pure-Python PyTorch reference.

Run: python bench/report_scorer.py  (runs this file under pytest-benchmark and
writes the table with ratios and the memory-bandwidth floor), or directly:
    python -m pytest bench/bench_scorer.py --benchmark-only

Every case runs both implementations on the same inputs in one run. A third
benchmark times a large numpy copy in the same run: its bandwidth turns each
case's bytes-that-must-be-read into a floor time.

ROIs: three kinds of 224 x 224 masks, so that a scorer whose speed depends on what
a mask holds shows it: one lesion-sized blob per image (uint8), 10 % scattered
pixels (uint8, the same bytes), and soft float32 masks (four times the bytes);
then the blob as a box, and the blob projected once with egal.project_roi ("cached").

EGAL_BENCH_CPU_ISA=avx2 (or baseline) runs the fused scorer's CPU kernels in that
instruction set instead of the widest this CPU has (cpp/src/cpu_isa.h).
"""
import os

import numpy as np
import pytest
import torch

import egal

# (name, K, h, w, H, W): DenseNet-121's last block, and a 32-channel layer.
LAYERS = [("densenet121-block4", 1024, 7, 7, 224, 224), ("32ch-56x56", 32, 56, 56, 224, 224)]
BATCHES = [64, 256]
DTYPES = ["float32", "float16"]
SOURCES = ["gradients", "weights"]
MASKS = ["blob", "scattered", "soft"]
ROIS = [*MASKS, "boxes", "cached"]
COPY_BYTES = 1 << 29


@pytest.fixture(scope="module", autouse=True)
def cpu_isa():
    name = os.environ.get("EGAL_BENCH_CPU_ISA")
    if name:
        egal._core.set_cpu_isa(name)
    yield egal._core.cpu_isa()


def _rois(rng, B, H, W):
    """The three kinds of masks, and the blob as a box."""
    blob = np.zeros((B, H, W), dtype=np.uint8)  # one lesion-sized blob each, as in real ROI masks
    boxes = np.full((B, 2, 4), np.nan, dtype=np.float32)
    for b in range(B):
        y, x = rng.integers(0, H - 48), rng.integers(0, W - 48)
        blob[b, y : y + 40, x : x + 48] = 1
        boxes[b, 0] = (x, y, x + 48, y + 40)
    scattered = (rng.random((B, H, W), dtype=np.float32) < 0.1).astype(np.uint8)
    soft = rng.random((B, H, W), dtype=np.float32)
    return dict(blob=blob, scattered=scattered, soft=soft, boxes=boxes)


def _case(layer, B, dtype, seed=0):
    _, K, h, w, H, W = layer
    rng = np.random.default_rng(seed)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    A = np.abs(rng.standard_normal((B, K, h, w), dtype=np.float32)).astype(np_dtype)
    G = rng.standard_normal((B, K, h, w), dtype=np.float32).astype(np_dtype)
    Wt = rng.standard_normal((B, K), dtype=np.float32).astype(np_dtype)
    Z = rng.standard_normal((B, 3), dtype=np.float32)
    return dict(activations=A, gradients=G, weights=Wt, logits=Z, **_rois(rng, B, H, W))


def bytes_read(case, source, roi):
    n = case["activations"].nbytes + case[source].nbytes + case["logits"].nbytes
    if roi in MASKS:
        n += case[roi].nbytes
    elif roi == "boxes":
        n += case["boxes"].nbytes
    else:
        B, _, h, w = case["activations"].shape
        n += B * h * w * 4 + B * 4
    return n


def _call(case, source, roi, backend, projected):
    kwargs = {source: case[source]}
    if roi in MASKS:
        kwargs["masks"] = case[roi]
    elif roi == "boxes":
        kwargs["boxes"], kwargs["roi_size"] = case["boxes"], case["blob"].shape[1:]
    else:
        kwargs["roi"] = projected
    return lambda: egal.score_batch(case["activations"], case["logits"], backend=backend, **kwargs)


@pytest.mark.parametrize("roi", ROIS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_score_batch(benchmark, cpu_isa, impl, layer, B, dtype, source, roi):
    if roi == "cached" and (source, dtype) != ("gradients", "float32"):
        pytest.skip("the cached-projection case is reported for float32 gradients only")
    case = _case(layer, B, dtype)
    threads = egal.backends()["cpu"]["threads"]
    torch.set_num_threads(threads)  # both sides use every core (or, with OMP_NUM_THREADS=1, one)
    projected = None
    if roi == "cached":
        _, _, h, w, _, _ = layer
        projected = egal.project_roi(case["blob"], cam_size=(h, w))
        if impl == "reference":
            projected = egal.ProjectedROI(torch.from_numpy(projected.weights), torch.from_numpy(projected.area),
                                          projected.roi_size)
    fn = _call(case, source, roi, "cpu" if impl == "fused" else "reference", projected)
    benchmark.group = f"{layer[0]} B={B} {dtype} {source} {roi}"
    benchmark.extra_info.update(impl=impl, layer=layer[0], B=B, dtype=dtype, source=source, roi=roi,
                                bytes_read=bytes_read(case, source, roi), cpu_isa=cpu_isa, threads=threads)
    result = benchmark.pedantic(fn, rounds=7 if impl == "fused" else 3, warmup_rounds=1)
    assert np.isfinite(result.score).all()


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_mask_pass(benchmark, cpu_isa, impl, mask):
    """The mask pass alone: 256 masks of 224 x 224 projected onto a 7 x 7 grid (egal.project_roi against
    the reference's einsum in PyTorch). Its cost should not depend on what the masks hold."""
    from egal import reference

    _, _, h, w, H, W = LAYERS[0]
    masks = _rois(np.random.default_rng(0), 256, H, W)[mask]
    threads = egal.backends()["cpu"]["threads"]
    torch.set_num_threads(threads)
    project, given = (egal.project_roi, masks) if impl == "fused" else (reference.project_roi, torch.from_numpy(masks))

    def fn():
        return project(given, cam_size=(h, w))

    benchmark.group = f"mask pass {mask}"
    benchmark.extra_info.update(impl=f"mask-pass-{impl}", mask=mask, bytes_read=masks.nbytes, cpu_isa=cpu_isa,
                                threads=threads)
    benchmark.pedantic(fn, rounds=15 if impl == "fused" else 3, warmup_rounds=1)


def test_memory_copy_bandwidth(benchmark):
    """Bandwidth of a large numpy copy, in the same run: read + write bytes per second."""
    src = np.ones(COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    benchmark.group = "memory bandwidth"
    benchmark.extra_info.update(impl="numpy-copy", bytes_moved=2 * src.nbytes)
    benchmark.pedantic(lambda: np.copyto(dst, src), rounds=7, warmup_rounds=1)
