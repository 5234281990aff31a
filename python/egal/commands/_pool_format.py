"""The pool format, as the commands that read a pool say it in their help (README, 'The pool format')."""

POOL_FORMAT = ("a Parquet file (or folder of Parquet files) with columns id (string, unique); image (PNG/JPEG/DICOM "
               "bytes) or image_path (relative to the Parquet file's folder); optionally mask (PNG bytes), mask_path "
               "or boxes (list of [x0, y0, x1, y1] in image pixels)")
