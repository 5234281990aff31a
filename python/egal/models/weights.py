"""Initial backbone weights: torchvision's ImageNet weights, a local file, or random.

`weights` is one of
  None          random initialisation, as asked (no warning);
  "imagenet"    torchvision's ImageNet-1k weights, from torch's hub cache or a
                download; when they cannot be obtained (an offline node), a
                WeightsUnavailableError says why and what to do: a run that asked
                for pretrained weights never goes on with random ones;
  a path        a local state dict of the torchvision architecture (for instance
                torchvision's own .pth file, copied onto an offline node).
"""
from __future__ import annotations

import os
import pickle
import re
import urllib.parse

import torch
from torch import nn

from .._torch_file import not_a_checkpoint
from ..errors import EgalError, EgalTypeError

# The classification layer of each torchvision model is replaced by egal's head.
_CLASSIFIER_PREFIXES = {"densenet121": ("classifier.",), "resnet18": ("fc.",), "tiny_cnn": (),
                        "efficientnet_lite0": ("_fc.",)}
# torchvision's DenseNet files predate its module names ("norm.1" for "norm1").
_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                               r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


class WeightsUnavailableError(EgalError):
    """Pretrained weights were asked for and cannot be obtained.

    The message names the architecture, the reason and the ways out; a user
    error, so `egal train` / `egal simulate` print it and exit with status 2.
    """


def load_backbone_weights(module: nn.Module, architecture: str, weights) -> str:
    """Fill `module` (a torchvision model, or tiny_cnn's features) and say where the weights came from."""
    if weights is None:
        return "random"
    if isinstance(weights, (str, os.PathLike)) and str(weights).lower() == "imagenet":
        return _load_imagenet(module, architecture)
    if isinstance(weights, (str, os.PathLike)):
        _load_file(module, architecture, os.fspath(weights))
        return f"file:{os.path.basename(os.fspath(weights))}"
    raise EgalTypeError(f"weights must be None, 'imagenet' or a path to a state dict file, "
                        f"got {type(weights).__name__}")


def _load_imagenet(module: nn.Module, architecture: str) -> str:
    import torchvision

    enum = {
        "densenet121": getattr(torchvision.models, "DenseNet121_Weights", None),
        "resnet18": getattr(torchvision.models, "ResNet18_Weights", None),
    }.get(architecture)
    if enum is None:
        raise EgalError(f"there are no ImageNet weights for {architecture!r}; use weights=None or a file")
    url = enum.IMAGENET1K_V1.url
    try:
        # torch.hub reads its cache ($TORCH_HOME/hub/checkpoints) before trying the network, and checks the hash
        # only of what it downloads: weights_only, because a file put in a shared cache is unpickled otherwise.
        state = torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlparse(url).path))
        raise WeightsUnavailableError(
            f"weights='imagenet': the file in torch's hub cache, {cached}, is not a plain state dict (it holds code "
            f"or objects that torch.load(weights_only=True) refuses to run); delete it and download torchvision's "
            f"file again from {url}") from exc
    except Exception as exc:  # no network, no cache, a proxy error, a corrupt file: all mean the same here
        raise WeightsUnavailableError(_imagenet_unavailable_message(architecture, url, exc)) from exc
    _load_state(module, architecture, state, source="torchvision ImageNet weights")
    return "imagenet"


def _imagenet_unavailable_message(architecture: str, url: str, exc: BaseException) -> str:
    """What went wrong and the three ways out, with the exact cache folder and file name."""
    file_name = os.path.basename(urllib.parse.urlparse(url).path)
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    return (
        f"weights='imagenet' asked for torchvision's ImageNet weights for {architecture}, and they cannot be "
        f"obtained: neither torch's hub cache nor a download worked ({type(exc).__name__}: {exc}). "
        f"Either copy {file_name} (from {url}) into {cache}{os.sep} (torch's hub cache, $TORCH_HOME/hub/checkpoints), "
        f"or pass the file itself: weights='/path/to/{file_name}' (egal train / simulate: "
        f"--weights /path/to/{file_name}); or, to train from random initialisation on purpose, weights=None "
        "(--weights none)."
    )


def _load_file(module: nn.Module, architecture: str, path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    problem = not_a_checkpoint(path)
    if problem:
        raise EgalError(f"weights file {path!r} is not a PyTorch checkpoint egal can read: {problem}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EgalError(f"{path!r} is not a state dict that torch.load(weights_only=True) can read: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EgalError(f"{path!r} does not hold a state dict (a mapping of names to tensors)")
    _load_state(module, architecture, state, source=path)


def _load_state(module: nn.Module, architecture: str, state: dict, source: str) -> None:
    if architecture == "densenet121":
        state = {_OLD_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    drop = _CLASSIFIER_PREFIXES[architecture]
    state = {k: v for k, v in state.items() if not k.startswith(drop)} if drop else dict(state)
    own = {k: v for k, v in module.state_dict().items() if not (drop and k.startswith(drop))}
    # Files saved before BatchNorm counted batches lack num_batches_tracked; it is
    # unused in eval mode and with a momentum, so its absence is harmless.
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        raise EgalError(
            f"{source} does not fit a {architecture} backbone: "
            f"missing {_few(missing)}, unexpected {_few(unexpected)}, wrong shape {_few(wrong_shape)}"
        )
    module.load_state_dict(state, strict=False)


def _few(keys, n=4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return "[" + ", ".join(keys[:n]) + "]" + more
