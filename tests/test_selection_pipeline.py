"""Patient-aware, diverse batches through egal score, egal select and egal simulate (egal.selection):
the embeddings sidecar (.pt and .onnx models), 'none' byte for byte as before, selecting again without
rescoring, and the bad inputs as messages with exit status 2."""
import csv
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

import egal  # noqa: E402
from egal.cli import main  # noqa: E402
from egal.gradcam import extract_gradcam_inputs  # noqa: E402
from egal.models import load_model  # noqa: E402
from egal.pool import DecodeSettings, load_pool_arrays  # noqa: E402
from egal.selection import SelectionError  # noqa: E402
from egal.selection.embedding_file import EmbeddingFile, vectors_of  # noqa: E402
from egal.selection.from_scores import select_from_scores  # noqa: E402
from pools import make_rows, save_tiny_model, write_pool  # noqa: E402

INPUT = (64, 64)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt", input_size=INPUT)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """36 rows of 9 patients (4 slices each), one undecodable, some without ROI."""
    folder = tmp_path_factory.mktemp("pool")
    rows = make_rows(36, folder=folder, empty_every=5)
    for i, row in enumerate(rows):
        row["patient_id"] = f"patient_{i % 9}"
    rows[7]["image"] = b"not an image"
    return write_pool(folder / "pool.parquet", rows)


def score(*args):
    return main(["score", "--quiet", "--workers", "0", *map(str, args)])


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def pooled_features(model_path, pool):
    """Each decodable row's pooled feature (the linear head's selection embedding), computed here directly."""
    model = load_model(model_path).eval()
    arrays = load_pool_arrays(pool, DecodeSettings(input_size=INPUT, in_channels=1))
    ok = np.array([e is None for e in arrays["errors"]])
    inputs = extract_gradcam_inputs(model, torch.from_numpy(arrays["images"][ok]))
    return arrays["ids"][ok], model.pool(inputs.activations).numpy()


# -- the embeddings sidecar ---------------------------------------------------------------------------------

def test_embeddings_are_written_per_row_in_pool_order_with_null_for_rows_in_error(tmp_path, model_path, pool):
    out = tmp_path / "scores.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--embeddings", "--batch-size", 8) == 0
    table = pq.read_table(tmp_path / "scores.embeddings.parquet")
    assert table.column("id").to_pylist() == pq.read_table(out).column("id").to_pylist()
    kind = table.schema.field("embedding").type
    assert (kind.list_size, kind.value_type) == (64, pa.float32())
    vectors = vectors_of(table.column("embedding"), 64)
    assert np.isnan(vectors[7]).all() and table.column("embedding").null_count == 1
    ids, expected = pooled_features(model_path, pool)
    rows = [table.column("id").to_pylist().index(i) for i in ids]
    np.testing.assert_allclose(vectors[rows], expected, rtol=1e-5, atol=1e-6)
    assert EmbeddingFile(tmp_path / "scores.embeddings.parquet").kind == "pooled feature (64-d)"


def test_without_the_new_options_nothing_changes_byte_for_byte(tmp_path, model_path, pool):
    """--diversity none (the default) with --embeddings writes the same scores and selection as a run without
    them, and egal select without options rewrites that selection CSV byte for byte."""
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "plain.parquet", "--select", 10) == 0
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "emb.parquet", "--select", 10,
                 "--embeddings", "--diversity", "none") == 0
    plain, emb = pq.read_table(tmp_path / "plain.parquet"), pq.read_table(tmp_path / "emb.parquet")
    assert plain.column_names == emb.column_names  # the same rows and numbers; only the run record differs
    for name in plain.column_names:
        a, b = plain.column(name).to_pylist(), emb.column(name).to_pylist()
        assert a == b or np.array_equal(np.array(a, dtype=float), np.array(b, dtype=float), equal_nan=True), name
    assert (tmp_path / "plain.selection.csv").read_bytes() == (tmp_path / "emb.selection.csv").read_bytes()
    assert main(["select", "--quiet", "--scores", str(tmp_path / "plain.parquet"), "--select", "10", "--out",
                 str(tmp_path / "again.csv")]) == 0
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "plain.selection.csv").read_bytes()


# -- diverse and capped batches through egal score and egal select ---------------------------------------

@pytest.mark.parametrize("method", ["kcenter", "cluster"])
def test_score_and_select_make_the_same_diverse_capped_batch(tmp_path, model_path, pool, method, capsys):
    out = tmp_path / "scores.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--select", 6, "--embeddings",
                 "--diversity", method, "--group-column", "patient_id", "--per-group", 1) == 0
    chosen = read_csv(tmp_path / "scores.selection.csv")
    assert len(chosen) == 6 and len({r["patient_id"] for r in chosen}) == 6
    assert list(chosen[0]) == ["rank", "id", "score", "entropy_norm", "misalignment", "pred", "patient_id"]
    ranks = [int(r["rank"]) for r in chosen]
    assert ranks == sorted(ranks) and ranks[0] == 1  # best first; the best row is always taken
    assert main(["select", "--scores", str(out), "--select", "6", "--diversity", method, "--pool", pool,
                 "--group-column", "patient_id", "--per-group", "1", "--out", str(tmp_path / "again.csv")]) == 0
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "scores.selection.csv").read_bytes()
    assert f"{method} among the top" in capsys.readouterr().out


def test_a_finished_run_selects_again_with_resume_without_rescoring(tmp_path, model_path, pool):
    out = tmp_path / "scores.parquet"
    first = egal.score_pool(pool, model_path, out=str(out), select=5, embeddings=True, workers=0, progress=False)
    assert first.batch.diversity == "none" and first.batch.selectable == 18  # the plain top k has one too
    assert first.embeddings_path == str(tmp_path / "scores.embeddings.parquet")
    again = egal.score_pool(pool, model_path, out=str(out), select=5, embeddings=True, diversity="cluster",
                            resume=True, workers=0, progress=False)
    assert again.already_complete and again.seconds == 0.0
    # every scored row without a label (10 x 5 > 18)
    assert again.batch.diversity == "cluster" and again.batch.candidates == 18
    expected = select_from_scores(out, 5, diversity="cluster")
    for column in ("rank", "id", "pred"):
        assert again.selection.column(column).to_pylist() == expected.table.column(column).to_pylist()


def test_a_cap_that_leaves_fewer_rows_says_so(tmp_path, model_path, pool, capsys):
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "s.parquet", "--select", 20,
                 "--group-column", "patient_id", "--per-group", 1) == 0
    printed = capsys.readouterr().out
    assert "Note: 9 of the 20 asked for: only 9 rows can be selected" in printed
    assert len(read_csv(tmp_path / "s.selection.csv")) == 9
    # The plain top K of a pool too small says so too.
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "t.parquet", "--select", 1000) == 0
    table = pq.read_table(tmp_path / "t.parquet").to_pydict()
    scored = sum(s == "ok" and not labelled for s, labelled in zip(table["status"], table["labelled"], strict=True))
    assert scored == 18
    assert (f"Note: {scored} of the 1000 asked for: only {scored} rows can be selected (rows with a valid score and "
            "no label)") in capsys.readouterr().out


# -- ONNX ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory, model_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from egal.onnx import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    current = export_onnx(model_path, folder / "model.onnx")
    proto = onnx.load(current)  # a graph as egal export wrote it before the embedding output existed
    kept = [o for o in proto.graph.output if o.name != "embedding"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    old = str(folder / "old.onnx")
    onnx.save(proto, old)
    return current, old


def test_onnx_embeddings_equal_the_pytorch_ones(tmp_path, model_path, pool, onnx_models):
    current, _ = onnx_models
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "pt.parquet", "--embeddings") == 0
    assert score("--pool", pool, "--model", current, "--out", tmp_path / "onnx.parquet", "--embeddings") == 0
    pt = pq.read_table(tmp_path / "pt.embeddings.parquet").column("embedding")
    ox = pq.read_table(tmp_path / "onnx.embeddings.parquet").column("embedding")
    np.testing.assert_allclose(vectors_of(ox, 64), vectors_of(pt, 64), rtol=1e-4, atol=1e-5)


def test_an_old_onnx_graph_scores_as_before_but_cannot_give_embeddings(tmp_path, pool, onnx_models, capsys):
    _, old = onnx_models
    assert score("--pool", pool, "--model", old, "--out", tmp_path / "old.parquet", "--select", 3) == 0
    assert score("--pool", pool, "--model", old, "--out", tmp_path / "e.parquet", "--embeddings") == 2
    err = capsys.readouterr().err
    assert "was exported without the selection embedding" in err and "egal export --model model.pt" in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "e.parquet")


# -- bad input: messages, exit status 2, nothing written ------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--select", "5", "--diversity", "kcenter"], "--diversity 'kcenter' measures distances .* needs --embeddings, "
     "which writes them"),
    (["--diversity", "cluster", "--embeddings"], "--diversity only acts on a selection: add --select K$"),
    (["--group-column", "patient_id", "--per-group", "1"], "--group-column only acts on a selection: add --select K$"),
    (["--select", "5", "--group-column", "patient_id"], "--per-group is needed with --group-column: a cap"),
    (["--select", "5", "--per-group", "2"], "--group-column is needed with --per-group: a cap"),
    (["--select", "5", "--group-column", "patient_id", "--per-group", "0"], "--per-group must be a positive integer"),
    (["--select", "5", "--group-column", "patient", "--per-group", "1"], "--group-column 'patient' is not a "
     "column of the pool; it has 'id', 'label', 'image', 'mask', 'patient_id'"),
])
def test_bad_selection_options_are_refused_before_scoring(tmp_path, model_path, pool, capsys, extra, message):
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "s.parquet", *extra) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not os.path.exists(tmp_path / "s.parquet") and not os.path.exists(tmp_path / "s.parquet.parts")


def test_a_null_group_is_refused_naming_the_rows(tmp_path, model_path, capsys):
    rows = make_rows(8, folder=tmp_path)
    for i, row in enumerate(rows):
        row["patient_id"] = None if i in (2, 5) else f"p{i}"
    pool = write_pool(tmp_path / "pool.parquet", rows)
    # Row 5 has a label: it is never selected, so it needs no group unless labelled rows are selected too.
    for extra, named in (([], "1 row(s) of the pool (positions 2)"),
                         (["--include-labelled"], "2 row(s) of the pool (positions 2, 5)")):
        assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "s.parquet", "--select", 3,
                     "--group-column", "patient_id", "--per-group", 1, *extra) == 2
        err = capsys.readouterr().err
        # Said before any scoring (a whole run on a large pool was spent first): nothing is written.
        assert f"--group-column 'patient_id' is null or blank for {named}" in err
        assert not (tmp_path / "s.parquet").exists() and not (tmp_path / "s.parquet.parts").exists()
    # egal select on scores made without the cap names the scored rows without a group.
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "s.parquet") == 0
    for extra, named in (([], "1 scored row(s) ('scan_0002')"),
                         (["--include-labelled"], "2 scored row(s) ('scan_0002', 'scan_0005')")):
        assert main(["select", "--scores", str(tmp_path / "s.parquet"), "--select", "3", "--pool", str(pool),
                     "--group-column", "patient_id", "--per-group", "1", *extra]) == 2
        assert f"--group-column 'patient_id' is null or blank for {named}" in capsys.readouterr().err


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_group_is_no_group_for_egal_score_select_and_simulate_alike(tmp_path, blank):
    """One rule (egal.selection.group_cap.is_missing_group): before, egal score and select took a blank patient id
    as one more patient, while egal simulate refused it."""
    from egal.errors import EgalError
    from egal.loop import load_dataset
    from egal.selection.from_scores import check_pool_groups

    with pytest.raises(SelectionError, match=r"groups is null or blank for 1 row\(s\) .*positions 1\)"):
        egal.select_batch([0.9, 0.8, 0.7], list("abc"), 2, groups=["p", blank, "q"], per_group=1)
    rows = make_rows(6, folder=tmp_path)
    for i, row in enumerate(rows):
        row["label"] = "glioma" if i % 2 else "meningioma"
        row["patient_id"] = blank if i == 3 else f"p{i}"
    pool = write_pool(tmp_path / "pool.parquet", rows)
    with pytest.raises(SelectionError, match=r"'patient_id' \(--group-column\) is null or blank for 1 row\(s\) of "
                       r"the pool \(positions 3\)"):
        check_pool_groups(pool, "patient_id")
    with pytest.raises(EgalError, match=r"1 labelled row\(s\) have no 'patient_id' \(first id 'scan_0003'\)"):
        load_dataset(pool, (16, 16), 1, group_column="patient_id")


def test_group_columns_of_every_kind(tmp_path, model_path, capsys):
    """The id column (each row a group of its own), an integer column, an over-large cap; a list or binary
    column is refused naming its type."""
    rows = make_rows(8, folder=tmp_path)
    for i, row in enumerate(rows):
        row["site"], row["findings"] = i % 3, [f"f{i}"]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    scores = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", scores) == 0
    select = lambda *extra: main(["select", "--scores", str(scores), "--select", "3", "--pool", str(pool),  # noqa: E731
                                  "--out", str(tmp_path / "sel.csv"), "--overwrite", *extra])
    assert select("--group-column", "id", "--per-group", "1") == 0
    assert len(read_csv(tmp_path / "sel.csv")) == 3
    assert select("--group-column", "site", "--per-group", "1") == 0
    assert sorted(r["site"] for r in read_csv(tmp_path / "sel.csv")) == ["0", "1", "2"]
    assert select("--group-column", "site", "--per-group", str(10**20)) == 0
    for column, kind in (("findings", "list<"), ("image", "binary")):
        assert select("--group-column", column, "--per-group", "1") == 2
        err = capsys.readouterr().err
        assert f"--group-column '{column}' holds {kind}" in err and "a group column holds strings or integers" in err


def test_egal_select_refuses_damaged_or_foreign_scores_files_and_keeps_the_embeddings(tmp_path, model_path, pool,
                                                                                      capsys):
    scores = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", scores, "--embeddings") == 0
    embeddings = tmp_path / "s.embeddings.parquet"
    before = embeddings.read_bytes()
    select = lambda path, *extra: main(["select", "--scores", str(path), "--select", "3", *extra])  # noqa: E731
    assert select(scores, "--out", str(embeddings), "--overwrite") == 2
    assert "is the same file as the scores' embeddings" in capsys.readouterr().err
    assert embeddings.read_bytes() == before
    table = pq.read_table(scores)
    as_text = table.set_column(table.schema.get_field_index("score"), "score",
                               pa.array([str(v) for v in table.column("score").to_pylist()]))
    pq.write_table(as_text, tmp_path / "text.parquet")
    assert select(tmp_path / "text.parquet", "--out", str(tmp_path / "t.csv")) == 2
    assert "column(s) of another type: score (string, not double)" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
    no_id = table.set_column(0 if table.column_names[0] == "id" else table.schema.get_field_index("id"), "id",
                             pa.array([None] + table.column("id").to_pylist()[1:], pa.string()))
    pq.write_table(no_id, tmp_path / "no_id.parquet")
    assert select(tmp_path / "no_id.parquet") == 2
    assert "1 row(s) have no id" in capsys.readouterr().err
    broken = table.replace_schema_metadata({**table.schema.metadata, b"egal.run": b"{not json"})
    pq.write_table(broken, tmp_path / "broken.parquet")
    assert select(tmp_path / "broken.parquet") == 2
    assert "damaged record of its run" in capsys.readouterr().err


def test_egal_select_refuses_missing_or_foreign_embeddings(tmp_path, model_path, pool, capsys):
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "a.parquet") == 0
    assert main(["select", "--scores", str(tmp_path / "a.parquet"), "--select", "4", "--diversity", "kcenter"]) == 2
    assert "a.embeddings.parquet' does not exist: score with --embeddings to write it" in capsys.readouterr().err
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "b.parquet", "--embeddings",
                 "--alpha", 0.3) == 0
    assert main(["select", "--scores", str(tmp_path / "a.parquet"), "--select", "4", "--diversity", "kcenter",
                 "--embeddings", str(tmp_path / "b.embeddings.parquet")]) == 2
    assert "was written by another scoring run than the scores" in capsys.readouterr().err
    assert main(["select", "--scores", str(tmp_path / "a.parquet"), "--select", "-1"]) == 2
    assert "--select must be a positive integer, got -1" in capsys.readouterr().err
    assert main(["select", "--scores", str(tmp_path / "a.parquet"), "--select", "2", "--group-column",
                 "patient_id", "--per-group", "1"]) == 2
    assert "--pool is needed with --group-column 'patient_id': the group column" in capsys.readouterr().err
    assert main(["select", "--scores", str(tmp_path / "a.parquet"), "--select", "2", "--per-group", "1"]) == 2
    assert "--group-column is needed with --per-group: the pool column" in capsys.readouterr().err
    assert main(["select", "--scores", str(tmp_path / "a.parquet"), "--select", "2"]) == 0
    assert main(["select", "--scores", str(tmp_path / "a.parquet"), "--select", "2"]) == 2
    assert f"--out {str(tmp_path / 'a.selection.csv')!r} already exists: pass --overwrite to replace it" in \
        capsys.readouterr().err


def test_embeddings_with_nan_in_the_sidecar_are_refused_naming_the_rows(tmp_path, model_path, pool):
    out = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--embeddings") == 0
    path = tmp_path / "s.embeddings.parquet"
    table = pq.read_table(path)
    vectors = vectors_of(table.column("embedding"), 64)
    best = pq.read_table(out).column("rank").to_pylist().index(1)
    vectors[best, 3] = np.nan
    from egal.selection.embedding_file import embedding_array

    broken = table.set_column(1, "embedding", embedding_array(vectors, table.column("embedding").is_valid()))
    pq.write_table(broken.replace_schema_metadata(table.schema.metadata), path)
    best_id = table.column("id")[best].as_py()
    with pytest.raises(SelectionError, match=rf"NaN or Inf for 1 candidate row\(s\) \('{best_id}'\)"):
        select_from_scores(out, 4, diversity="kcenter")


# -- egal simulate: the group cap on constructed data ---------------------------------------------------

def test_egal_group_caps_each_rounds_batch_per_patient():
    from egal.loop import parse_strategies, run_strategy, split_test
    from egal.loop.rounds import draw_seed_set
    from lesion_data import lesion_dataset
    from test_loop import tiny_experiment

    dataset = lesion_dataset(90, 32, seed=4, groups=30)  # 30 patients, 3 images each
    config = tiny_experiment(rounds=2)
    pool, test = split_test(dataset.labels, dataset.groups, test_groups=["patient_0", "patient_1"])
    seed_set = draw_seed_set(dataset, pool, 0, config)
    groups = dict(zip(dataset.ids.tolist(), dataset.groups.tolist(), strict=True))
    for strategy in parse_strategies(["egal+group", "egal+kcenter+group"]):
        record = run_strategy(dataset, pool, test, strategy, 0, config, seed_set=seed_set)
        for entry in record["rounds"][:-1]:
            patients = [groups[i] for i in entry["selected"]]
            assert len(entry["selected"]) == config.loop.budget and len(set(patients)) == len(patients)
    with pytest.raises(egal.errors.EgalError, match="caps the rows per group, but the data has no groups"):
        no_groups = type(dataset)(dataset.ids, dataset.images, dataset.masks, dataset.labels, dataset.classes, None)
        run_strategy(no_groups, pool, test, parse_strategies(["egal+group"])[0], 0, config, seed_set=seed_set)


def test_strategy_names_and_refused_modifiers():
    from egal.loop import parse_strategies

    asked = ["egal+kcenter", "egal-rank:0.3+cluster", "egal+group2", "entropy+group"]
    names = [s.name for s in parse_strategies(asked)]
    assert names == ["egal_a0.5+kcenter", "egal_rank_a0.3+cluster", "egal_a0.5+group2", "entropy+group"]
    refused = [("random+kcenter", "random selection takes no modifiers"),
               ("egal+kcenter+cluster", "unknown or repeated modifier"), ("egal+group0", "unknown or repeated")]
    for bad, message in refused:
        with pytest.raises(egal.errors.EgalError, match=message):
            parse_strategies([bad])


def test_a_damaged_or_edited_embeddings_description_is_refused_in_one_line(tmp_path, model_path, pool, capsys):
    out = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--embeddings") == 0
    table = pq.read_table(tmp_path / "s.embeddings.parquet")
    metadata = table.schema.metadata
    cases = {  # before: tracebacks (JSONDecodeError, KeyError), or vectors reshaped to the wrong length silently
        b"{not json": "damaged description", b'{"kind": "x"}': "damaged description",
        b'{"kind": "x", "dim": 32}': "says its vectors have dim 32, but its embedding column holds 64"}
    for description, message in cases.items():
        edited = table.replace_schema_metadata({**metadata, b"egal.embedding": description})
        pq.write_table(edited, tmp_path / "e.parquet")
        assert main(["select", "--scores", str(out), "--select", "3", "--diversity", "kcenter", "--embeddings",
                     str(tmp_path / "e.parquet")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    as_text = pa.table({"id": table.column("id"), "embedding": pa.array(["v"] * table.num_rows)})
    pq.write_table(as_text.replace_schema_metadata(metadata), tmp_path / "e.parquet")
    assert main(["select", "--scores", str(out), "--select", "3", "--diversity", "kcenter", "--embeddings",
                 str(tmp_path / "e.parquet")]) == 2
    assert "its embedding column is string, not a fixed-size list of floats" in capsys.readouterr().err


def test_the_selection_never_lands_on_the_runs_embeddings_or_in_its_shard_folder(tmp_path, model_path, pool, capsys):
    out = tmp_path / "s.parquet"
    # (the embeddings file and the shards' folder end in .parquet and .parts: names refused before the paths)
    for select_out, message in ((tmp_path / "s.embeddings.parquet", "--select-out is where the selection goes, as CSV"),
                                (tmp_path / "s.parquet.parts", "--select-out is where the selection goes, as CSV"),
                                (tmp_path / "s.parquet.parts" / "sel.csv", "is in the folder of the run's shards")):
        assert score("--pool", pool, "--model", model_path, "--out", out, "--embeddings", "--select", 3,
                     "--select-out", select_out) == 2
        assert message in capsys.readouterr().err
        assert not out.exists() and not (tmp_path / "s.parquet.parts").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_rows_the_pool_labels_are_scored_but_never_selected_unless_asked(tmp_path, model_path, pool, capsys):
    # The round trip scores the pool after `egal pool add-labels` again: its labelled rows were offered for
    # annotation a second time (egal demo selected test-split and training rows too).
    out = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--select", 40) == 0
    table = pq.read_table(out).to_pydict()
    labelled = {i for i, flag in zip(table["id"], table["labelled"], strict=True) if flag}
    assert len(labelled) == 18 and all(table["rank"][table["id"].index(i)] is None for i in labelled)
    chosen = [r["id"] for r in read_csv(tmp_path / "s.selection.csv")]
    assert len(chosen) == 18 and not labelled & set(chosen)
    capsys.readouterr()
    again = main(["select", "--scores", str(out), "--select", "40", "--out", str(tmp_path / "all.csv"),
                  "--include-labelled"])  # printed too: a labelled row had no rank to print (a traceback)
    scored = {i for i, status in zip(table["id"], table["status"], strict=True) if status == "ok"}
    everything = read_csv(tmp_path / "all.csv")
    assert again == 0 and {r["id"] for r in everything} == scored
    assert [int(r["rank"]) for r in everything] == list(range(1, 36))  # ranks among the rows that competed
    assert "The 35 images to annotate next" in capsys.readouterr().out
    # A column of nulls (as other tools write one): nothing is known to be labelled.
    nulls = pq.read_table(out)
    nulls = nulls.set_column(nulls.column_names.index("labelled"), "labelled", pa.nulls(nulls.num_rows))
    pq.write_table(nulls, tmp_path / "nulls.parquet")
    assert main(["select", "--scores", str(tmp_path / "nulls.parquet"), "--select", "40", "--out",
                 str(tmp_path / "nulls.csv"), "--quiet"]) == 0
    assert len(read_csv(tmp_path / "nulls.csv")) == 35
    # egal select --out replaces only a selection it wrote, as egal score --select-out does.
    (tmp_path / "model_copy.onnx").write_bytes(b"a graph")
    assert main(["select", "--scores", str(out), "--select", "3", "--out", str(tmp_path / "model_copy.onnx"),
                 "--overwrite", "--quiet"]) == 2
    assert "is not a selection CSV that egal wrote" in capsys.readouterr().err
    assert (tmp_path / "model_copy.onnx").read_bytes() == b"a graph"
    assert main(["select", "--scores", str(out), "--select", "40", "--out", str(tmp_path / "sel.csv"),
                 "--quiet"]) == 0
    assert [r["id"] for r in read_csv(tmp_path / "sel.csv")] == chosen
    # --include-labelled ranks them too (the whole pool studied, not annotated); recorded with the run.
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "i.parquet", "--select", 40,
                 "--include-labelled") == 0
    assert len(read_csv(tmp_path / "i.selection.csv")) == 35
    assert json.loads(pq.read_schema(tmp_path / "i.parquet").metadata[b"egal.run"])["include_labelled"] is True
    capsys.readouterr()
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "i.parquet", "--resume") == 2
    assert "include_labelled (true there, false here)" in capsys.readouterr().err
    # A scores file of an egal before the labelled column: no row is known to be labelled.
    old = pq.read_table(out)
    pq.write_table(old.drop(["labelled"]), tmp_path / "old.parquet")
    assert main(["select", "--scores", str(tmp_path / "old.parquet"), "--select", "40", "--out",
                 str(tmp_path / "old.csv"), "--quiet"]) == 0
    assert len(read_csv(tmp_path / "old.csv")) == 35


def test_labels_in_another_column_are_labels_when_named(tmp_path, model_path, capsys):
    # A pool whose labels are in "diagnosis" (as egal train --label-column reads them): without --label-column
    # egal score says that no row counts as labelled; with it, those rows are never selected, as with "label".
    rows = make_rows(12, folder=tmp_path)
    for row in rows:
        row["diagnosis"] = row.pop("label")
    pool = write_pool(tmp_path / "pool.parquet", rows)
    labelled = {r["id"] for r in rows if r["diagnosis"] is not None}
    assert main(["score", "--workers", "0", "--pool", pool, "--model", model_path, "--out",
                 str(tmp_path / "a.parquet"), "--select", "12"]) == 0  # (not --quiet: the note is progress output)
    assert "the pool has no 'label' column, so no row counts as labelled" in capsys.readouterr().err
    assert len(read_csv(tmp_path / "a.selection.csv")) == 12
    assert main(["score", "--workers", "0", "--pool", pool, "--model", model_path, "--out",
                 str(tmp_path / "b.parquet"), "--select", "12", "--label-column", "diagnosis"]) == 0
    assert "no row counts as labelled" not in capsys.readouterr().err
    chosen = {r["id"] for r in read_csv(tmp_path / "b.selection.csv")}
    assert chosen == {r["id"] for r in rows} - labelled and len(labelled) == 6
    table = pq.read_table(tmp_path / "b.parquet")
    assert {i for i, f in zip(*table.select(["id", "labelled"]).to_pydict().values(), strict=True) if f} == labelled
    assert json.loads(table.schema.metadata[b"egal.run"])["label_column"] == "diagnosis"
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "b.parquet", "--resume") == 2
    assert "label_column" in capsys.readouterr().err  # the ranks depend on it: a resume must name it again
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "c.parquet", "--label-column",
                 "diagnosys") == 2
    assert "--label-column 'diagnosys' is not a column of the pool" in capsys.readouterr().err
    assert not (tmp_path / "c.parquet").exists()


def test_a_pool_whose_every_row_is_labelled_says_why_nothing_is_selected(tmp_path, model_path, capsys):
    rows = make_rows(6, folder=tmp_path)
    for row in rows:
        row["label"] = "benign"
    pool = write_pool(tmp_path / "pool.parquet", rows)
    assert main(["score", "--pool", str(pool), "--model", model_path, "--out", str(tmp_path / "s.parquet"),
                 "--select", "3", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "No image to annotate next: every scored row is already labelled" in printed
