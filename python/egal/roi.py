"""Expert ROIs projected onto the Grad-CAM grid.

Bilinear upsampling is linear in the low-resolution map, so the Dice sums of
docs/scoring.md reduce to inner products on the h x w grid:

    sum_yx U * M = <cam, R_y^T M R_x>        sum_yx U = <cam, outer(c_y, c_x)>

where R_y [H, h] and R_x [W, w] are the interpolation operators and c = R^T 1.
`R_y^T M R_x` is what this module calls the projected ROI. Masks never change
during active learning, so a pool's projections are computed once and reused by
every round; scoring then reads only the activations (and gradients).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ProjectedROI:
    """ROIs of one batch projected onto the (h, w) Grad-CAM grid.

    weights: [B, h, w] float32, R_y^T M R_x (numpy, torch or any DLPack array)
    area:    [B] float32, sum of M (0 means an empty ROI)
    roi_size: (H, W), the grid the masks or boxes were given on

    Make one with egal.project_roi. One built by hand must be the projection of masks M with
    values in [0, 1]: weights and area finite and >= 0, and consistent with each other, or the
    scorer refuses the sample as a bad mask (docs/scoring.md, edge cases).
    """

    weights: Any
    area: Any
    roi_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    def __getitem__(self, index) -> ProjectedROI:
        """Rows of a pool-wide projection, e.g. roi[batch_start:batch_stop] (or an index array)."""
        if isinstance(index, (int, np.integer)):
            raise TypeError(f"a ProjectedROI is indexed by rows that keep its batch axis: roi[{index}:{index + 1}], "
                            f"not roi[{index}]")
        return ProjectedROI(self.weights[index], self.area[index], self.roi_size)


def interpolation_operator(out_size: int, in_size: int) -> np.ndarray:
    """Dense [out_size, in_size] bilinear operator (align_corners=False), float64.

    Row y holds the weights with which output pixel y reads the low-resolution
    map; this is step 5 of docs/scoring.md along one axis.
    """
    R = np.zeros((out_size, in_size), dtype=np.float64)
    scale = in_size / out_size
    for y in range(out_size):
        s = max((y + 0.5) * scale - 0.5, 0.0)
        y0 = int(np.floor(s))
        y1 = min(y0 + 1, in_size - 1)
        t = s - y0
        R[y, y0] += 1.0 - t
        R[y, y1] += t
    return R
