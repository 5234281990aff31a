"""What a command writes never destroys an input or a file the user did not ask to replace (egal._paths): an
output that is an input is refused with --overwrite too, a selection or embeddings file beside the scores is
replaced only with --overwrite, a folder or an empty path is refused before any work, and `egal demo` asks
before replacing files of the same names. Each refusal is exit 2 with one line, and the file is untouched."""
import pytest

from egal.cli import main
from pool_import_sources import write_csv
from pools import make_rows, save_tiny_model, write_pool

pytest.importorskip("torch")

FAST_TRAIN = ["--architecture", "tiny_cnn", "--head", "linear", "--input-size", "32", "--epochs", "1",
              "--batch-size", "8"]


@pytest.fixture()
def scored(tmp_path):
    """(pool, model) for egal score, in tmp_path."""
    pool = write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path, size=64, roi="boxes"))
    model = save_tiny_model(tmp_path / "model.pt", input_size=(32, 32))
    return pool, model


def refused(capsys, argv, *needles):
    """The command exits 2 with one error line that holds every needle (and no traceback)."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_score_never_writes_over_its_inputs(scored, tmp_path, capsys):
    pool, model = scored
    before = open(pool, "rb").read()
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", pool, "--overwrite"], "same file as --pool")
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "s.parquet", "--select", "3",
                     "--select-out", pool, "--overwrite"], "error: --select-out is where the selection goes, as CSV")
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "s.parquet", "--select", "3",
                     "--select-out", tmp_path / "s.parquet"], f"error: --select-out {str(tmp_path / 's.parquet')!r} "
            "is the same file as --out: the run writes both, and one would replace the other; give them different "
            "paths\n")
    assert open(pool, "rb").read() == before and not (tmp_path / "s.parquet").exists()


def test_score_replaces_a_selection_file_only_with_overwrite(scored, tmp_path, capsys):
    pool, model = scored
    mine = tmp_path / "keep.csv"
    mine.write_text("my own notes\n")
    # A file that --overwrite would not replace either is named as such at once, not after "pass --overwrite".
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "s.parquet", "--select", "3",
                     "--select-out", mine, "--quiet"], "keep.csv' exists and is not a selection CSV that egal wrote")
    assert mine.read_text() == "my own notes\n" and not (tmp_path / "s.parquet.parts").exists()
    (tmp_path / "s.selection.csv").write_text("the default name, the user's\n")
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "s.parquet", "--select", "3",
                     "--quiet"], "s.selection.csv' exists and is not a selection CSV that egal wrote")
    # --overwrite replaces a selection that egal wrote, never another file (a pool's image, a table, notes).
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "s.parquet", "--select", "3",
                     "--quiet", "--overwrite"], "s.selection.csv' exists and is not a selection CSV that egal wrote")
    assert (tmp_path / "s.selection.csv").read_text() == "the default name, the user's\n"
    (tmp_path / "s.selection.csv").unlink()
    for _ in range(2):
        assert main(["score", "--pool", pool, "--model", model, "--out", str(tmp_path / "s.parquet"), "--select",
                     "3", "--quiet", "--overwrite"]) == 0
        assert (tmp_path / "s.selection.csv").read_text().startswith("rank,id")
    (tmp_path / "s.parquet").unlink()  # an earlier selection of egal's, without --overwrite: "pass --overwrite"
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "s.parquet", "--select", "3",
                     "--quiet"], "s.selection.csv' already exists", "--overwrite")
    image = tmp_path / "images" / "scan_0001.png"
    image.parent.mkdir(exist_ok=True)
    image.write_bytes(b"\x89PNG an image of a pool")
    (tmp_path / "t.embeddings.parquet").write_bytes(b"the user's notes")
    for option in ("--overwrite", "--resume"):  # --resume with no run at --out starts one: the same rule
        refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "t.parquet", "--select", "3",
                         "--select-out", image, "--quiet", option], "error: --select-out is where the selection "
                "goes, as CSV: give a .csv name, got")
        refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "t.parquet", "--embeddings",
                         "--quiet", option], "is not an egal embeddings file")
    assert image.read_bytes() == b"\x89PNG an image of a pool"
    assert (tmp_path / "t.embeddings.parquet").read_bytes() == b"the user's notes"


def test_score_refuses_a_folder_or_an_empty_path_before_scoring(scored, tmp_path, capsys):
    pool, model = scored
    (tmp_path / "folder").mkdir()
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "folder", "--overwrite"],
            "is a folder")
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", f"{tmp_path}/new/"], "is a folder")
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", ""], "--out")
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "s.parquet", "--select", "2",
                     "--select-out", tmp_path / "missing" / "a.csv"], "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "model.pt", "pool.parquet"]


def test_train_export_and_select_refuse_their_input_as_output(scored, tmp_path, capsys):
    pool, model = scored
    before = {p: open(p, "rb").read() for p in (pool, model)}
    refused(capsys, ["train", "--pool", pool, "--out", pool, "--overwrite", *FAST_TRAIN], "same file as --pool")
    refused(capsys, ["export", "--model", model, "--out", model, "--overwrite"], "same file as --model")
    assert main(["score", "--pool", pool, "--model", model, "--out", str(tmp_path / "s.parquet"), "--quiet"]) == 0
    scores = (tmp_path / "s.parquet").read_bytes()
    refused(capsys, ["select", "--scores", tmp_path / "s.parquet", "--select", "2", "--out", tmp_path / "s.parquet",
                     "--overwrite"], "same file as --scores")
    assert (tmp_path / "s.parquet").read_bytes() == scores
    assert {p: open(p, "rb").read() for p in (pool, model)} == before


def test_pool_commands_refuse_their_input_table_as_output(tmp_path, capsys):
    from pool_import_sources import folder_image

    folder_image(tmp_path / "img" / "a.png", 10)
    table = write_csv(tmp_path / "t.csv", ["path", "label"], [["img/a.png", "x"]])
    refused(capsys, ["pool", "from-csv", table, "--image", "path", "--label", "label", "--out", table, "--overwrite",
                     "--quiet"], "same file as the table")
    assert table.read_text().startswith("path,label")
    assert main(["pool", "from-csv", str(table), "--image", "path", "--label", "label", "--out",
                 str(tmp_path / "p.parquet"), "--quiet"]) == 0
    labels = write_csv(tmp_path / "labels.csv", ["id", "label"], [["img/a", "y"]])
    refused(capsys, ["pool", "add-labels", tmp_path / "p.parquet", labels, "--out", labels, "--overwrite"],
            "same file as the labels table")
    assert labels.read_text().startswith("id,label")


def test_demo_asks_before_replacing_files_of_its_names(tmp_path, capsys):
    (tmp_path / "pool.parquet").write_text("the user's own pool")
    refused(capsys, ["demo", "--out", tmp_path, "--images", "40", "--epochs", "1"], "already holds pool.parquet",
            "--overwrite")
    assert (tmp_path / "pool.parquet").read_text() == "the user's own pool"
    refused(capsys, ["demo", "--out", tmp_path / "missing" / "demo"], "does not exist")
    assert not (tmp_path / "missing").exists()


def test_overwrite_replaces_an_output_of_its_own_kind_only(tmp_path, scored, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pool_import_sources import folder_image

    folder_image(tmp_path / "src" / "a" / "x.png", 10)
    image = (tmp_path / "src" / "a" / "x.png").read_bytes()
    refused(capsys, ["pool", "from-folders", tmp_path / "src", "--out", tmp_path / "src" / "a" / "x.png",
                     "--overwrite", "--quiet"], "is not an egal pool")
    assert (tmp_path / "src" / "a" / "x.png").read_bytes() == image
    pool, model = scored
    reports = tmp_path / "reports.parquet"  # a user's own table: a Parquet file, but not a pool
    pq.write_table(pa.table({"patient": ["p1"]}), reports)
    before = reports.read_bytes()
    refused(capsys, ["pool", "from-folders", tmp_path / "src", "--out", reports, "--overwrite", "--quiet"],
            "is not an egal pool")
    assert reports.read_bytes() == before
    (tmp_path / "notes.csv").write_text("the user's table\n")
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "notes.csv", "--overwrite"],
            "give a .parquet name")
    (tmp_path / "notes").write_text("the user's table\n")  # no extension: only what the file holds tells
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", tmp_path / "notes", "--overwrite"],
            "is not an egal score output")
    other_pool = tmp_path / "other_pool.parquet"
    other_pool.write_bytes(open(pool, "rb").read())  # another pool: a Parquet file, but not scores
    refused(capsys, ["score", "--pool", pool, "--model", model, "--out", other_pool, "--overwrite"],
            "is not an egal score output")
    assert other_pool.read_bytes() == open(pool, "rb").read()
    assert (tmp_path / "notes").read_text() == "the user's table\n"
    assert (tmp_path / "notes.csv").read_text() == "the user's table\n"
    assert main(["pool", "from-folders", str(tmp_path / "src"), "--out", str(tmp_path / "p.parquet"), "--quiet"]) == 0
    assert main(["pool", "from-folders", str(tmp_path / "src"), "--out", str(tmp_path / "p.parquet"), "--overwrite",
                 "--quiet"]) == 0  # a pool is replaced


def test_a_failed_atomic_write_leaves_neither_the_file_nor_a_temporary_copy(tmp_path):
    from egal._atomic import replaced_atomically
    from egal.report.html import write_page

    (tmp_path / "report.html").mkdir()  # a folder where the page should go: the rename fails
    with pytest.raises(IsADirectoryError):
        write_page(tmp_path / "report.html", "<p>page</p>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # a 174 KB report.html.tmp-* was left
    with pytest.raises(RuntimeError), replaced_atomically(tmp_path / "out.csv") as tmp:
        open(tmp, "w").write("half")
        raise RuntimeError("the writer failed")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    # A file name of another encoding than UTF-8 (a surrogate escape) is shown escaped, not a UnicodeEncodeError.
    assert "sel\\udce9.csv" in open(write_page(tmp_path / "page.html", "sel\udce9.csv")).read()


def test_a_replaced_output_keeps_the_permissions_its_owner_gave_it(tmp_path, scored):
    """A file made private (chmod 600: patient ids, images) took the umask's 644 when --overwrite replaced it."""
    import os
    import stat

    from egal.importers import add_labels, export_selection

    mode = lambda path: stat.S_IMODE(os.stat(path).st_mode)  # noqa: E731
    pool, model = scored
    out = tmp_path / "s.parquet"
    assert main(["score", "--pool", str(pool), "--model", str(model), "--out", str(out), "--select", "3",
                 "--quiet"]) == 0
    selection = tmp_path / "s.selection.csv"
    os.chmod(out, 0o600)
    os.chmod(selection, 0o640)
    assert main(["score", "--pool", str(pool), "--model", str(model), "--out", str(out), "--select", "3",
                 "--overwrite", "--quiet"]) == 0
    assert (mode(out), mode(selection)) == (0o600, 0o640)
    labels = write_csv(tmp_path / "labels.csv", ["id", "label"], [["scan_0000", "benign"]])
    labelled = tmp_path / "labelled.parquet"
    add_labels(pool, labels, labelled)
    os.chmod(labelled, 0o600)
    add_labels(pool, labels, labelled, overwrite=True)
    assert mode(labelled) == 0o600
    export_selection(pool, tmp_path / "export", progress=False)
    os.chmod(tmp_path / "export", 0o700)
    export_selection(pool, tmp_path / "export", overwrite=True, progress=False)
    assert mode(tmp_path / "export") == 0o700
    new = tmp_path / "new.parquet"  # a new file: the umask decides, as for any program
    add_labels(pool, labels, new)
    assert mode(new) == 0o666 & ~_umask()


def _umask() -> int:
    import os

    current = os.umask(0)
    os.umask(current)
    return current
