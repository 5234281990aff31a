"""One file per model: the state dict plus the config that rebuilds it.

The file is a plain dict of strings, numbers, lists and tensors, written with
torch.save and read with torch.load(weights_only=True): loading never unpickles
arbitrary objects, and a file that does not have exactly the expected layout is
refused with a message that says what is wrong.
"""
from __future__ import annotations

import os
import warnings

import torch

from .._torch_file import not_a_checkpoint
from ..errors import EgalError
from .classifier import EGALClassifier, model_from_config
from .config import ModelConfig, ModelConfigError

FORMAT = "egal.model"
FORMAT_VERSION = 1


class ModelFileError(EgalError):
    """A file is not a valid egal model file."""


def save_model(model: EGALClassifier, path) -> None:
    if not isinstance(model, EGALClassifier):
        raise TypeError(f"save_model() saves an egal EGALClassifier, got {type(model).__name__}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
               "state_dict": state}
    path = os.fspath(path)
    try:
        # Through a Python file: a write that fails (a full disk) is then an OSError with its errno, which torch's
        # own writer of a path reports only as a RuntimeError ("unexpected pos", "file write failed").
        with open(path, "wb") as f:
            torch.save(payload, f)
    except RuntimeError as exc:
        if not isinstance(exc.__context__, OSError):
            raise
        raise _naming(exc.__context__, path) from None
    except OSError as exc:
        raise _naming(exc, path) from None


def _naming(exc: OSError, path: str) -> OSError:
    """`exc` with the file it failed to write, which an error of a write to an open file lacks."""
    return exc if exc.filename is not None else OSError(exc.errno, exc.strerror, path)


def load_model(path, map_location="cpu") -> EGALClassifier:
    """Rebuild a saved model (in eval mode) on `map_location`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"model file {path!r} is a folder: name the model file (.pt) in it")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    other = _other_kind_of_file(path)
    if other:
        raise ModelFileError(f"{path!r} is not an egal model file: {other}")
    problem = not_a_checkpoint(path)
    if problem:
        raise ModelFileError(f"{path!r} is not a PyTorch checkpoint egal can read: {problem}; a model file is what "
                             "egal train (egal.models.save_model) writes")
    try:
        with warnings.catch_warnings():  # a TorchScript file makes torch.load warn before it refuses it
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ModelFileError(
            f"{path!r} is not an egal model file that can be loaded safely (torch.load with weights_only=True "
            f"refused it: {type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    config, state = _unpack(payload, path)
    # The shapes the config asks for are checked against the file's before any memory is taken for them: a
    # damaged config (an embedding of 10^9 dimensions) would otherwise fail in the allocator.
    with torch.device("meta"):
        _check_state(model_from_config(config), state, path)
    model = model_from_config(config)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


def _unpack(payload, path):
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path!r} is not an egal model file (no format tag {FORMAT!r}); save models with "
                             "egal.models.save_model")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path!r} has model file format version {version!r}; this egal reads version "
                             f"{FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(payload.get("config"))
    except (ModelConfigError, TypeError) as exc:
        raise ModelFileError(f"{path!r} holds an invalid model config: {exc}") from exc
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelFileError(f"{path!r} has no state dict of named tensors")
    return config, state


def _check_state(model, state, path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                   for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        cfg = model.config
        raise ModelFileError(
            f"{path!r}: the state dict does not match its config ({cfg.architecture}, {cfg.head} head, "
            f"{cfg.num_classes} classes): missing {missing[:4]}, unexpected {unexpected[:4]}, wrong shape {wrong[:4]}"
        )
    parameters = {name for name, _ in model.named_parameters()}  # (a buffer may be NaN by design: unfitted prototypes)
    broken = sorted(k for k in parameters if state[k].is_floating_point() and not torch.isfinite(state[k]).all())
    if broken:
        raise ModelFileError(f"{path!r} has weights that are not finite (NaN or infinity) in {len(broken)} tensor(s), "
                             f"first {broken[0]}: the training that made it diverged; train it again (a smaller lr)")


def _other_kind_of_file(path) -> str | None:
    """What a file that egal.models.save_model cannot have written is, from its first bytes (None: it may be one,
    not_a_checkpoint and torch.load say). Said plainly, where torch.load would report an unpickling error."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # a zip archive, as torch.save writes
        return None
    if head == b"PAR1":
        return "it is a Parquet file (a pool or a scores file?), not a model"
    if path.lower().endswith(".onnx"):
        return ("it is an ONNX graph: egal score and egal report take it as it is (--model model.onnx), and egal "
                "export turns a .pt model into one")
    return None


def _first_line(exc) -> str:
    """The reason, without PyTorch's advice to load the file unsafely (weights_only=False), which egal never does."""
    text = str(exc).strip().splitlines()
    if "TorchScript" in str(exc):
        return "it is a TorchScript archive (torch.jit.save), not a model file of egal.models.save_model"
    if text and text[0].startswith("Weights only load failed") or "weights_only` set to `False`" in str(exc):
        return "it holds Python objects, which a safe load does not unpickle"
    return text[0] if text else ""
