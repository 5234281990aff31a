"""The selection page: what `egal score` chose, shown so that a radiologist can judge it.

    egal report --scores scores.parquet --pool pool.parquet --model model.onnx --out report/
    egal.report.selection_report("scores.parquet", "pool.parquet", "model.onnx", out="report")

Reads the scored pool (egal score's output), decodes only the rows it shows (the selection and a few
examples per quadrant) and runs the model on those alone for their Grad-CAM, so a pool of 100,000 rows
costs little more than one of 100: the scatter of the whole pool is binned into one image. Needs numpy,
pyarrow and Pillow, plus PyTorch for a .pt model or onnxruntime for an .onnx one.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, fields

import numpy as np

from .._atomic import OutputLock, remove_stale_temporaries
from .._checks import bad_argument, check_bool, check_device, check_fraction, check_int
from .._paths import check_writable
from ..errors import EgalError, EgalTypeError
from ..pipeline.options import MODEL_BATCH_SIZE
from .html import PAGE_FILE, definition_list, escape, figure, page, table, write_page
from .selection_data import (
    QUADRANTS,
    quadrant_examples,
    read_scores,
    read_selection,
    rows_in_error,
    split_quadrants,
)

ERRORS_SHOWN = 200  # rows in error listed on the page (all are counted)
# How far the model's numbers for a row shown may lie from the scores' (a .pt and its ONNX export agree to 1e-5).
REPRODUCE_ATOL = 1e-3
# Whether the model file is the one whose sha256 the scores record (None: they record none).
MODEL_PROVENANCE = {None: "; the scores do not record which model wrote them",
                    True: "; the file that wrote the scores",
                    False: "; not the file that wrote the scores, but it reproduces their numbers for the rows shown "
                           "(the same model in another format)"}


@dataclass(frozen=True)
class SelectionReportOptions:
    """One selection page. Checked when made: a bad value raises ValueError / TypeError naming the field.

    scores:      egal score's output (Parquet, one row per pool row)
    pool:        the pool it scored (images and ROIs are read from it for the rows shown)
    model:       the model that scored it, .pt or .onnx (its Grad-CAM is drawn; a model that does not reproduce
                 the scores of the rows shown is refused)
    out:         folder for report.html (created)
    select:      show the `select` best-ranked rows as the selection (instead of a selection file)
    selection:   the selection file egal score --select wrote (default: NAME.selection.csv beside the scores;
                 it may be a diverse or per-patient batch); without one and without `select`, the 30 best
    examples:    example cards per quadrant
    entropy_threshold, misalignment_threshold: where "high" starts in the quadrant plot; None: the middle
                 of the term's range over the pool's plotted rows, or 0.5 when that range is narrower than
                 0.1 (egal.report.selection_data.MIN_SPREAD)
    batch_size:  images per model call for the Grad-CAM of the rows shown
    device:      where the model runs: "cpu", "cuda" or "cuda:N"
    overwrite:   replace an existing out/report.html
    progress:    say what it does on stderr
    """

    scores: str
    pool: str
    model: str
    out: str = "report"
    select: int | None = None
    selection: str | None = None
    examples: int = 3
    entropy_threshold: float | None = None
    misalignment_threshold: float | None = None
    batch_size: int = MODEL_BATCH_SIZE
    device: str = "cpu"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        for name in ("scores", "pool", "model", "out"):
            value = getattr(self, name)
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                raise bad_argument(EgalTypeError, name, f"must be a path, got {value!r}")
            object.__setattr__(self, name, os.fspath(value))
        if self.select is not None:
            check_int(self.select, "select")  # as egal score --select: a page of no selection is a mistake
        if self.selection is not None:
            object.__setattr__(self, "selection", os.fspath(self.selection))
            if self.select is not None:
                raise bad_argument(EgalError, "select", "and selection exclude each other: select=K shows the K "
                                   "best-ranked rows, selection a selection file")
        check_int(self.examples, "examples", minimum=0)
        for name in ("entropy_threshold", "misalignment_threshold"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_fraction(getattr(self, name), name))
        check_int(self.batch_size, "batch_size")
        check_device(self.device, "device")
        check_bool(self.overwrite, "overwrite")
        check_bool(self.progress, "progress")


DEFAULTS = {f.name: f.default for f in fields(SelectionReportOptions) if f.name not in ("scores", "pool", "model")}


@dataclass(frozen=True)
class SelectionReport:
    """What selection_report wrote: the page, how many cards (selection + examples), and the time taken."""

    path: str
    selected: int
    examples: int
    gradcam_rows: int  # rows the model ran on: the distinct rows shown
    seconds: float

    @property
    def mib(self) -> float:
        """The page's size in MiB (its images are inside it)."""
        return os.path.getsize(self.path) / 2**20


def selection_report(scores, pool, model, *, scoring_seconds: float | None = None, **options) -> SelectionReport:
    """Writes the selection page (see SelectionReportOptions for the keyword arguments and their defaults).
    scoring_seconds: how long scoring took, for the summary (egal score --report passes it)."""
    return run_selection_report(SelectionReportOptions(scores=scores, pool=pool, model=model, **options),
                                scoring_seconds=scoring_seconds)


def run_selection_report(options: SelectionReportOptions, *, scoring_seconds: float | None = None) -> SelectionReport:
    started = time.perf_counter()
    o = options
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if o.progress else (lambda text: None)
    with page_out_locked(o.out, o.overwrite) as path:
        return _write_selection_page(o, path, started, scoring_seconds, log)


def _write_selection_page(o: SelectionReportOptions, path: str, started: float, scoring_seconds,
                          log) -> SelectionReport:
    from .._paths import file_sha256
    from ..pipeline.model_runner import load_runner
    from ..pool import open_pool

    scores = read_scores(o.scores)
    spec = open_pool(o.pool)
    if spec.num_rows != len(scores):
        raise EgalError(f"pool {o.pool!r} has {spec.num_rows} rows but scores {o.scores!r} has {len(scores)}: "
                        "not the pool that was scored")
    runner = load_runner(o.model, o.device)  # first: a missing or damaged model file is named as such
    recorded = (scores.run or {}).get("model_sha256")
    same_file = None if recorded is None else recorded == file_sha256(o.model)
    picked = read_selection(scores, o.select, o.selection)
    chosen = picked.positions
    split = split_quadrants(scores, o.entropy_threshold, o.misalignment_threshold)
    examples = quadrant_examples(scores, split, o.examples)
    shown = list(dict.fromkeys([*chosen.tolist(), *np.concatenate(examples).tolist()]))
    log(f"report: {len(scores)} scored rows, {len(chosen)} selected; Grad-CAM for the {len(shown)} rows shown")
    pictures = _pictures(spec, scores, runner, shown, o.batch_size)
    body = _body(o, scores, spec, runner, same_file, picked, split, examples, pictures, scoring_seconds)
    write_page(path, page(f"egal selection: {len(chosen)} images to annotate next", body))
    # What was written, the caller says (egal report and egal score --report print it once, on stdout).
    return SelectionReport(path, len(chosen), int(sum(len(e) for e in examples)), len(shown),
                           time.perf_counter() - started)


@contextlib.contextmanager
def page_out_locked(out, overwrite: bool):
    """OUT/report.html (check_page_out), with OUT made and the page's output lock held until the block ends: a
    second egal writing a page into OUT meanwhile is refused at once, rather than both doing the Grad-CAM work and
    the later one replacing the page without overwrite. A folder made here and left empty by a failure is
    removed."""
    path = check_page_out(out, overwrite)
    made = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    try:
        with OutputLock(path, "out (--out)"):
            check_page_out(out, overwrite)  # again under the lock: a run that held it may have written the page
            remove_stale_temporaries(path)  # the half-written pages of killed runs
            yield path
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(out)  # only if empty
        raise


def check_page_out(out, overwrite: bool) -> str:
    """OUT/report.html, refused (EgalError) when it exists and overwrite is False (a page is never replaced unasked)
    or cannot be written there."""
    path = os.path.join(os.fspath(out), PAGE_FILE)
    if os.path.exists(out) and not os.path.isdir(out):  # said now, not after the Grad-CAM work
        raise EgalError(f"out {os.fspath(out)!r} (--out) is a file: the page goes into a folder (OUT/{PAGE_FILE}); "
                        "name a new or existing folder")
    check_writable(out, "out (--out)", inside=True)
    if os.path.exists(path) and not overwrite:
        raise EgalError(f"out {os.fspath(out)!r} (--out) already holds {PAGE_FILE}: pass overwrite=True "
                        "(--overwrite) to replace it, or choose another out")
    return path


def _pictures(spec, scores, runner, shown, batch_size) -> dict:
    """position -> (grey [H, W], mask [H, W], cam [h, w] or None, problem or None) for the rows shown."""
    import egal

    from ..pool import DecodeSettings, decode_batch
    from .pool_rows import read_pool_rows

    out = {}
    settings = DecodeSettings(input_size=runner.input_size, in_channels=runner.in_channels)
    for start in range(0, len(shown), batch_size):
        positions = shown[start:start + batch_size]
        raw = read_pool_rows(spec, positions)
        for position, found in zip(positions, raw.ids, strict=True):
            if found != scores.ids[position]:
                raise EgalError(f"pool row {position} is {str(found)!r} but the scores have "
                                f"{str(scores.ids[position])!r} there: the pool changed since it was scored, or this "
                                "is another pool")
        decoded = decode_batch(raw, settings)
        ok = decoded.ok
        cams = np.full((len(positions),), None, dtype=object)
        if ok.any():
            images = np.ascontiguousarray(decoded.images[ok])
            masks = runner.to_device(np.ascontiguousarray(decoded.masks[ok]))
            result = egal.score_batch(**runner.gradcam_inputs(images), masks=masks, return_cam=True)
            for j, i in enumerate(np.flatnonzero(ok)):
                _check_reproduces(scores, positions[i], runner.classes, result, j)
                cams[i] = np.asarray(result.cam[j])
        for i, position in enumerate(positions):
            grey = decoded.images[i].mean(axis=0)
            out[position] = (grey if ok[i] else None, decoded.masks[i], cams[i], decoded.errors[i])
    return out


def _check_reproduces(scores, position, classes, result, j) -> None:
    """The model must give the row the numbers the scores hold, or its Grad-CAM would explain other scores."""
    ours = {"pred": classes[int(result.pred[j])] if result.pred[j] >= 0 else None,
            "entropy_norm": float(result.entropy_norm[j]), "misalignment": float(result.misalignment[j])}
    theirs = {"pred": scores.pred[position], "entropy_norm": float(scores.entropy_norm[position]),
              "misalignment": float(scores.misalignment[position])}
    if not scores.ok[position]:
        return  # scored in error then, decoded now: nothing to compare
    for name in ("entropy_norm", "misalignment"):
        a, b = ours[name], theirs[name]
        if not (np.isnan(a) and np.isnan(b)) and not abs(a - b) <= REPRODUCE_ATOL:
            break
    else:
        if ours["pred"] == theirs["pred"]:
            return
        name = "pred"
    now, then = (str(v) if isinstance(v, str) else v for v in (ours[name], theirs[name]))
    raise EgalError(f"row {str(scores.ids[position])!r} does not score as it did ({name} {now!r} now, {then!r} in "
                    f"{scores.path!r}): the model, or the pool's image or ROI for that row, is not the one that was "
                    "scored, so its Grad-CAM would not explain these scores")


def _card_data(position, scores, split, chosen_set, pictures):
    from .cards import CardData

    grey, mask, cam, problem = pictures[position]
    quadrant = split.of_row[position]
    return CardData(row=position, id=str(scores.ids[position]), grey=grey, mask=mask, cam=cam,
                    pred=scores.pred[position], entropy_norm=scores.entropy_norm[position],
                    misalignment=scores.misalignment[position], score=scores.score[position],
                    rank=scores.rank[position], quadrant=QUADRANTS[quadrant].name if quadrant >= 0 else None,
                    selected=position in chosen_set, problem=problem)


def _body(o, scores, spec, runner, same_file, picked, split, examples, pictures, scoring_seconds) -> str:
    from .cards import cards, colour_key
    from .svg_plots import density_scatter, histogram

    chosen = picked.positions
    chosen_set = set(chosen.tolist())
    run = scores.run or {}
    n_ok = int(scores.ok.sum())
    plotted = split.of_row >= 0
    alpha = run.get("alpha")
    summary = definition_list([
        ("scores", o.scores),
        ("pool", f"{o.pool} ({spec.num_rows:,} rows)"),
        ("model", runner.describe() + MODEL_PROVENANCE[same_file]),
        ("alpha (entropy weight)", "not recorded" if alpha is None else f"{alpha:g}"),
        ("combination", run.get("combine", "not recorded")),
        ("rows scored", f"{n_ok:,} of {len(scores):,} ({len(scores) - n_ok:,} in error)"),
        ("scoring time", "not recorded in the scores file" if scoring_seconds is None
         else f"{scoring_seconds:.1f} s ({n_ok / max(scoring_seconds, 1e-9):.1f} rows/s)"),
        ("selection", picked.source),
        ("scored by", f"egal {run['egal_version']} on {run.get('device', '?')}, engine {run.get('engine', '?')}"
         if "egal_version" in run else "an egal that did not record its run"),
    ])
    parts = [f"<h1>{len(chosen)} images to annotate next</h1>",
             "<p class='lead'>Ranked by egal's score: the normalised softmax entropy of the classifier (how unsure "
             "it is) mixed with the misalignment, the soft Dice distance between its Grad-CAM and the expert region "
             "of interest (how far it looks from the finding); docs/scoring.md defines both.</p>",
             "<h2 id='summary'>Summary</h2>", summary]
    key = colour_key("Grad-CAM of the predicted class (normalised, 0–1, no unit)")
    parts += ["<h2 id='selection'>The selection</h2>", key,
              "<div id='selected'>" + cards((_card_data(p, scores, split, chosen_set, pictures)
                                             for p in chosen.tolist()), badge=False) + "</div>"
              if len(chosen) else "<p class='muted'>No row could be ranked, so nothing is selected.</p>"]
    quadrant_rows = []
    pool_counts, selection_counts = split.counts(), split.counts(chosen)
    for quadrant, n_pool, n_sel in zip(QUADRANTS, pool_counts, selection_counts, strict=True):
        share = f"{100 * n_pool / max(1, plotted.sum()):.1f} %"
        quadrant_rows.append((quadrant.name, quadrant.meaning, f"{n_pool:,}", share, f"{n_sel:,}"))
    scatter = density_scatter(
        scores.misalignment[plotted], scores.entropy_norm[plotted],
        x_label="misalignment: soft Dice distance, Grad-CAM to ROI (0–1, no unit)",
        y_label="normalised entropy (0–1, no unit)",
        highlight=(scores.misalignment[chosen], scores.entropy_norm[chosen]),
        thresholds=(split.misalignment_threshold, split.entropy_threshold),
        quadrant_names={(q.misaligned, q.uncertain): q.name for q in QUADRANTS})
    no_roi = int((scores.ok & ~np.isfinite(scores.misalignment)).sum())
    parts += [
        "<h2 id='quadrants'>Uncertainty against attention: the whole pool</h2>",
        figure(scatter, f"Every scored row with an ROI ({int(plotted.sum()):,}), binned; pink rings: the selection. "
               f"Dashed lines: the thresholds (normalised entropy {split.entropy_threshold:.3f}, misalignment "
               f"{split.misalignment_threshold:.3f}; {split.chosen_by}). {no_roi:,} scored row(s) without ROI have "
               "no misalignment and are not drawn.", css_id="scatter"),
        table(("quadrant", "what it means", "pool", "share of the plotted pool", "selected"), quadrant_rows,
              numeric=(False, False, True, True, True)),
        "<h2 id='examples'>Examples from each quadrant</h2>",
        "<p class='note'>The rows deepest inside each quadrant (farthest past both thresholds), selected or "
        "not.</p>",
    ]
    for quadrant, rows in zip(QUADRANTS, examples, strict=True):
        parts.append(f"<h3 id='examples-{quadrant.key}'>{escape(quadrant.name)}</h3>")
        parts.append(cards(_card_data(p, scores, split, chosen_set, pictures) for p in rows.tolist())
                     if len(rows) else "<p class='muted'>No row in this quadrant.</p>")
    cutoff = float(np.nanmin(scores.score[chosen])) if len(chosen) else float("nan")  # a diverse batch: any order
    distribution = histogram(scores.score[scores.ok], x_label="score (0–1, no unit)", y_label="rows (count)",
                             marker=(cutoff, f"selection: score ≥ {cutoff:.3f}"))
    parts += ["<h2 id='scores'>Score distribution</h2>",
              figure(distribution, f"Scores of the {n_ok:,} scored rows; the dashed line is the lowest score in the "
                     "selection.", css_id="score-histogram")]
    errors = rows_in_error(scores)
    parts.append(f"<h2 id='errors'>Rows in error ({len(errors):,})</h2>")
    if errors:
        parts.append("<p class='note'>These rows could not be scored and are never selected; the reason is the "
                     "scores file's error column." + (f" The first {ERRORS_SHOWN} are listed." if len(errors) >
                                                      ERRORS_SHOWN else "") + "</p>")
        parts.append(table(("pool row", "id", "reason"), errors[:ERRORS_SHOWN], numeric=(True, False, False)))
    else:
        parts.append("<p class='muted'>None: every row was scored.</p>")
    return "\n".join(parts)
