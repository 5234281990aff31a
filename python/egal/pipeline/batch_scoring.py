"""One decoded batch through the model and the fused scorer: the step both engines share.

Rows that failed to decode never reach the model. A row whose model output is
not finite gets status "error" too (the fused scorer turns non-finite inputs
into a NaN score for that sample alone), so a bad row can never be selected.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

OUTPUT_SCHEMA = pa.schema([
    ("row", pa.int64()),  # position in the pool's read order
    ("id", pa.string()),
    ("pred", pa.string()),  # predicted class name
    ("entropy", pa.float64()),
    ("entropy_norm", pa.float64()),
    ("misalignment", pa.float64()),  # NaN where the row has no ROI (docs/scoring.md, empty ROI)
    ("score", pa.float64()),
    ("status", pa.string()),  # "ok" or "error"
    ("error", pa.string()),  # the reason, for status "error"
])
FLOAT_FIELDS = ("entropy", "entropy_norm", "misalignment", "score")


def output_schema(embedding_dim: int | None = None) -> pa.Schema:
    """OUTPUT_SCHEMA, and with an embedding dimension the selection embedding column after it
    (fixed_size_list<float32>[D], null for rows in error; egal.selection.embedding_file)."""
    if embedding_dim is None:
        return OUTPUT_SCHEMA
    from ..selection.embedding_file import EMBEDDING_COLUMN

    return OUTPUT_SCHEMA.append(pa.field(EMBEDDING_COLUMN, pa.list_(pa.float32(), embedding_dim)))


def score_decoded_batch(decoded, runner, *, alpha: float, embeddings: bool = False) -> pa.Table:
    """Score one egal.pool.DecodedBatch with a ModelRunner: one output row per input row.

    embeddings: also keep each row's selection embedding (a runner loaded with embeddings=True); a row
    whose embedding is not finite is in error like a row whose scores are not."""
    import egal

    n = len(decoded.ids)
    errors = list(decoded.errors)
    ok = np.array([e is None for e in errors], dtype=bool)
    columns = {name: np.full(n, np.nan) for name in FLOAT_FIELDS}  # error rows keep NaN: no numbers
    vectors = np.full((n, runner.embedding_dim), np.nan, dtype=np.float32) if embeddings else None
    pred = [None] * n
    if ok.any():
        images = np.ascontiguousarray(decoded.images[ok])  # [b, C, H, W]
        masks = runner.to_device(np.ascontiguousarray(decoded.masks[ok]))  # [b, H, W]
        if embeddings:
            inputs, batch_vectors = runner.with_embedding(images)
        else:
            inputs = runner.gradcam_inputs(images)
        result = egal.score_batch(**inputs, masks=masks, alpha=alpha)
        rows = np.flatnonzero(ok)
        finite = np.isfinite(result.score) & np.isfinite(result.entropy)
        # An empty ROI legitimately gives NaN misalignment; a non-empty one must not.
        finite &= np.isfinite(result.misalignment) | ~decoded.has_roi[ok]
        for j, row in enumerate(rows):
            if not finite[j]:
                errors[row] = "model output is not finite (NaN or Inf in logits or Grad-CAM inputs)"
                continue
            if embeddings and not np.isfinite(batch_vectors[j]).all():
                errors[row] = "model output is not finite (NaN or Inf in the selection embedding)"
                continue
            pred[row] = runner.classes[int(result.pred[j])]
            for name in FLOAT_FIELDS:
                columns[name][row] = float(getattr(result, name)[j])
            if embeddings:
                vectors[row] = batch_vectors[j]
    status = ["ok" if e is None else "error" for e in errors]
    data = {
        "row": np.asarray(decoded.rows, dtype=np.int64),
        "id": list(decoded.ids),
        "pred": pred,
        **{name: pa.array(columns[name], from_pandas=False) for name in FLOAT_FIELDS},
        "status": status,
        "error": errors,
    }
    if not embeddings:
        return pa.table(data, schema=OUTPUT_SCHEMA)
    from ..selection.embedding_file import EMBEDDING_COLUMN, embedding_array

    data[EMBEDDING_COLUMN] = embedding_array(vectors, np.array([s == "ok" for s in status], dtype=bool))
    return pa.table(data, schema=output_schema(runner.embedding_dim))
