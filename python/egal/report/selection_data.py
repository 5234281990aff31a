"""What the selection page shows, computed from a scored pool (egal score's output) alone: the
selection, the quadrants of uncertainty against misalignment, examples per quadrant, the rows in error."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import EgalError
from ..selection.csv_file import READ_COLUMNS, checked_selection_rows, selection_path_for

SCORE_COLUMNS = ("id", "pred", "entropy_norm", "misalignment", "score", "rank", "status", "error")
DEFAULT_SELECT = 30  # when neither the caller nor a selection CSV beside the scores says which rows
# A term whose values over the plotted rows span less than this (of its 0-1 scale) is split at 0.5, the middle
# of its scale: the middle of so narrow a range splits rounding noise, and would call rows at the top of the
# scale "low" (every row at entropy_norm 0.998 "confident").
MIN_SPREAD = 0.1


@dataclass(frozen=True)
class Quadrant:
    key: str
    uncertain: bool  # normalised entropy above its threshold
    misaligned: bool  # misalignment above its threshold
    name: str  # short, drawn in the plot
    meaning: str  # what it tells a reviewer


# The paper's three failure patterns, and the quadrant where the model is confident and looks at the finding.
QUADRANTS = (
    Quadrant("uncertain_misaligned", True, True, "uncertain, looking elsewhere",
             "High uncertainty and high misalignment: the model is unsure and its attention is away from the expert "
             "ROI. Both terms of the score agree: these are annotated first."),
    Quadrant("uncertain_aligned", True, False, "uncertain, looking at the ROI",
             "High uncertainty, low misalignment: the model looks at the right place but cannot decide the class "
             "(a hard or ambiguous finding). Uncertainty-only selection finds these too."),
    Quadrant("confident_misaligned", False, True, "confident, looking elsewhere",
             "Low uncertainty, high misalignment: the model is sure of itself while attending outside the ROI, "
             "right (or wrong) for the wrong reason, a shortcut. Uncertainty-only selection misses these; the "
             "misalignment term is what finds them."),
    Quadrant("confident_aligned", False, False, "confident, looking at the ROI",
             "Low uncertainty, low misalignment: confident and attending to the finding; little to learn here."),
)


@dataclass(frozen=True)
class ScoredPool:
    """egal score's output (one row per pool row, in pool order) and the run it records."""

    path: str
    ids: np.ndarray  # [N] str
    pred: list  # [N] class name or None (rows in error)
    entropy_norm: np.ndarray  # [N] float64, NaN for rows in error
    misalignment: np.ndarray  # [N] float64, NaN without ROI or in error
    score: np.ndarray  # [N] float64
    rank: np.ndarray  # [N] float64, 1 = most worth annotating; NaN for rows in error
    ok: np.ndarray  # [N] bool: status "ok"
    errors: list  # [N] reason or None
    run: dict | None  # the "egal.run" metadata (pool, model digest, alpha, combine, ...); None from older egal

    def __len__(self) -> int:
        return len(self.ids)


def read_scores(path) -> ScoredPool:
    """Reads egal score's output; an EgalError names what is missing when the file is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EgalError(f"scores file {path!r} does not exist (write one with egal score --out)")
    from ..pipeline.score_file import read_score_output

    try:
        table, run = read_score_output(path, SCORE_COLUMNS)
    except EgalError as exc:
        raise EgalError(f"scores file {path!r} {exc}") from None

    def floats(name):
        return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    status = table.column("status").to_pylist()
    return ScoredPool(path, np.asarray(table.column("id").to_pylist(), dtype=str), table.column("pred").to_pylist(),
                      floats("entropy_norm"), floats("misalignment"), floats("score"), floats("rank"),
                      np.array([s == "ok" for s in status], dtype=bool), table.column("error").to_pylist(), run)


@dataclass(frozen=True)
class ShownSelection:
    positions: np.ndarray  # rows of the scores, in the selection's order
    source: str  # where it came from, for the page


def read_selection(scores: ScoredPool, select: int | None = None, selection_csv: str | None = None) -> ShownSelection:
    """The selection to show. select=K: the K best-ranked rows. Otherwise the ids of the selection CSV that egal score
    --select wrote (selection_csv, by default NAME.selection.csv beside the scores), in its order: it may be a
    diverse or per-patient batch rather than the top K. Without either, the DEFAULT_SELECT best-ranked rows."""
    if select is not None and selection_csv is not None:
        raise EgalError("give select (the K best-ranked rows) or selection_csv (a selection file), not both")
    if select is not None:
        chosen = top_ranked(scores, select)
        return ShownSelection(chosen, f"the {len(chosen)} best-ranked rows" + (
            f" (of {select} asked for: only {len(chosen)} rows have a rank)" if len(chosen) < select else ""))
    given = selection_csv is not None
    path = selection_csv if given else selection_path_for(scores.path)
    if not os.path.isfile(path):
        if given:
            raise EgalError(f"selection file {path!r} does not exist")
        return ShownSelection(top_ranked(scores, DEFAULT_SELECT), f"the {DEFAULT_SELECT} best-ranked rows (no "
                                                                  f"selection file {os.path.basename(path)} beside the "
                                                                  "scores)")
    from ..importers.tables import match_ids, read_table

    rows = checked_selection_rows(
        read_table(path, READ_COLUMNS, "selection file"), EgalError,
        no_rows=f"selection file {path!r} has a header but no rows: no selection to show",
        repeated=lambda ids: f"selection file {path!r} names {len(ids)} id(s) more than once, first {min(ids)!r}: "
                             "a row is annotated once")
    ids = [row["id"] for row in rows]
    position = {v: i for i, v in enumerate(scores.ids.tolist())}
    scored = match_ids(ids, position)  # as export-selection and add-labels read a selection's ids
    unknown = [v for v in ids if v not in scored]
    if unknown:
        raise EgalError(f"selection file {path!r} names {len(unknown)} id(s) that are not in {scores.path!r}, "
                        f"first {unknown[0]!r}: it belongs to another scoring run")
    positions = np.array([position[scored[v]] for v in ids], dtype=np.int64)
    if not given:
        _check_same_run(rows, scores, positions, path)
    return ShownSelection(positions, f"the {len(ids)} rows of {path}")


def _check_same_run(rows, scores: ScoredPool, positions: np.ndarray, path: str) -> None:
    """The selection CSV found beside the scores was written with them: its scores (written to 6 decimals) are
    theirs. One left by an earlier run into the same --out (egal score --overwrite without --select keeps it)
    would show another run's choice as this one's."""
    if not rows or "score" not in rows[0]:
        return  # a selection of ids alone: nothing to compare
    for row, position in zip(rows, positions.tolist(), strict=True):
        try:
            written = float(row["score"]) if row["score"] not in ("", None) else float("nan")
        except ValueError:
            return
        now = float(scores.score[position])
        if not (abs(written - now) <= 1e-6 or (np.isnan(written) and np.isnan(now))):
            raise EgalError(f"selection file {path!r} is not the selection of {scores.path!r}: it gives row "
                            f"{row['id']!r} the score {written:.6f}, the scores {now:.6f} (left by an earlier run?); "
                            "pass select=K (--select K) for the best-ranked rows, or the current selection file "
                            "(--selection)")


def top_ranked(scores: ScoredPool, k: int) -> np.ndarray:
    """Positions of the k best-ranked rows, rank 1 first (fewer when fewer rows have a rank)."""
    ranked = np.flatnonzero(np.isfinite(scores.rank))
    return ranked[np.argsort(scores.rank[ranked], kind="stable")][:k]


@dataclass(frozen=True)
class QuadrantSplit:
    entropy_threshold: float
    misalignment_threshold: float
    chosen_by: str  # how each threshold was set (given, or the middle of the plotted range)
    of_row: np.ndarray  # [N] index into QUADRANTS, -1 for rows outside the plot (no ROI, or in error)

    def counts(self, rows=None) -> list:
        of_row = self.of_row if rows is None else self.of_row[rows]
        return [int(np.sum(of_row == q)) for q in range(len(QUADRANTS))]


def split_quadrants(scores: ScoredPool, entropy_threshold: float | None = None,
                    misalignment_threshold: float | None = None) -> QuadrantSplit:
    """Each scored row with an ROI in a quadrant: above (high) or not above (low) each threshold. A threshold
    not given is the middle of that term's range over those rows, so that the quadrants are the four
    quarters of the plot (a median would put every tied value on one side: a model with many flat Grad-CAMs
    has half its pool at misalignment 1); 0.5, the middle of the term's scale, when the values span less than
    MIN_SPREAD."""
    plotted = scores.ok & np.isfinite(scores.misalignment) & np.isfinite(scores.entropy_norm)
    how = []

    def threshold(name, given, values):
        if given is not None:
            how.append(f"{name}: given")
            return given
        spread = float(np.ptp(values[plotted])) if plotted.any() else 0.0
        if spread < MIN_SPREAD:
            how.append(f"{name}: 0.5, the middle of its scale (its values span {spread:.2g}, too little to split)")
            return 0.5
        how.append(f"{name}: the middle of its range")
        return float((values[plotted].min() + values[plotted].max()) / 2)

    entropy_threshold = threshold("normalised entropy", entropy_threshold, scores.entropy_norm)
    misalignment_threshold = threshold("misalignment", misalignment_threshold, scores.misalignment)
    of_row = np.full(len(scores), -1, dtype=np.int64)
    uncertain = scores.entropy_norm > entropy_threshold
    misaligned = scores.misalignment > misalignment_threshold
    for q, quadrant in enumerate(QUADRANTS):
        of_row[plotted & (uncertain == quadrant.uncertain) & (misaligned == quadrant.misaligned)] = q
    return QuadrantSplit(float(entropy_threshold), float(misalignment_threshold), "; ".join(how), of_row)


def quadrant_examples(scores: ScoredPool, split: QuadrantSplit, per_quadrant: int) -> list:
    """For each quadrant, the positions of the `per_quadrant` rows deepest inside it: the largest of the smaller of
    the two distances past the thresholds (each term scaled by its spread over the plotted rows); ties by id."""
    plotted = split.of_row >= 0
    if not plotted.any() or per_quadrant == 0:
        return [np.zeros(0, dtype=np.int64) for _ in QUADRANTS]
    spread_h = max(np.ptp(scores.entropy_norm[plotted]), 1e-12)
    spread_d = max(np.ptp(scores.misalignment[plotted]), 1e-12)
    past_h = (scores.entropy_norm - split.entropy_threshold) / spread_h
    past_d = (scores.misalignment - split.misalignment_threshold) / spread_d
    out = []
    for q, quadrant in enumerate(QUADRANTS):
        rows = np.flatnonzero(split.of_row == q)
        depth = np.minimum(past_h[rows] * (1 if quadrant.uncertain else -1),
                           past_d[rows] * (1 if quadrant.misaligned else -1))
        order = np.lexsort((scores.ids[rows], -depth))  # deepest first, then by id
        out.append(rows[order[:per_quadrant]])
    return out


def rows_in_error(scores: ScoredPool) -> list:
    """(position, id, reason) of every row in error, in pool order."""
    return [(int(i), str(scores.ids[i]), scores.errors[i] or "") for i in np.flatnonzero(~scores.ok)]
