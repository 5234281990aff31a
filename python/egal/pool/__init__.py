"""Reading, validating and decoding an image pool. Does not import PyTorch.

The pool format
---------------
A Parquet file, or a directory of Parquet files (every `*.parquet` below it, read
in order of relative path), one row per image:

  id          string, unique across all files, non-null
  image       binary: PNG, JPEG or DICOM bytes (8- or 16-bit grey, or RGB), or
  image_path  string: such a file, relative to the folder of the Parquet file that
              holds the row (absolute paths, `..` and symlinks leaving the folder
              are refused)
  ROI, at most one of:
    mask       binary PNG of any size (nonzero = ROI), resized nearest-neighbour
    mask_path  string: such a PNG, relative like image_path
    boxes      list of [x0, y0, x1, y1] in the image's own pixel coordinates
              A null value, an empty box list or an all-zero mask means "no ROI";
              a pool without any ROI column has no ROI in any row.
  label       optional, any type, null = unlabeled (scoring never reads it)
  other columns are ignored unless asked for by name (e.g. `cv_fold`).

Streaming reads hold about two batches of rows plus one Parquet page per column;
a file whose image column was written as one huge page (pyarrow's defaults with
large images) or dictionary-encoded is held a page or a dictionary at a time.
`egal.pool.writer.write_pool_file` writes pools with small plain pages.

The pieces
----------
  open_pool(path) -> PoolSpec           validates (cheaply) and describes a pool
  PoolSpec.iter_batches(batch_size, start_batch=, columns=) -> RawBatch, ...
  decode_batch(RawBatch, DecodeSettings) -> DecodedBatch   (runs in worker processes)
  load_pool_arrays(path_or_spec, settings, columns=, workers=, labeled_only=) -> dict
                                        (warns UndecodedRows, listing rows that fail to decode)
  workers.decode_in_order(raw_batches, settings, workers) -> DecodedBatch, ...
                                        decoding in worker processes (both callers above)
  errors                                every exception of the package
  make_synthetic_pool(out_dir, ...) -> path   the built-in demonstration data set
"""
from .batches import RawBatch
from .decode import DecodedBatch, DecodeSettings, decode_batch
from .errors import DecoderDied, PoolError, UndecodedRows
from .load import load_pool_arrays
from .spec import PoolSpec, open_pool
from .synthetic import make_synthetic_pool

__all__ = [
    "PoolError",
    "DecoderDied",
    "PoolSpec",
    "open_pool",
    "RawBatch",
    "DecodeSettings",
    "DecodedBatch",
    "decode_batch",
    "load_pool_arrays",
    "UndecodedRows",
    "make_synthetic_pool",
]
