"""Writing a pool's Parquet file so that it can be streamed in bounded memory.

A Parquet page (and a dictionary page) is the smallest unit a reader can decode.
pyarrow's defaults put up to 1024 values in a page and dictionary-encode every
column, so a file of large images can end up with one page, or one dictionary, as
big as the whole row group, which any reader then holds in memory at once. Image
and mask columns are therefore written plain, a few rows per page.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROWS_PER_PAGE = 16
ROW_GROUP_ROWS = 256


def write_pool_file(table: pa.Table, path, *, row_group_rows: int = ROW_GROUP_ROWS) -> Path:
    """Writes `table` to `path` with small pages; only string columns are dictionary-encoded."""
    dictionary_columns = [f.name for f in table.schema if pa.types.is_string(f.type) and f.name != "id"]
    pq.write_table(
        table,
        path,
        row_group_size=row_group_rows,
        write_batch_size=ROWS_PER_PAGE,
        use_dictionary=dictionary_columns,
    )
    return Path(path)
