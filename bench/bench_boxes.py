"""Boxes onto the Grad-CAM grid: the fused box-native projection against the reference's
rasterise-then-project, as the number of boxes per image grows.

    python -m pytest bench/bench_boxes.py --benchmark-only --benchmark-columns=min,median   (about 5 minutes)

The fused projection cuts the boxes' union along their edges and keeps, row by row of
cells, how many boxes cover each cell: its cost grows with the square of the number of
boxes and not with the image's size. The reference (egal.reference.project_roi)
rasterises every box into an H x W mask in PyTorch and projects the mask. Both run on
the same boxes in one run: 16 images of 1024 x 1024 onto 7 x 7, small boxes scattered
over the image (a detector's or several readers' findings).
"""
import numpy as np
import pytest
import torch

import egal
import egal.reference

IMAGES, SIDE, CAM = 16, 1024, (7, 7)
BOX_COUNTS = [1, 10, 100, 1000]


@pytest.fixture(scope="module", autouse=True)
def threads():
    torch.set_num_threads(egal.backends()["cpu"].get("threads", 1) or 1)


def boxes_of(count: int) -> np.ndarray:
    rng = np.random.default_rng(count)
    corners = rng.uniform(0, SIDE - 40, (IMAGES, count, 2))
    sizes = rng.uniform(4, 40, (IMAGES, count, 2))
    return np.concatenate([corners, corners + sizes], axis=-1).astype(np.float32)  # [B, N, 4]


@pytest.mark.parametrize("count", BOX_COUNTS)
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_project_boxes(benchmark, impl, count):
    boxes = boxes_of(count)
    project = egal.project_roi if impl == "fused" else egal.reference.project_roi
    benchmark.extra_info.update(impl=impl, boxes=count, images=IMAGES)
    result = benchmark(lambda: project(boxes=boxes, roi_size=(SIDE, SIDE), cam_size=CAM))
    expected = egal.reference.project_roi(boxes=boxes[:2], roi_size=(SIDE, SIDE), cam_size=CAM)
    np.testing.assert_allclose(np.asarray(result.area)[:2], expected.area.numpy(), rtol=1e-6)
