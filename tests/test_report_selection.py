"""egal report's selection page: what it shows is what the scores, the pool and the model say, it reads only the rows
it shows, and it refuses what would make it lie (another model, another pool). The browser checks are in
test_report_browser.py; the pages' pictures are decoded here with Pillow."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import egal
from egal.cli import main
from egal.errors import EgalError
from egal.pool import open_pool
from egal.report import selection_report
from egal.report.cam_grid import choose_test_images
from egal.report.imaging import cam_overlay, colorize, colormap_stops, draw_outline, grey_to_rgb
from egal.report.pool_rows import read_pool_rows
from egal.report.selection_data import QUADRANTS, read_scores, read_selection, split_quadrants
from egal.report.selection_page import DEFAULTS, SelectionReportOptions
from egal.report.svg_plots import nice_ticks
from pools import make_rows, save_tiny_model, write_pool

INPUT = (64, 64)
SELECT = 10
EXAMPLES = 2


def scored_pool(folder, *, n=60, select=SELECT, storage="inline", roi="mask", bad_rows=(5, 17)):
    """A pool (some rows without ROI, `bad_rows` undecodable), a tiny model as .pt and .onnx, and egal.score_pool's
    output with a selection file. Returns a dict of paths."""
    from egal.onnx import export_onnx

    os.makedirs(folder, exist_ok=True)
    rows = make_rows(n, folder=folder, size=80, storage=storage, roi=roi, empty_every=7)
    for i in bad_rows:
        if storage == "inline":
            rows[i]["image"] = b"not an image"
    pool = write_pool(os.path.join(folder, "pool.parquet"), rows)
    model_pt = save_tiny_model(os.path.join(folder, "model.pt"), input_size=INPUT)
    model_onnx = export_onnx(model_pt, os.path.join(folder, "model.onnx"))
    scores = os.path.join(folder, "scores.parquet")
    egal.score_pool(pool, model_onnx, out=scores, select=select, progress=False, workers=0)
    return {"pool": pool, "pt": model_pt, "onnx": model_onnx, "scores": scores, "folder": str(folder)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    paths = scored_pool(tmp_path_factory.mktemp("selection"))
    paths["report"] = selection_report(paths["scores"], paths["pool"], paths["onnx"],
                                       out=os.path.join(paths["folder"], "report"), examples=EXAMPLES, progress=False)
    with open(paths["report"].path, encoding="utf-8") as f:
        paths["html"] = f.read()
    return paths


def section(html: str, ident: str) -> str:
    """The page from <h2 id=ident> up to the next <h2>."""
    start = html.index(f"<h2 id='{ident}'>")
    end = html.find("<h2 ", start + 1)
    return html[start:end if end >= 0 else len(html)]


def card_rows(html: str) -> list:
    return [int(v) for v in re.findall(r"<div class='card' data-row='(\d+)'>", html)]


def card_images(html: str, row: int) -> list:
    """The decoded pictures of the card of pool row `row` (image with ROI, Grad-CAM overlay)."""
    card = html[html.index(f"data-row='{row}'>"):]
    card = card[:card.index("<table class='facts'>")]
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB"))
            for uri in re.findall(r"src='data:image/png;base64,([^']+)'", card)]


def selection_ids(path) -> list:
    with open(path, newline="") as f:
        return [row["id"] for row in csv.DictReader(f)]


def test_the_selection_is_the_selection_file_in_its_order(demo):
    scores = read_scores(demo["scores"])
    chosen = card_rows(section(demo["html"], "selection"))
    assert [scores.ids[r] for r in chosen] == selection_ids(demo["scores"].replace(".parquet", ".selection.csv"))
    assert len(chosen) == SELECT == demo["report"].selected


def test_each_card_shows_the_image_with_its_roi_and_the_models_gradcam(demo):
    from egal.pipeline.model_runner import load_runner
    from egal.pool import DecodeSettings, decode_batch

    spec, scores = open_pool(demo["pool"]), read_scores(demo["scores"])
    runner = load_runner(demo["onnx"])
    shown = card_rows(demo["html"])
    checked_roi = 0
    for row in sorted(set(shown)):
        decoded = decode_batch(read_pool_rows(spec, [row]), DecodeSettings(INPUT, 1))
        expected = egal.score_batch(**runner.gradcam_inputs(decoded.images), masks=decoded.masks, return_cam=True)
        assert runner.classes[expected.pred[0]] == scores.pred[row]
        plain, overlay = card_images(demo["html"], row)
        grey = decoded.images[0, 0]
        want_plain, want_overlay = grey_to_rgb(grey), cam_overlay(grey, expected.cam[0])
        if decoded.has_roi[0]:
            want_plain, want_overlay = draw_outline(want_plain, decoded.masks[0]), draw_outline(want_overlay,
                                                                                                decoded.masks[0])
            checked_roi += 1
        np.testing.assert_array_equal(plain, want_plain)
        # One batch against another: the maps agree to float rounding, the colours to a level.
        np.testing.assert_allclose(overlay, want_overlay, rtol=0, atol=1)
    assert checked_roi > 0


def test_the_quadrant_counts_are_the_scores(demo):
    table = pq.read_table(demo["scores"]).to_pydict()
    ok = np.array([s == "ok" for s in table["status"]])
    h = np.array(table["entropy_norm"], dtype=float)
    d = np.array(table["misalignment"], dtype=float)
    plotted = ok & np.isfinite(d)
    from egal.report.selection_data import MIN_SPREAD

    middle = lambda v: 0.5 if np.ptp(v) < MIN_SPREAD else (v.min() + v.max()) / 2  # noqa: E731
    th, td = middle(h[plotted]), middle(d[plotted])
    expected = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for hv, dv in zip(h[plotted], d[plotted], strict=True):
        expected[(bool(hv > th), bool(dv > td))] += 1
    counts = re.findall(r"<tr><td>([^<]+)</td><td>[^<]+</td><td class='num'>(\d+)</td>",
                        section(demo["html"], "quadrants"))
    assert {name: int(n) for name, n in counts} == {q.name: expected[(q.uncertain, q.misaligned)] for q in QUADRANTS}
    assert sum(expected.values()) == plotted.sum() and plotted.sum() < ok.sum()  # rows without ROI are not drawn


def test_examples_are_the_rows_deepest_in_each_quadrant(demo):
    scores = read_scores(demo["scores"])
    split = split_quadrants(scores)
    examples = section(demo["html"], "examples")
    parts = re.split(r"<h3 id='examples-([a-z_]+)'>", examples)[1:]
    assert parts[::2] == [q.key for q in QUADRANTS]
    for q, part in enumerate(parts[1::2]):
        rows = card_rows(part)
        members = np.flatnonzero(split.of_row == q)
        assert len(rows) == min(EXAMPLES, len(members))
        assert set(rows) <= set(members.tolist())


def test_rows_in_error_and_the_summary(demo):
    errors = section(demo["html"], "errors")
    scores = read_scores(demo["scores"])
    bad = [str(scores.ids[i]) for i in np.flatnonzero(~scores.ok)]
    assert len(bad) == 2 and all(b in errors for b in bad) and "image:" in errors
    summary = section(demo["html"], "summary")
    for text in ("alpha (entropy weight)</dt><dd>0.5", "combination</dt><dd>raw", "58 of 60 (2 in error)",
                 "model.onnx (onnx, cpu", "the file that wrote the scores", "not recorded in the scores file"):
        assert text in summary, text


def test_the_pt_model_draws_the_same_page_as_its_onnx_export(demo, tmp_path):
    report = selection_report(demo["scores"], demo["pool"], demo["pt"], out=tmp_path, examples=EXAMPLES,
                              progress=False)
    html = open(report.path, encoding="utf-8").read()
    assert card_rows(html) == card_rows(demo["html"])
    assert "reproduces their numbers for the rows shown" in html


def test_a_model_that_did_not_score_the_pool_is_refused(demo, tmp_path):
    other = save_tiny_model(tmp_path / "other.pt", input_size=INPUT, seed=7)
    with pytest.raises(EgalError, match="does not score as it did"):
        selection_report(demo["scores"], demo["pool"], other, out=tmp_path / "page", progress=False)
    with pytest.raises(FileNotFoundError, match="model file '.*missing.onnx' does not exist"):  # was a bare Errno 2
        selection_report(demo["scores"], demo["pool"], tmp_path / "missing.onnx", out=tmp_path / "page",
                         progress=False)


def test_another_pool_is_refused(demo, tmp_path):
    rows = make_rows(60, folder=tmp_path, size=80, seed=3, id_prefix="other")
    other = write_pool(tmp_path / "other.parquet", rows)
    with pytest.raises(EgalError, match="the pool changed since it was scored"):
        selection_report(demo["scores"], other, demo["onnx"], out=tmp_path / "page", progress=False)
    shorter = write_pool(tmp_path / "short.parquet", make_rows(12, folder=tmp_path, size=80))
    with pytest.raises(EgalError, match="has 12 rows but scores"):
        selection_report(demo["scores"], shorter, demo["onnx"], out=tmp_path / "page", progress=False)


def test_an_existing_page_is_replaced_only_when_asked(demo):
    out = os.path.dirname(demo["report"].path)
    with pytest.raises(EgalError, match=r"already holds report\.html: pass overwrite=True \(--overwrite\) to replace "
                       "it, or choose another out$"):
        selection_report(demo["scores"], demo["pool"], demo["onnx"], out=out, progress=False)


def test_a_page_another_egal_is_writing_is_refused_before_any_work(demo, tmp_path, monkeypatch):
    # Before, both runs did the Grad-CAM work and the later one replaced the other's page without overwrite.
    import egal.pipeline.model_runner
    from egal._atomic import DestinationError, OutputLock

    out = tmp_path / "page"
    out.mkdir()
    with OutputLock(out / "report.html", "out (--out)"):  # another egal writing OUT/report.html now
        monkeypatch.setattr(egal.pipeline.model_runner, "load_runner", lambda *a, **k: pytest.fail("did work"))
        with pytest.raises(DestinationError, match=r"out \(--out\) '.*report\.html' is being written by another egal "
                           "now"):
            selection_report(demo["scores"], demo["pool"], demo["onnx"], out=out, overwrite=True, progress=False)
        monkeypatch.undo()
    assert os.listdir(out) == []  # nothing written, and the lock file gone with its holder
    report = selection_report(demo["scores"], demo["pool"], demo["onnx"], out=out, progress=False)
    assert os.path.isfile(report.path) and sorted(os.listdir(out)) == ["report.html"]


def test_pages_that_killed_runs_left_half_written_are_removed(demo, tmp_path):
    out = tmp_path / "page"
    out.mkdir()
    killed = out / "report.html.tmp-99999999-0123abcd"  # a run SIGKILLed while it wrote (no such process now)
    running = out / f"report.html.tmp-{os.getpid()}-4567cdef"  # one whose process still runs: never touched
    killed.write_text("<html>half")
    running.write_text("<html>being written")
    selection_report(demo["scores"], demo["pool"], demo["onnx"], out=out, progress=False)
    assert sorted(os.listdir(out)) == sorted(["report.html", running.name])


def test_a_failed_page_leaves_no_folder_it_made(demo, tmp_path):
    out = tmp_path / "new" / "page"
    with pytest.raises(FileNotFoundError):
        selection_report(demo["scores"], demo["pool"], tmp_path / "missing.onnx", out=out, progress=False)
    assert not out.exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(FileNotFoundError):
        selection_report(demo["scores"], demo["pool"], tmp_path / "missing.onnx", out=tmp_path / "kept",
                         progress=False)
    assert (tmp_path / "kept").is_dir()  # a folder that was there stays


def test_select_k_shows_the_best_ranked_and_a_selection_file_can_be_named(demo, tmp_path):
    scores = read_scores(demo["scores"])
    top = read_selection(scores, select=4)
    assert scores.rank[top.positions].tolist() == [1, 2, 3, 4]
    path = tmp_path / "mine.csv"
    path.write_text("rank,id\n1,scan_0030\n2,scan_0003\n")
    assert [scores.ids[p] for p in read_selection(scores, selection_csv=str(path)).positions] == ["scan_0030",
                                                                                                  "scan_0003"]
    path.write_text("rank,id\n1,nobody\n")
    with pytest.raises(EgalError, match="not in"):
        read_selection(scores, selection_csv=str(path))
    path.write_text("rank,id\n1,scan_0030\n2,scan_0003\n3,scan_0030\n")
    with pytest.raises(EgalError, match="1 id\\(s\\) more than once, first 'scan_0030'"):
        read_selection(scores, selection_csv=str(path))
    with pytest.raises(EgalError, match="not both"):
        read_selection(scores, select=3, selection_csv=str(path))
    path.write_text("rank,id\n")
    with pytest.raises(EgalError, match="has a header but no rows: no selection to show"):
        read_selection(scores, selection_csv=str(path))


def test_read_pool_rows_reads_any_rows_in_the_order_asked(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    for part in range(3):  # three files of 3 row groups each
        rows = make_rows(30, folder=folder, size=32, seed=part, id_prefix=f"f{part}")
        pq.write_table(pa.Table.from_pylist(rows), folder / f"part{part}.parquet", row_group_size=10)
    spec = open_pool(folder)
    everything = [row for batch in spec.iter_batches(90) for row in batch.ids]
    positions = [89, 0, 45, 10, 9, 30, 61]
    raw = read_pool_rows(spec, positions)
    assert raw.ids == [everything[p] for p in positions] and raw.rows == positions
    assert all(isinstance(image, bytes) for image in raw.images)
    with pytest.raises(EgalError, match="no row 90"):
        read_pool_rows(spec, [90])


def repeated_pool(base: dict, folder, repeats: int) -> tuple:
    """(scores, pool) paths of base's pool (from scored_pool(storage="path")) repeated `repeats` times under new
    ids: a repeat's scores are its scan's scores, so the scores are what scoring the whole pool would give, at
    the cost of scoring the base rows once (the pool references the same image and mask files)."""
    from egal.pipeline.output_layout import RUN_METADATA_KEY
    from egal.pipeline.ranking import rank_table

    small, pool = pq.read_table(base["scores"]), pq.read_table(base["pool"])
    ids = [f"{i}_{k:05d}" for k in range(repeats) for i in small.column("id").to_pylist()]
    big_pool = pa.table({"id": ids, "image_path": pool.column("image_path").to_pylist() * repeats,
                         "mask_path": pool.column("mask_path").to_pylist() * repeats})
    pool_path = os.path.join(folder, f"pool_x{repeats}.parquet")
    pq.write_table(big_pool, pool_path, row_group_size=4096)
    columns = {name: small.column(name).to_pylist() * repeats for name in small.column_names if name != "rank"}
    columns.update(id=ids, row=list(range(len(ids))))
    metadata = dict(small.schema.metadata)
    run = json.loads(metadata[RUN_METADATA_KEY])
    run["pool"] = {**run["pool"], "path": pool_path, "num_rows": len(ids)}  # the record of a run over the big pool
    metadata[RUN_METADATA_KEY] = json.dumps(run).encode()
    ranked = rank_table(pa.table(columns), alpha=0.5).replace_schema_metadata(metadata)
    scores_path = os.path.join(folder, f"scores_x{repeats}.parquet")
    pq.write_table(ranked, scores_path)
    return scores_path, pool_path


def test_a_100000_row_pool_reads_and_explains_only_the_rows_shown(tmp_path, monkeypatch):
    base = scored_pool(tmp_path, n=100, storage="path", roi="mask_path", bad_rows=())
    scores, pool = repeated_pool(base, tmp_path, 1000)
    decoded_rows = []
    real_decode = egal.pool.decode_batch

    def counting(raw, settings):
        decoded_rows.extend(raw.ids)
        return real_decode(raw, settings)

    monkeypatch.setattr(egal.pool, "decode_batch", counting)
    big = selection_report(scores, pool, base["onnx"], out=tmp_path / "big_page", select=30, progress=False)
    assert big.selected == 30 and len(decoded_rows) == big.gradcam_rows == len(set(decoded_rows)) <= 30 + 4 * 3
    small_page = selection_report(base["scores"], base["pool"], base["onnx"], out=tmp_path / "small_page",
                                  select=30, progress=False)
    html = open(big.path, encoding="utf-8").read()
    assert "100,000 rows" in html
    # The whole pool is one binned image: the page does not grow with the pool.
    assert os.path.getsize(big.path) < 1.5 * os.path.getsize(small_page.path)


def test_the_cli_writes_the_page_and_names_its_flags(demo, tmp_path, capsys):
    out = tmp_path / "page"
    args = ["report", "--scores", demo["scores"], "--pool", demo["pool"], "--model", demo["onnx"], "--out", str(out)]
    assert main(args + ["--quiet"]) == 0
    assert (out / "report.html").stat().st_size > 10_000
    assert capsys.readouterr().out == ""
    assert main(args + ["--out", str(tmp_path / "again")]) == 0
    printed = capsys.readouterr()
    # Where the page went is said once, on stdout (stderr said it too, with its size): stderr has the progress.
    assert re.fullmatch(r"Wrote \S+report\.html \([0-9.]+ MiB\): 10 selected and \d+ example image\(s\), Grad-CAM "
                        r"for \d+ row\(s\), [0-9.]+ s\n", printed.out), printed.out
    assert "report.html" not in printed.err
    assert main(args) == 2
    assert capsys.readouterr().err == f"egal report: error: --out {str(out)!r} already holds report.html: pass " \
        "--overwrite to replace it, or choose another --out\n"
    for flag, value, message in (("--examples", "-1", "--examples must be a non-negative integer"),
                                 ("--entropy-threshold", "2", "--entropy-threshold must lie in [0, 1]"),
                                 ("--batch-size", "0", "--batch-size must be a positive integer"),
                                 ("--select", "0", "--select must be a positive integer")):
        assert main(args + ["--overwrite", flag, value]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "a-file.txt").write_text("the user's")
    assert main(args[:-1] + [str(tmp_path / "a-file.txt")]) == 2
    assert "is a file: the page goes into a folder" in capsys.readouterr().err
    assert (tmp_path / "a-file.txt").read_text() == "the user's"
    assert main(["report", "--scores", demo["scores"], "--pool", demo["pool"]]) == 2
    assert "--model missing" in capsys.readouterr().err
    assert main(["report", "--experiment", str(tmp_path), "--scores", demo["scores"]]) == 2
    assert "one or the other" in capsys.readouterr().err


def test_the_cli_defaults_are_the_options(demo):
    from egal.cli import build_parser

    args = build_parser().parse_args(["report", "--scores", "s", "--pool", "p", "--model", "m"])
    for name, default in DEFAULTS.items():
        if name != "progress":
            assert getattr(args, name) == default, name
    assert SelectionReportOptions(scores="s", pool="p", model="m").out == args.out


def test_egal_score_report_writes_the_page_of_its_selection(tmp_path, capsys):
    rows = make_rows(30, folder=tmp_path, size=80, empty_every=5)
    pool = write_pool(tmp_path / "pool.parquet", rows)
    model = save_tiny_model(tmp_path / "model.pt", input_size=INPUT)
    args = ["score", "--pool", pool, "--model", model, "--out", str(tmp_path / "s.parquet"), "--select", "6",
            "--workers", "0", "--quiet", "--report", str(tmp_path / "page")]
    assert main(args) == 0
    html = (tmp_path / "page" / "report.html").read_text()
    scores = read_scores(tmp_path / "s.parquet")
    assert [scores.ids[r] for r in card_rows(section(html, "selection"))] == selection_ids(tmp_path / "s.selection.csv")
    scoring_time = section(html, "summary").split("scoring time</dt><dd>")[1][:40]
    assert re.match(r"[0-9.]+ s \(", scoring_time), scoring_time
    capsys.readouterr()
    os.remove(tmp_path / "s.parquet")
    assert main(args) == 2  # the page exists: refused before scoring anything
    assert f"--report {str(tmp_path / 'page')!r} already holds report.html: pass --overwrite to replace it, or " \
        "choose another --report\n" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet").exists()


TORCH_FREE = textwrap.dedent("""
    import importlib.abc, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "matplotlib"):
                raise ImportError(f"{name} is blocked: this process stands for an inference-only node")

    sys.meta_path.insert(0, Blocked())
    from egal.cli import main
    status = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "matplotlib"))
    assert not loaded, loaded
    sys.exit(status)
""")


def test_the_selection_page_needs_neither_torch_nor_matplotlib_with_an_onnx_model(demo, tmp_path):
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(egal.__file__))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", TORCH_FREE, "report", "--scores", demo["scores"], "--pool",
                           demo["pool"], "--model", demo["onnx"], "--out", str(tmp_path), "--examples", str(EXAMPLES),
                           "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert card_rows((tmp_path / "report.html").read_text()) == card_rows(demo["html"])


def test_picture_helpers():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.89, 0.97, 4) == [0.9, 0.92, 0.94, 0.96]
    stops = colormap_stops("viridis")
    np.testing.assert_array_equal(colorize(np.array([0.0, 1.0, np.nan, 7.0]), "viridis"),
                                  [stops[0], stops[-1], stops[0], stops[-1]])
    mask = np.zeros((7, 7), np.uint8)
    mask[2:5, 2:5] = 1
    outlined = draw_outline(np.zeros((7, 7, 3), np.uint8), mask)
    painted = outlined.any(axis=-1)
    assert painted.sum() == 8 and not painted[3, 3] and painted[2, 2]  # the ring, not the inside


def test_grid_images_are_two_per_class_with_an_roi():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    masks = np.zeros((10, 4, 4), np.uint8)
    masks[[0, 2, 3, 4, 6, 7, 8], 1, 1] = 1
    test = np.arange(10)
    chosen = choose_test_images(labels, masks, test)
    assert chosen.tolist() == choose_test_images(labels, masks, test).tolist()  # drawn the same every time
    assert [int(labels[c]) for c in chosen] == [0, 0, 1, 1, 2, 2] and all(masks[c].any() for c in chosen)
    assert json.dumps(chosen.tolist())


def _scored(entropy, misalignment, ids=None):
    from egal.report.selection_data import ScoredPool

    n = len(entropy)
    ids = np.array(ids or [f"r{i}" for i in range(n)])
    score = (np.asarray(entropy) + np.asarray(misalignment)) / 2
    return ScoredPool("scores.parquet", ids, ["a"] * n, np.asarray(entropy, float), np.asarray(misalignment, float),
                      score, np.arange(1, n + 1, dtype=float), np.ones(n, bool), [None] * n, None)


def test_quadrants_of_a_narrow_or_flat_range_are_split_at_the_middle_of_the_scale():
    # The middle of the range split rounding noise: rows at entropy_norm 0.998 (maximally unsure) were
    # "confident", and a pool of one value fell wholly into "confident, looking at the ROI".
    flat = split_quadrants(_scored([1.0] * 6, [1.0] * 6))
    assert (flat.entropy_threshold, flat.misalignment_threshold) == (0.5, 0.5)
    assert flat.counts() == [6, 0, 0, 0] and "too little to split" in flat.chosen_by
    narrow = split_quadrants(_scored([0.99827, 0.9983, 0.99838, 0.99835], [0.2, 0.9, 0.3, 0.8]))
    assert narrow.entropy_threshold == 0.5 and narrow.misalignment_threshold == pytest.approx(0.55)
    assert [QUADRANTS[q].uncertain for q in narrow.of_row] == [True] * 4
    wide = split_quadrants(_scored([0.1, 0.9, 0.5], [0.2, 0.8, 0.5]))
    assert (wide.entropy_threshold, wide.misalignment_threshold) == (0.5, 0.5) and "middle of its range" in (
        wide.chosen_by)


def test_axis_ticks_read_apart_count_axes_are_whole_and_thresholds_stay_on_the_plot():
    from egal.report.svg_plots import density_scatter, histogram

    labels = lambda svg: re.findall(r"text-anchor='(?:middle|end)' [^>]*>([^<]+)</text>", svg)  # noqa: E731
    narrow = density_scatter([0.99827, 0.99838, 0.9983], [0.4, 0.5, 0.45], x_label="h", y_label="d")
    ticks = [t for t in labels(narrow) if t.startswith("0.99")]
    assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), ticks  # were '0.998', '0.999', '0.999'
    bars = histogram([0.2, 0.3, 0.3, 0.5], x_label="score")
    y_ticks = re.findall(r"text-anchor='end' [^>]*>([^<]+)</text>", bars)
    assert y_ticks and all(t.isdigit() for t in y_ticks), y_ticks  # were 0.5 and 2.5 rows
    off = density_scatter([0.4, 0.6], [0.4, 0.6], x_label="h", y_label="d", thresholds=(0.05, 0.95))
    for x1, y1 in re.findall(r"<line x1='([-\d.]+)' y1='([-\d.]+)'[^>]*stroke='#d33'", off):
        assert 0 <= float(x1) <= 640 and 0 <= float(y1) <= 460  # drawn at x = -587.7 before


def test_a_selection_file_left_by_an_earlier_run_is_not_shown_as_this_runs(demo, tmp_path):
    import shutil

    scores = tmp_path / "scores.parquet"
    shutil.copy(demo["scores"], scores)
    table = pq.read_table(scores).to_pydict()
    best = table["id"][table["rank"].index(3)]
    (tmp_path / "scores.selection.csv").write_text(f"rank,id,score\n1,{best},0.123456\n")
    with pytest.raises(EgalError, match=f"gives row '{best}' the score 0.123456"):
        read_selection(read_scores(scores))
    # The file of this run is shown; a file named by the user is the user's choice, scores or not.
    (tmp_path / "scores.selection.csv").write_text(
        f"rank,id,score\n3,{best},{table['score'][table['rank'].index(3)]:.6f}\n")
    assert read_selection(read_scores(scores)).positions.tolist() == [table["id"].index(best)]
    assert read_selection(read_scores(scores), select=10**5).source.endswith("only " + str(
        sum(r is not None for r in table["rank"])) + " rows have a rank)")


def test_the_histograms_cut_off_is_the_lowest_score_of_a_selection_in_any_order(demo, tmp_path):
    table = pq.read_table(demo["scores"]).to_pydict()
    by_rank = {r: i for i, r in enumerate(table["rank"]) if r is not None}
    order = [by_rank[1], by_rank[5], by_rank[2]]  # a diverse batch's order: the last is not the lowest
    path = tmp_path / "mine.csv"
    path.write_text("id\n" + "".join(f"{table['id'][i]}\n" for i in order))
    report = selection_report(demo["scores"], demo["pool"], demo["onnx"], out=tmp_path / "page", selection=str(path),
                              examples=0, progress=False)
    html = open(report.path, encoding="utf-8").read()
    lowest = min(table["score"][i] for i in order)
    assert f"selection: score ≥ {lowest:.3f}" in section(html, "scores")


def test_a_model_path_that_is_a_folder_is_named_as_one(demo, tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder: name the model file"):  # said "does not exist"
        selection_report(demo["scores"], demo["pool"], tmp_path / "models", out=tmp_path / "page", progress=False)


def test_a_selection_file_finds_ids_that_egal_escaped_for_spreadsheets_or_that_have_spaces(tmp_path):
    """egal report reads a selection's ids as export-selection and add-labels do (egal.importers.tables.match_ids):
    it refused its own selection file when an id began with '=' (written "'=...") or ended in a space."""
    from egal.selection.csv_file import write_selection_csv

    scores = _scored([0.1, 0.2, 0.3], [0.3, 0.2, 0.1], ids=["=cmd()", "trail ", "plain"])
    path = tmp_path / "mine.selection.csv"
    write_selection_csv(pa.table({"rank": [1, 2, 3], "id": ["plain", "trail ", "=cmd()"]}), str(path))
    assert "'=cmd()" in path.read_text()
    assert read_selection(scores, selection_csv=str(path)).positions.tolist() == [2, 1, 0]


def test_a_scores_file_with_a_damaged_run_record_is_named_not_a_traceback(tmp_path):
    """egal report read the record with a bare json.loads: a JSONDecodeError traceback."""
    from egal.report.selection_data import read_scores

    table = pa.table({"id": ["a"], "pred": ["x"], "entropy": [0.1], "entropy_norm": [0.1], "misalignment": [0.2],
                      "score": [0.15], "rank": pa.array([1], pa.int64()), "status": ["ok"],
                      "error": pa.array([None], pa.string())}, metadata={b"egal.run": b"{not json"})
    pq.write_table(table, tmp_path / "scores.parquet")
    with pytest.raises(EgalError, match="has a damaged record of its run"):
        read_scores(tmp_path / "scores.parquet")
