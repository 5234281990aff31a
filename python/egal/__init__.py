"""egal: explainability-guided active learning for medical imaging.

The data path: pool -> batches -> model -> activations / channel weights / logits
and ROIs -> `score_batch` (the fused kernel) -> scores -> `select_top_k`.
"""
from ._result import ScoreResult
from .api import backends, project_roi, score_batch
from .combine import combine_scores
from .roi import ProjectedROI
from .selection import select_top_k

__version__ = "0.1.0"
__all__ = ["ScoreResult", "ProjectedROI", "backends", "combine_scores", "project_roi", "score_batch", "select_top_k",
           "__version__"]
