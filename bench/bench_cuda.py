"""GPU: the fused CUDA kernel against the PyTorch reference running on the same GPU.

In one run: "fused" (the CUDA backend as shipped: masks and boxes projected onto the map's grid first, a mask
column a thread; small maps' channels in tiles, large maps in blocks of cells), its other passes (IMPLS: the map
pass that the cell blocks replaced, a warp per channel; the per-pixel ROI pass that the projection replaced,
float32 only; the projection with four mask columns a thread) and "reference" (egal.reference in PyTorch).
Masks are one lesion-sized blob per image, or the same number of scattered pixels ("scattered", float32 only): the
projection's cost must not depend on which.

    python -m pytest bench/bench_cuda.py --benchmark-only --benchmark-json=cuda.json
    python bench/report_scorer.py --from-json cuda.json   # same table as the CPU run

Skips without a GPU. A device-to-device copy in the same run gives the bandwidth floor.
"""
import pytest

import egal

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not (egal.backends()["cuda"]["available"] and torch.cuda.is_available()),
                                reason="no usable CUDA GPU")

LAYERS = [("densenet121-block4", 1024, 7, 7, 224, 224), ("32ch-56x56", 32, 56, 56, 224, 224),
          ("32ch-224x224", 32, 224, 224, 224, 224)]


def _case(layer, B, dtype):
    _, K, h, w, H, W = layer
    g = torch.Generator(device="cuda").manual_seed(0)
    tdtype = getattr(torch, dtype)
    A = torch.rand((B, K, h, w), device="cuda", generator=g).to(tdtype)
    G = torch.randn((B, K, h, w), device="cuda", generator=g).to(tdtype)
    Z = torch.randn((B, 3), device="cuda", generator=g)
    masks = torch.zeros((B, H, W), dtype=torch.uint8, device="cuda")
    masks[:, 60:100, 80:128] = 1
    blob_pixels = 40 * 48
    scattered = torch.zeros((B, H * W), dtype=torch.uint8, device="cuda")
    scattered[:, torch.randperm(H * W, device="cuda", generator=g)[:blob_pixels]] = 1
    boxes = torch.full((B, 2, 4), float("nan"), device="cuda")
    boxes[:, 0] = torch.tensor([80.0, 60.0, 128.0, 100.0], device="cuda")
    return dict(activations=A, gradients=G, logits=Z, masks=masks, scattered=scattered.view(B, H, W), boxes=boxes)


# The CUDA backend's implementations: (ROI pass, map pass).
IMPLS = {"fused": ("projection", "cell-blocks"), "fused-channel-warps": ("projection", "channel-warps"),
         "fused-per-pixel": ("per-pixel", "channel-warps"),
         "fused-vector-projection": ("vector-projection", "cell-blocks")}


@pytest.fixture
def cuda_passes(impl):
    core = egal._core
    previous = core.cuda_roi_pass(), core.cuda_map_pass()
    roi_pass, map_pass = IMPLS.get(impl, IMPLS["fused"])
    core.set_cuda_roi_pass(roi_pass)
    core.set_cuda_map_pass(map_pass)
    yield
    core.set_cuda_roi_pass(previous[0])
    core.set_cuda_map_pass(previous[1])


@pytest.mark.parametrize("roi", ["masks", "scattered", "boxes"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("B", [256, 4096])
@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
@pytest.mark.parametrize("impl", [*IMPLS, "reference"])
def test_score_batch_cuda(benchmark, cuda_passes, impl, layer, B, dtype, roi):
    if layer[0] == "32ch-224x224" and B == 4096:
        pytest.skip("26 GB of float32 maps")
    if dtype != "float32" and (impl == "fused-per-pixel" or roi == "scattered"):
        pytest.skip("the per-pixel pass and scattered masks are compared in float32")
    case = _case(layer, B, dtype)
    kwargs = {"boxes": case["boxes"], "roi_size": (224, 224)} if roi == "boxes" else {"masks": case[roi]}
    backend = "reference" if impl == "reference" else "cuda"
    nbytes = sum(case[k].numel() * case[k].element_size() for k in ("activations", "gradients", "logits"))
    nbytes += sum(v.numel() * v.element_size() for v in kwargs.values() if hasattr(v, "numel"))
    benchmark.group = f"{layer[0]} B={B} {dtype} gradients {roi}"
    benchmark.extra_info.update(impl=impl, layer=layer[0], B=B, dtype=dtype, source="gradients", roi=roi,
                                bytes_read=nbytes)
    fn = lambda: egal.score_batch(case["activations"], case["logits"], gradients=case["gradients"],  # noqa: E731
                                  backend=backend, **kwargs)
    benchmark.pedantic(fn, rounds=10, warmup_rounds=2)


def test_memory_copy_bandwidth(benchmark):
    src = torch.ones(1 << 28, device="cuda")
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)
        torch.cuda.synchronize()

    benchmark.group = "memory bandwidth"
    # "numpy-copy" is the name report_scorer.py looks for in every run, CPU or GPU; "copy" says which it was
    benchmark.extra_info.update(impl="numpy-copy", copy="device-to-device copy", bytes_moved=2 * src.numel() * 4)
    benchmark.pedantic(copy, rounds=10, warmup_rounds=2)
