"""egal: explainability-guided active learning for medical imaging."""
from ._result import ScoreResult
from .roi import ProjectedROI

__version__ = "0.1.0"
__all__ = ["ScoreResult", "ProjectedROI", "__version__"]
