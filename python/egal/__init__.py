"""egal: explainability-guided active learning for medical imaging.

The data path: pool -> batches -> model -> activations / channel weights / logits
and ROIs -> `score_batch` (the fused kernel) -> scores -> `select_top_k` (or `select_batch`:
group caps and a diverse batch, egal.selection).
`score_pool` runs all of it over a Parquet pool (what `egal score` calls); `train_pool` trains
and saves a model on a pool's labelled rows (what `egal train` calls).
A user error (bad input, option or file) raises an `EgalError`, a ValueError (egal.errors).
"""
from ._lazy import lazy_exports
from ._result import ScoreResult
from ._version import __version__
from .api import backends, project_roi, score_batch
from .combine import combine_scores
from .errors import EgalError
from .roi import ProjectedROI
from .selection import select_batch, select_top_k

__all__ = ["EgalError", "ScoreResult", "ProjectedROI", "backends", "combine_scores", "project_roi", "score_batch",
           "select_top_k", "select_batch", "score_pool", "run_scoring", "ScoreOptions", "PoolScores", "__version__"]

# Scoring a whole pool (egal.pipeline: it loads pyarrow) and training on one (egal.train: PyTorch, an optional
# dependency, so not in __all__: `from egal import *` works without it), imported on first use.
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(("score_pool", "run_scoring", "ScoreOptions", "PoolScores"), "pipeline"),
    **dict.fromkeys(("train_pool", "TrainResult"), "train")})
