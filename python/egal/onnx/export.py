"""Export a classifier to ONNX with the closed-form Grad-CAM weights computed in the graph.

The graph maps images [batch, in_channels, H, W] in [0, 1] to logits,
activations, cam_weights and the selection embedding (see egal.onnx.graph), with a dynamic batch axis.
Only models whose Grad-CAM weights have a closed form can be exported: the
graph has no backward pass.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping

import onnx
import torch

from .._atomic import replaced_atomically
from .._checks import check_bool, is_int
from .._paths import check_new_file, check_not_an_input, check_replaceable
from ..errors import EgalError
from ..models import EGALClassifier, load_model
from . import graph


class ExportError(EgalError):
    """The model cannot be exported as an egal Grad-CAM graph."""


def is_egal_graph(path) -> bool:
    """An ONNX file that egal exported (its format key in the metadata): what export's --overwrite may replace."""
    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except Exception:  # not protobuf, not ONNX, unreadable: not one of egal's graphs
        return False
    return any(p.key == graph.FORMAT_KEY for p in proto.metadata_props)


# How the checks of `out` name the arguments: as a Python caller writes them; `egal export` passes its flags.
PYTHON_NAMES = {"out": "out (--out)", "model": "model (--model)", "overwrite": "overwrite=True (--overwrite)"}


def check_graph_out(out, *, overwrite: bool = False, model=None, names: Mapping = PYTHON_NAMES) -> None:
    """EgalError unless a graph may be written to `out`, said before the export: a name ending in .onnx (egal
    score tells a graph from a PyTorch model by it), not the model file, replacing only a graph egal exported
    (never a user's own .onnx file or any other), and that only with overwrite; its folder exists and can be
    written in. model: the model's path, when given as one. names: how the messages name out, model and overwrite
    (PYTHON_NAMES; egal export passes its flags)."""
    model_file = model if isinstance(model, (str, os.PathLike)) else None
    check_not_an_input(out, names["out"], {names["model"]: model_file})
    if not os.fspath(out).endswith(".onnx"):
        raise EgalError(f"{names['out']} {os.fspath(out)!r} must end in .onnx: egal score runs a .onnx file with "
                        "onnxruntime and takes any other for a PyTorch model")
    check_replaceable(out, names["out"], is_egal_graph, "an ONNX graph that egal exported")
    check_new_file(out, names["out"], replace=overwrite, hint=names["overwrite"])


def export_onnx(model, out, *, overwrite: bool = False, opset: int = graph.OPSET, ir_version: int = graph.IR_VERSION,
                example_batch: int = 2) -> str:
    """Write `model` (an EGALClassifier, or the path of a saved model file) to `out`; returns the path.

    out: a name ending in .onnx. An existing file is replaced only with overwrite=True, and only when it is a
    graph egal exported (check_graph_out). The written file passes onnx.checker (full check) and loads in
    onnxruntime.
    """
    check_bool(overwrite, "overwrite")
    check_graph_out(out, overwrite=overwrite, model=model)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if not isinstance(model, EGALClassifier):
        raise TypeError("export_onnx() exports an egal EGALClassifier or a saved model file, got "
                        f"{type(model).__name__}")
    _check_exportable(model)
    _check_versions(opset, ir_version)
    if example_batch < 2:
        raise ValueError("example_batch must be >= 2: the exporter specialises a batch of 1 to a constant")

    wrapper = GradCAMGraph(copy.deepcopy(model).cpu()).eval()  # the caller's model stays where it is
    H, W = model.config.input_size
    example = torch.rand(example_batch, model.config.in_channels, H, W)
    program = torch.onnx.export(
        wrapper, (example,), None, dynamo=True, opset_version=opset, verbose=False,
        input_names=[graph.INPUT], output_names=list(graph.OUTPUTS),
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
    )
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter falls back to its own opset when it cannot convert to the one asked for
        raise ExportError(f"the exporter could not write opset {opset} (it wrote {written}); use opset "
                          f"{graph.OPSET} (the default)")
    proto.ir_version = ir_version
    proto.producer_name = "egal"
    _set_metadata(proto, {graph.FORMAT_KEY: graph.FORMAT, graph.CONFIG_KEY: json.dumps(model.config.to_dict())})
    onnx.checker.check_model(proto, full_check=True)
    _check_loads_in_onnxruntime(proto, opset, ir_version)
    out = os.fspath(out)
    # Written whole under a temporary name, then renamed: `out` never holds a truncated graph.
    with replaced_atomically(out) as tmp:
        onnx.save_model(proto, tmp, save_as_external_data=False)
    return out


def _check_versions(opset, ir_version) -> None:
    """The opset and IR version lie where the exporter and the installed onnx can write them: the exporter
    writes opset 18 and up; the IR version must carry that opset (IR 8 and up) and be one onnx knows."""
    newest_opset = onnx.defs.onnx_opset_version()
    if not (is_int(opset) and 18 <= opset <= newest_opset):
        raise ExportError(f"opset (--opset) must be an integer from 18 to {newest_opset} (the newest the installed "
                          f"onnx knows), got {opset!r}")
    if not (is_int(ir_version) and 8 <= ir_version <= onnx.IR_VERSION):
        raise ExportError(f"ir_version (--ir-version) must be an integer from 8 to {onnx.IR_VERSION}, got "
                          f"{ir_version!r} (the default, {graph.IR_VERSION}, loads in onnxruntime 1.31)")


def _check_loads_in_onnxruntime(proto, opset: int, ir_version: int) -> None:
    """The onnxruntime installed here (when one is) loads the graph: an IR version or opset newer than it reads
    would export without a word and fail only when scored."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    from .runner import onnxruntime_reason

    try:
        ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime {ort.__version__}, installed here, cannot load the graph written with IR "
                          f"version {ir_version} and opset {opset} ({onnxruntime_reason(exc)}); export with the "
                          f"defaults (IR version {graph.IR_VERSION}, opset {graph.OPSET})") from None


def _check_exportable(model) -> None:
    config = model.config
    pooled = model.pooled_layer_names()
    if config.target_layer not in pooled:
        raise ExportError(
            f"this model's Grad-CAM target layer {config.target_layer!r} is not the map that its head pools, so its "
            "Grad-CAM weights have no closed form and need a backward pass, which an ONNX inference graph does not "
            f"have. Export a model whose target layer is one of {list(pooled)} (the default), or score it with "
            "egal.gradcam (autograd path) under PyTorch."
        )
    head = model.head
    if not all(hasattr(head, m) for m in ("unchecked_logits", "unchecked_logit_gradient", "require_prototypes")):
        raise ExportError(
            f"the head {type(head).__name__} has no closed-form Grad-CAM weights (no logit_gradient); only the linear "
            "and prototypical heads of egal.models can be exported"
        )
    try:
        head.require_prototypes()
    except RuntimeError as exc:
        raise ExportError(f"cannot export: {exc}") from exc


def _set_metadata(proto, entries: dict) -> None:
    for key, value in entries.items():
        prop = next((p for p in proto.metadata_props if p.key == key), None) or proto.metadata_props.add()
        prop.key, prop.value = key, value


class GradCAMGraph(torch.nn.Module):
    """The forward pass plus egal.gradcam's closed form, traceable (no Python branch on data)."""

    def __init__(self, model: EGALClassifier):
        super().__init__()
        self.model = model

    def forward(self, images):  # [batch, in_channels, H, W]
        activations = self.model.feature_map(images)  # [batch, K, h, w]
        pooled = self.model.pool(activations)  # [batch, K]
        logits = self.model.head.unchecked_logits(pooled)  # [batch, C]
        pred = logits.argmax(dim=1)
        cells = activations.shape[2] * activations.shape[3]
        cam_weights = self.model.head.unchecked_logit_gradient(pooled, pred) / cells  # [batch, K]
        embedding = self.model.selection_embedding(activations)  # [batch, D]
        return logits, activations, cam_weights, embedding
