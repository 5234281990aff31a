"""egal: explainability-guided active learning for medical imaging.

The data path: pool -> batches -> model -> activations / channel weights / logits
and ROIs -> `score_batch` (the fused kernel) -> scores -> `select_top_k` (or `select_batch`:
group caps and a diverse batch, egal.selection).
`score_pool` runs all of it over a Parquet pool (what `egal score` calls); `train_pool` trains
and saves a model on a pool's labelled rows (what `egal train` calls).
A user error (bad input, option or file) raises an `EgalError`, a ValueError (egal.errors).
"""
from ._lazy import lazy_exports
from ._version import __version__
from .errors import EgalError

__all__ = ["EgalError", "ScoreResult", "ProjectedROI", "backends", "combine_scores", "project_roi", "score_batch",
           "select_top_k", "select_batch", "score_pool", "run_scoring", "ScoreOptions", "PoolScores", "__version__"]

# Everything else is imported on first use, so that `import egal` stays light: the `egal` command starts here, and a
# Ctrl-C while numpy, pyarrow or the compiled scorer load would come before egal.cli can turn it into one line.
# Scoring a whole pool (egal.pipeline) loads pyarrow; training (egal.train) loads PyTorch, an optional dependency,
# hence not in __all__: `from egal import *` works without it.
__getattr__, __dir__ = lazy_exports(__name__, {
    "ScoreResult": "_result",
    **dict.fromkeys(("backends", "project_roi", "score_batch"), "api"),
    "combine_scores": "combine",
    "ProjectedROI": "roi",
    **dict.fromkeys(("select_batch", "select_top_k"), "selection"),
    **dict.fromkeys(("score_pool", "run_scoring", "ScoreOptions", "PoolScores"), "pipeline"),
    **dict.fromkeys(("train_pool", "TrainResult"), "train")})
