"""What an exported egal graph looks like: names and metadata shared by exporter and runner.

Kept free of torch and onnx imports: the runner reads it on inference-only nodes.
"""
INPUT = "images"  # [batch, in_channels, H, W] float32 in [0, 1]; normalised inside the graph
LOGITS = "logits"  # [batch, C]
ACTIVATIONS = "activations"  # [batch, K, h, w] the pooled target-layer map
CAM_WEIGHTS = "cam_weights"  # [batch, K] closed-form Grad-CAM weights of the predicted class
EMBEDDING = "embedding"  # [batch, D] EGALClassifier.selection_embedding: where batch selection measures distances
# What scoring reads; graphs exported before the embedding (2026-12) have only these.
SCORING_OUTPUTS = (LOGITS, ACTIVATIONS, CAM_WEIGHTS)
OUTPUTS = SCORING_OUTPUTS + (EMBEDDING,)  # what egal export writes

# metadata_props keys
CONFIG_KEY = "egal.model_config"  # JSON of egal.models.ModelConfig.to_dict()
FORMAT_KEY = "egal.graph_format"
FORMAT = "egal.gradcam/2"
# Format 1 graphs (exported before 2026-11-27) of prototypical models carry the Grad-CAM weights of the
# squared-distance logits' full gradient, which leaves most maps empty (egal.models.heads.PrototypicalHead);
# those of linear models are the same in both formats.
FORMAT_BEFORE_PROTOTYPE_FIX = "egal.gradcam/1"

OPSET = 18
# onnx >= 1.23 stamps IR version 14 by default, which onnxruntime 1.31 refuses
# ("Unsupported model IR version"); IR 10 carries everything opset 18 needs and
# loads in onnxruntime >= 1.17.
IR_VERSION = 10
