"""egal's ONNX path: export a classifier with its Grad-CAM weights in the graph, score with onnxruntime.

Scoring (`OnnxGradCAM`) needs only numpy, onnxruntime(-gpu) and egal's compiled
scorer: importing this package does not import PyTorch. Exporting
(`export_onnx`, `egal export`) needs PyTorch, onnx and onnxscript.
"""
from .graph import ACTIVATIONS, CAM_WEIGHTS, INPUT, IR_VERSION, LOGITS, OPSET, OUTPUTS
from .runner import GraphOutputs, OnnxGradCAM

__all__ = ["ACTIVATIONS", "CAM_WEIGHTS", "INPUT", "IR_VERSION", "LOGITS", "OPSET", "OUTPUTS", "ExportError",
           "GraphOutputs", "OnnxGradCAM", "export_onnx"]


def __getattr__(name):
    # The exporter imports torch; load it only when asked for.
    if name in ("export_onnx", "ExportError"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'egal.onnx' has no attribute {name!r}")
