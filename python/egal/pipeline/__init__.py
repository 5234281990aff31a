"""Pool scoring, the job behind `egal score`.

    pool (Parquet) -> RawBatch (egal.pool) -> decode in worker processes -> DecodedBatch
    -> model runner (PyTorch or ONNX) -> activations / channel weights / logits
    -> egal.score_batch with the ROI masks -> one output row per input row
    -> crash-safe shards -> ranked scores.parquet and the selection CSV

The local engine (local_engine.py) runs this on one machine; the Ray engine
(ray_engine.py) runs the same per-batch step (batch_scoring.py) on a Ray cluster.
"""
from .batch_scoring import OUTPUT_SCHEMA, score_decoded_batch
from .model_runner import ModelRunner, load_runner
from .ranking import rank_table, selection_table

__all__ = ["OUTPUT_SCHEMA", "ModelRunner", "load_runner", "rank_table", "score_decoded_batch", "selection_table"]
