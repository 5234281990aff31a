"""egal's ONNX path: export a classifier with its Grad-CAM weights in the graph, score with onnxruntime.

Scoring (`OnnxGradCAM`) needs only numpy, onnxruntime(-gpu) and egal's compiled
scorer: importing this package does not import PyTorch. Exporting
(`export_onnx`, `egal export`) needs PyTorch, onnx and onnxscript.
"""
from .._lazy import lazy_exports
from .graph import ACTIVATIONS, CAM_WEIGHTS, INPUT, IR_VERSION, LOGITS, OPSET, OUTPUTS
from .runner import GraphOutputs, OnnxGradCAM

__all__ = ["ACTIVATIONS", "CAM_WEIGHTS", "INPUT", "IR_VERSION", "LOGITS", "OPSET", "OUTPUTS", "ExportError",
           "GraphOutputs", "OnnxGradCAM", "export_onnx"]

# The exporter imports torch; loaded only when asked for.
__getattr__, __dir__ = lazy_exports(__name__, {"export_onnx": "export", "ExportError": "export"})
