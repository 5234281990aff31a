"""egal.score_pool(combine="raw" | "rank") (`egal score --combine`) end to end: rank mixes the terms' ranks
over the pool; raw changes nothing."""
import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from egal import score_pool  # noqa: E402
from egal.combine import METHODS  # noqa: E402
from egal.pipeline import load_runner, score_decoded_batch  # noqa: E402
from egal.pipeline.shard_store import OutputError  # noqa: E402
from egal.pool import DecodeSettings, decode_batch, open_pool  # noqa: E402
from pools import make_rows, save_tiny_model, write_pool  # noqa: E402
from test_combine import naive_normalised_rank  # noqa: E402

ALPHA = 0.3
BATCH = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("combine")
    model_path = save_tiny_model(folder / "model.pt")
    rows = make_rows(41, folder=folder, roi="boxes", empty_every=5)
    rows[9]["image"] = b"not an image"  # a row in error: never ranked, shifts no rank
    pool = write_pool(folder / "pool.parquet", rows)
    return folder, str(pool), str(model_path)


def score(setup, out, **options):
    folder, pool, model = setup
    return score_pool(pool, model, out=str(folder / out), alpha=ALPHA, batch_size=BATCH, workers=0, select=10,
                      progress=False, **options)


def column(table, name):
    return np.array([np.nan if v is None else v for v in table.column(name).to_pylist()], dtype=np.float64)


def test_default_and_raw_keep_the_scores_of_the_fused_scorer(setup):
    folder, pool, model = setup
    # PyTorch, like load_runner below (auto scores with onnxruntime, equal within PARITY_ATOL but not bit for bit)
    score(setup, "default.parquet", runtime="torch")
    score(setup, "raw.parquet", combine="raw", runtime="torch")
    assert (folder / "default.parquet").read_bytes() == (folder / "raw.parquet").read_bytes()
    # The score column is what the fused scorer wrote per batch: the merge does not recompute it.
    spec, runner = open_pool(pool), load_runner(model)
    settings = DecodeSettings(input_size=runner.input_size, in_channels=runner.in_channels)
    batches = pa.concat_tables(score_decoded_batch(decode_batch(raw, settings), runner, alpha=ALPHA)
                               for raw in spec.iter_batches(BATCH))
    written = pq.read_table(folder / "default.parquet")
    assert np.array_equal(column(written, "score"), column(batches, "score"), equal_nan=True)


def test_rank_mixes_the_normalised_ranks_of_the_two_terms(setup):
    folder, _, _ = setup
    score(setup, "default.parquet", overwrite=True)
    score(setup, "rank.parquet", combine="rank")
    raw, ranked = pq.read_table(folder / "default.parquet"), pq.read_table(folder / "rank.parquet")
    # The per-sample outputs of docs/scoring.md are untouched; only score and rank change.
    for name in ("id", "pred", "status", "error"):
        assert ranked.column(name).to_pylist() == raw.column(name).to_pylist(), name
    for name in ("entropy", "entropy_norm", "misalignment"):
        assert np.array_equal(column(ranked, name), column(raw, name), equal_nan=True), name

    h, d = column(raw, "entropy_norm"), column(raw, "misalignment")
    ok = np.array([s == "ok" for s in raw.column("status").to_pylist()])
    assert (~ok).sum() == 1 and np.isnan(d[ok]).sum() >= 8  # a row in error, rows without ROI
    a = float(np.float32(ALPHA))
    r_h, r_d = naive_normalised_rank(h, ok), naive_normalised_rank(d, ok & ~np.isnan(d))
    expected = np.where(~ok, np.nan, np.where(np.isnan(d), r_h, a * r_h + (1 - a) * r_d))
    got = column(ranked, "score")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.array_equal(np.isnan(got), ~ok)

    # rank: score descending, ties by id; the row in error has none, nor have the rows the pool labels (the mix
    # still ranks each term over every scored row).
    ids = ranked.column("id").to_pylist()
    selectable = ok & ~np.array(ranked.column("labelled").to_pylist())
    order = sorted((i for i in range(len(ids)) if selectable[i]), key=lambda i: (-got[i], ids[i]))
    ranks = ranked.column("rank").to_pylist()
    assert [ranks[i] for i in order] == list(range(1, selectable.sum() + 1)) and ranks[9] is None
    with open(folder / "rank.selection.csv") as f:
        assert [r["id"] for r in csv.DictReader(f)] == [ids[i] for i in order[:10]]
    # The two methods order the pool differently here (entropy_norm and misalignment spread differently).
    assert ranked.column("rank").to_pylist() != raw.column("rank").to_pylist()


def test_resume_keeps_the_combine_method_of_the_run(setup):
    score(setup, "mixed.parquet", combine="rank")
    with pytest.raises(OutputError, match='combine \\("rank" there, "raw" here\\)'):
        score(setup, "mixed.parquet", resume=True)
    assert score(setup, "mixed.parquet", resume=True, combine="rank").already_complete


def test_help_explains_the_option_and_offers_every_method():
    from egal.cli import build_parser

    parser = build_parser()
    score_parser = parser._subparsers._group_actions[0].choices["score"]
    text = " ".join(score_parser.format_help().split())
    assert "--combine {" + ",".join(METHODS) + "}" in text and "normalised rank" in text
    assert "Mixing the two terms" in text  # where the README gives the demo's figures
