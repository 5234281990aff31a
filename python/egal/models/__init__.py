"""Classifiers whose Grad-CAM inputs egal scores (needs PyTorch: pip install 'egal[torch]').

    from egal.models import build_model, save_model, load_model
    model = build_model("densenet121", "prototypical", classes=["normal", "pneumonia"], weights="imagenet")
"""
from .checkpoint import ModelFileError, load_model, save_model
from .classifier import EGALClassifier, build_model, check_target_layer, model_from_config
from .config import ARCHITECTURES, HEADS, ModelConfig, ModelConfigError
from .heads import LinearHead, PrototypicalHead
from .weights import WeightsUnavailableError

__all__ = [
    "ARCHITECTURES", "HEADS", "EGALClassifier", "LinearHead", "ModelConfig", "ModelConfigError",
    "ModelFileError", "PrototypicalHead", "WeightsUnavailableError", "build_model", "check_target_layer",
    "load_model", "model_from_config", "save_model",
]
