"""The GPU benchmark's headline case for Nsight Compute: DenseNet-121 block 4 (B = 4096, K = 1024, 7 x 7,
float32, gradients) against one lesion-sized blob mask of 224 x 224 per image, scored with the CUDA backend's
default passes (project_masks_kernel; the 7 x 7 maps in channel tiles: channel_split_kernel, K = 1024 giving four
blocks a sample, then score_kernel finishing the split sums), the projection with four columns a thread
(project_masks_kernel<uint8_t, 4>) and the channel warps that the tiles replaced (score_kernel alone after the
projection). Then the benchmark's largest map, 32 x 224 x 224 at B = 256, with the default's cell blocks
(channel_means_kernel, cell_map_kernel, then score_kernel reading the map) and with channel warps.

    ncu --clock-control none --kernel-name regex:"score_kernel|project_|channel_split|channel_means|cell_map" \\
        --section SpeedOfLight --section Occupancy --section WarpStateStats python bench/cuda_profile_case.py
"""
import torch

import egal


def main():
    if not (torch.cuda.is_available() and egal.backends()["cuda"]["available"]):
        print(f"no usable CUDA GPU here ({egal.backends()['cuda']['reason']}): nothing profiled")
        return
    g = torch.Generator(device="cuda").manual_seed(0)
    for (B, K, h, w, H, W), passes in (
            ((4096, 1024, 7, 7, 224, 224), (("projection", "cell-blocks"), ("vector-projection", "cell-blocks"),
                                            ("projection", "channel-warps"))),
            ((256, 32, 224, 224, 224, 224), (("projection", "cell-blocks"), ("projection", "channel-warps")))):
        A = torch.rand((B, K, h, w), device="cuda", generator=g)
        G = torch.randn((B, K, h, w), device="cuda", generator=g)
        Z = torch.randn((B, 3), device="cuda", generator=g)
        masks = torch.zeros((B, H, W), dtype=torch.uint8, device="cuda")
        masks[:, 60:100, 80:128] = 1
        for roi_pass, map_pass in passes:
            egal._core.set_cuda_roi_pass(roi_pass)
            egal._core.set_cuda_map_pass(map_pass)
            result = egal.score_batch(A, Z, masks, gradients=G)
            print(f"{K} x {h} x {w}, B = {B}, {roi_pass} + {map_pass}: mean score {float(result.score.mean()):.6f}")
        del A, G


if __name__ == "__main__":
    main()
