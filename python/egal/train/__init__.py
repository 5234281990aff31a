"""Explanation-guided training: cross-entropy + beta * soft Dice(Grad-CAM of the true class, ROI).

    from egal.train import TrainConfig, train_model
    model, history = train_model(images, masks, labels, classes, TrainConfig(beta=0.5, seed=0))

    from egal.train import train_pool     # the same on a pool's labelled rows, saved (what `egal train` runs)
    result = train_pool("pool.parquet", "model.pt", TrainConfig(beta=0.5), exclude=[("split", "test")])
"""
from .augment import AugmentSettings, augment_pair
from .config import TrainConfig
from .episodes import Episode, episodes_per_epoch, sample_episode
from .feature_cache import FeatureCache, build_feature_cache
from .from_pool import ModelNotSaved, TrainingWarning, TrainResult, train_pool
from .losses import gradcam_dice_loss, gradcam_from_weights, gradcam_of_class, project_masks, soft_dice_distance
from .trainer import TrainHistory, new_model, train_model

__all__ = ["AugmentSettings", "Episode", "FeatureCache", "build_feature_cache", "ModelNotSaved", "TrainConfig",
           "TrainHistory", "TrainResult", "TrainingWarning", "augment_pair", "episodes_per_epoch", "gradcam_dice_loss",
           "gradcam_from_weights", "gradcam_of_class", "new_model", "project_masks", "sample_episode",
           "soft_dice_distance", "train_model", "train_pool"]
