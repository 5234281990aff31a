"""The value every scorer returns."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoreResult:
    """Per-sample outputs of docs/scoring.md for one batch, as host numpy arrays.

    Outputs are B numbers per field, so they always come back to the host;
    the inputs are never copied (a CUDA batch stays on the GPU).
    """

    pred: np.ndarray  # [B] int64, argmax of the logits (ties: lowest index)
    entropy: np.ndarray  # [B] float32, H_b in nats
    entropy_norm: np.ndarray  # [B] float32, H_b / log(C)
    misalignment: np.ndarray  # [B] float32, soft Dice distance D_b; NaN for an empty ROI
    score: np.ndarray  # [B] float32, S_b; NaN for a sample with non-finite inputs
    cam: np.ndarray | None = None  # [B, h, w] float32 normalised map, if asked

    def __len__(self) -> int:
        return int(self.score.shape[0])
