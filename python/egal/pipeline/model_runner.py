"""A trained model, PyTorch (.pt) or exported ONNX (.onnx), behind one interface.

Both produce what the fused scorer needs for a batch of images: activations
[B, K, h, w], logits [B, C] and Grad-CAM channel weights [B, K] (or gradients),
for the predicted class. The ONNX path never imports PyTorch, so it runs on
inference-only nodes.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._checks import bad_argument, check_device, cuda_index
from ..errors import EgalError


@dataclass
class ModelRunner:
    path: str
    kind: str  # "torch" or "onnx"
    device: str  # "cpu", "cuda" or "cuda:N"
    classes: tuple[str, ...]
    input_size: tuple[int, int]  # (H, W) images are resized to; also the ROI mask grid
    in_channels: int
    gradcam_inputs: Callable  # images [B, C, H, W] float32 numpy -> dict of score_batch arguments
    to_device: Callable  # host numpy array -> an array on the model's device (for masks)
    # With embeddings=True: images -> (score_batch arguments, selection embeddings [B, D] float32 numpy)
    # from the same forward pass (EGALClassifier.selection_embedding); embedding_kind says what they are.
    with_embedding: Callable | None = None
    embedding_dim: int | None = None
    embedding_kind: str = ""

    def describe(self) -> str:
        h, w = self.input_size
        return (f"{os.path.basename(self.path)} ({self.kind}, {self.device}; {len(self.classes)} classes "
                f"{', '.join(self.classes)}; input {self.in_channels}x{h}x{w})")


def embedding_kind(prototypical: bool, dim: int) -> str:
    """What a model's selection embedding is (ModelRunner.embedding_kind), as the run record and the embeddings file
    name it."""
    return f"{'prototypical embedding' if prototypical else 'pooled feature'} ({dim}-d)"


def load_runner(path, device: str = "cpu", *, embeddings: bool = False) -> ModelRunner:
    """The model at `path` (.pt or .onnx) on `device`; embeddings=True also readies the selection embedding
    (an ONNX graph exported without it is refused, saying to export it again)."""
    path = os.fspath(path)
    check_device(device)
    if os.path.isdir(path):
        raise IsADirectoryError(f"model file {path!r} is a folder: name the model file (.pt or .onnx) in it")
    if os.path.exists(path) and not os.path.isfile(path):
        raise EgalError(f"model file {path!r} is not a regular file (a pipe or a device?): name the model file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    if path.endswith(".onnx"):
        return _onnx_runner(path, device, embeddings)
    if path.endswith((".pt", ".pth")):
        return _torch_runner(path, device, embeddings)
    raise EgalError(f"model file {path!r}: expected a .pt (egal.models.save_model) or .onnx (egal export) file")


def _torch_runner(path: str, device: str, embeddings: bool = False) -> ModelRunner:
    try:
        import torch
    except ImportError as exc:
        raise EgalError(f"{path!r} is a PyTorch model and PyTorch is not installed here; pip install "
                        "'egal-al[torch]', or export it with `egal export` and score the .onnx file") from exc
    from ..gradcam import closed_form_applies, extract_gradcam_inputs
    from ..gradcam.extract import full_float32
    from ..models import load_model

    _check_torch_sees(device, torch)
    model = load_model(path, map_location=device)
    torch_device = torch.device(device)
    # Measured (bench/README.md, "egal score by runtime"): channels_last runs these convolutions faster on the
    # CPU, and inference mode drops autograd's bookkeeping where Grad-CAM needs no backward pass (the closed form;
    # the autograd path needs autograd after the target layer, which inference mode would forbid).
    model = model.to(memory_format=torch.channels_last)
    no_backward = closed_form_applies(model)

    def gradcam_inputs(images: np.ndarray) -> dict:
        batch = torch.from_numpy(images).to(torch_device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(no_backward):
            inputs = extract_gradcam_inputs(model, batch)
        return inputs.scorer_kwargs()

    def to_device(array: np.ndarray):
        return array if device == "cpu" else torch.from_numpy(array).to(torch_device)

    def with_embedding(images: np.ndarray):
        batch = torch.from_numpy(images).to(torch_device)
        inputs = extract_gradcam_inputs(model, batch)
        with torch.no_grad(), full_float32(torch_device):
            # The closed form's activations are the pooled map; the autograd path's target layer may not be.
            maps = inputs.activations if inputs.method == "closed_form" else model.eval().feature_map(batch)
            vectors = model.selection_embedding(maps)
        return inputs.scorer_kwargs(), vectors.float().cpu().numpy()

    config = model.config
    runner = ModelRunner(path, "torch", device, tuple(config.classes), tuple(config.input_size), config.in_channels,
                         gradcam_inputs, to_device)
    if embeddings:
        from ..models.heads import PrototypicalHead

        prototypical = isinstance(model.head, PrototypicalHead)
        runner.embedding_dim = config.embedding_dim if prototypical else model.head.fc.in_features
        runner.embedding_kind = embedding_kind(prototypical, runner.embedding_dim)
        runner.with_embedding = with_embedding
    return runner


def _check_torch_sees(device: str, torch) -> None:
    """The GPU `device` names is one PyTorch can use here."""
    index = cuda_index(device)
    if index is None:
        return
    flag = f"device={device!r} (--device {device})"
    if not torch.cuda.is_available():
        raise EgalError(f"{flag}: PyTorch sees no CUDA GPU on this machine")
    count = torch.cuda.device_count()
    if index >= count:
        raise EgalError(f"{flag}: PyTorch sees {count} GPU{'s' if count != 1 else ''} here (cuda:0"
                        f"{f' to cuda:{count - 1}' if count > 1 else ''}; CUDA_VISIBLE_DEVICES chooses which)")


NO_CUDA_PROVIDER = ("onnxruntime has no CUDAExecutionProvider here (pip install 'egal-al[onnx]', i.e. onnxruntime-gpu, "
                    "on a machine with a GPU)")


def onnxruntime_lacks_cuda() -> bool:
    """onnxruntime is installed but cannot run a graph on a GPU (the CPU-only wheel, or no CUDA libraries)."""
    import onnxruntime as ort

    from ..onnx.runner import CUDA_PROVIDER

    return CUDA_PROVIDER not in ort.get_available_providers()


def _onnx_runner(path: str, device: str, embeddings: bool = False) -> ModelRunner:
    try:
        import onnxruntime  # noqa: F401  (missing: said here, with the extra to install)
    except ImportError as exc:
        raise EgalError(f"{path!r} is an ONNX model and onnxruntime is not installed here; pip install "
                        "'egal-al[onnx]' (GPU nodes) or 'egal-al[onnx-cpu]'") from exc
    from ..onnx.runner import CPU_PROVIDER, CUDA_PROVIDER, OnnxGradCAM

    index = cuda_index(device)
    if index is not None:
        flag = f"device={device!r} (--device {device})"
        if onnxruntime_lacks_cuda():
            raise EgalError(f"{flag}: {NO_CUDA_PROVIDER}")
        scorer = OnnxGradCAM(path, providers=[CUDA_PROVIDER, CPU_PROVIDER], device_id=index)
        if not scorer.on_cuda:  # asked for the GPU: never a silent run on the CPU
            raise EgalError(f"{flag}: {scorer.cuda_unavailable_reason}")
    else:
        scorer = OnnxGradCAM(path, providers=[CPU_PROVIDER])

    def gradcam_inputs(images: np.ndarray) -> dict:
        return scorer.run(images).scorer_kwargs()

    def to_device(array: np.ndarray):
        return scorer.to_device(array) if scorer.on_cuda else array

    def with_embedding(images: np.ndarray):
        outputs = scorer.run(images, embedding=True)
        vectors = outputs.embedding
        return outputs.scorer_kwargs(), vectors if isinstance(vectors, np.ndarray) else vectors.numpy()

    config = scorer.config
    runner = ModelRunner(path, "onnx", device, scorer.classes, scorer.input_size, int(config.get("in_channels", 3)),
                         gradcam_inputs, to_device)
    if embeddings:
        from ..onnx.graph import EMBEDDING
        from ..onnx.runner import missing_embedding_message

        if not scorer.has_embedding:
            raise bad_argument(EgalError, "embeddings", missing_embedding_message(path))
        shape = next(o.shape for o in scorer.session.get_outputs() if o.name == EMBEDDING)
        runner.embedding_dim = int(shape[1])
        prototypical = config.get("head") == "prototypical"
        runner.embedding_kind = embedding_kind(prototypical, runner.embedding_dim)
        runner.with_embedding = with_embedding
    return runner
