"""Pool scoring: `egal.score_pool` (the library call) and `egal score` (the command on top of it).

    pool (Parquet) -> RawBatch (egal.pool) -> decode in worker processes -> DecodedBatch
    -> model runner (PyTorch or ONNX) -> activations / channel weights / logits
    -> egal.score_batch with the ROI masks -> one output row per input row
    -> crash-safe shards -> ranked scores.parquet and the selection CSV

  options.py        ScoreOptions: what a run is asked to do, checked; the defaults of the API and the CLI
  scoring_job.py    score_pool / run_scoring -> PoolScores; ScoringJob: check, score, merge
  local_engine.py   this machine: decoder processes beside the model
  ray_engine.py     a Ray cluster (Ray Data), the same per-batch step
  batch_scoring.py  one decoded batch through the model and the fused scorer
  model_runner.py   .pt / .onnx models behind one interface
  shard_store.py    crash-safe shards, resume, the atomic merge
  output_layout.py  where a run keeps its files beside `out`, and OutputError
  run_record.py     the record of a run (its manifest): read back, compared on resume
  score_file.py     egal score's output read back and checked (egal report, egal select)
  ranking.py        ranks and the selection over the whole pool

Names are imported on first use, so that `import egal` and `egal --help` do not load pyarrow.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    "OUTPUT_SCHEMA": "batch_scoring", "score_decoded_batch": "batch_scoring",
    "ModelRunner": "model_runner", "load_runner": "model_runner",
    "rank_table": "ranking",
    "ScoreOptions": "options",
    "PoolScores": "scoring_job", "score_pool": "scoring_job", "run_scoring": "scoring_job",
    "PoolLabelWarning": "scoring_job",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
