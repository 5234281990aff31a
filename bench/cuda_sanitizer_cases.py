"""Boundary-shape batches for compute-sanitizer (memcheck, racecheck) on the CUDA kernel.

    compute-sanitizer --tool memcheck python bench/cuda_sanitizer_cases.py
"""
import numpy as np
import torch

import egal

# (B, K, h, w, C, H, W): B = 1, h = w = 1, K = 1, H and W not multiples of the block size; for the channel
# tiles, samples that do not start 16 bytes apart (K * h * w odd), a last tile part full, 16 and 8 channels a tile;
# for the cell blocks, maps of 1,881 and 600 cells (the last block part full); and, for the vector projection,
# masks 223 and 97 columns wide, whose rows are not four columns apart
SHAPES = [(1, 1, 1, 1, 2, 1, 1), (1, 1, 7, 7, 2, 224, 224), (3, 1024, 7, 7, 3, 225, 223),
          (2, 5, 1, 1, 4, 17, 300), (2, 32, 57, 33, 2, 259, 97), (1, 3, 300, 2, 2, 5, 601),
          (3, 33, 7, 7, 2, 224, 224), (2, 100, 10, 10, 3, 80, 80), (2, 19, 15, 15, 3, 60, 60)]
# The CUDA backend's passes: (ROI pass, map pass); channel tiles and cell blocks take projected ROIs only.
PASSES = [("projection", "cell-blocks"), ("projection", "channel-warps"), ("per-pixel", "channel-warps"),
          ("vector-projection", "channel-tiles")]


def main():
    if not (torch.cuda.is_available() and egal.backends()["cuda"]["available"]):
        print(f"no usable CUDA GPU here ({egal.backends()['cuda']['reason']}): the sanitizer cases did not run")
        return
    for roi_pass, map_pass in PASSES:
        egal._core.set_cuda_roi_pass(roi_pass)
        egal._core.set_cuda_map_pass(map_pass)
        run_cases()
    print("sanitizer cases ran, with every pass:", ", ".join(" + ".join(p) for p in PASSES))


def run_cases():
    rng = np.random.default_rng(0)
    for B, K, h, w, C, H, W in SHAPES:
        dev = lambda x: torch.from_numpy(np.ascontiguousarray(x)).cuda()  # noqa: E731
        A = dev(rng.random((B, K, h, w), dtype=np.float32))
        G = dev(rng.standard_normal((B, K, h, w), dtype=np.float32))
        Z = dev(rng.standard_normal((B, C), dtype=np.float32))
        M = dev((rng.random((B, H, W)) < 0.3).astype(np.uint8))
        boxes = np.array([[[1, 1, W / 2, H / 2], [0, 0, W + 5, 3], [np.nan] * 4]] * B, dtype=np.float32)
        for kwargs in ({"masks": M}, {"boxes": dev(boxes), "roi_size": (H, W)}):
            egal.score_batch(A, Z, gradients=G, return_cam=True, **kwargs)
            egal.score_batch(A.half(), Z, weights=G.mean(dim=(2, 3)), **kwargs)
        roi = egal.project_roi(M.cpu().numpy(), cam_size=(h, w))
        egal.score_batch(A, Z, roi=egal.ProjectedROI(dev(roi.weights), dev(roi.area), roi.roi_size), gradients=G)


if __name__ == "__main__":
    main()
