"""Choosing what to annotate next (docs/scoring.md, Selection, and its Extensions).

    select_top_k(scores, ids, k)                     the paper's rule: the top k, ties by id
    select_batch(scores, ids, k, diversity=..., embeddings=..., groups=..., per_group=...)
                                                     the same with group caps and a diverse batch

Modules: top_k (the ranked order), group_cap (at most N per group), kcenter and cluster
(the diversity methods), embeddings / embedding_file (what they measure distances in),
batch (select_batch: how the steps compose), from_scores (selecting again from the files
`egal score` wrote, without rescoring), csv_file (the selection CSV: its columns, its default
path, its writer and the checks of its readers). Imports no pyarrow: `import egal` stays light.
"""
from .batch import CANDIDATE_FACTOR, DIVERSITY_METHODS, Selection, select_batch
from .errors import SelectionError
from .top_k import ranked_positions, select_top_k

__all__ = ["CANDIDATE_FACTOR", "DIVERSITY_METHODS", "Selection", "SelectionError", "ranked_positions",
           "select_batch", "select_top_k"]
