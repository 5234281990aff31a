"""Where a scoring run keeps its files beside `out`, named once for the store that writes them
(egal.pipeline.shard_store) and the code that reads them back (egal.pipeline.run_record, score_file):

    scores.parquet            the ranked output; its Parquet metadata (RUN_METADATA_KEY) records the run
    scores.parquet.parts/     an unfinished run: its shards, and its record (MANIFEST), checked on --resume

Messages name the library's arguments and the command's options together
("resume=True (--resume)"): the same store serves egal.score_pool and egal score.
"""
from __future__ import annotations

import os

from ..errors import EgalError

MANIFEST = "run.json"
RUN_METADATA_KEY = b"egal.run"  # the output's Parquet metadata: the run's manifest, JSON
RESUME = "resume=True (--resume)"
OVERWRITE = "overwrite=True (--overwrite)"


class OutputError(EgalError):
    """The output location cannot be used as asked (exists, or belongs to another run)."""


def parts_dir_of(out_path) -> str:
    """The folder of a run's shards beside its output (removed once the output is complete)."""
    return os.path.abspath(os.fspath(out_path)) + ".parts"
