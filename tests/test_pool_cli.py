"""`egal pool ...`: what the command line adds over egal.importers (help, defaults from the options
dataclasses, flags in messages, exit statuses, the install hint); the work itself is tested through the
library in test_pool_import_*.py."""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import MISSING, fields

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from egal.cli import build_parser, main
from egal.importers.brats import BratsOptions
from egal.importers.csv_table import CsvOptions
from egal.importers.folders import FoldersOptions
from egal.importers.siim_covid import SiimOptions
from egal.importers.vindr_cxr import VindrOptions
from pool_import_sources import folder_image, write_csv

SUBCOMMANDS = ("from-brats", "from-vindr-cxr", "from-siim-covid", "from-folders", "from-csv", "export-selection",
               "add-labels", "info")


def pool(*args):
    return main(["pool", *map(str, args)])


@pytest.fixture
def layout(tmp_path):
    folder_image(tmp_path / "src" / "glioma" / "a.png", 10, mask_box=(1, 1, 5, 5))
    folder_image(tmp_path / "src" / "unlabeled" / "b.png", 20, mask_box=(2, 2, 6, 6))
    folder_image(tmp_path / "src" / "stray.png", 30)
    return tmp_path / "src"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_explains_itself_with_an_example(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        pool(name, "--help")
    assert exit_.value.code == 0
    assert "Example:\n  egal pool " in capsys.readouterr().out


@pytest.mark.parametrize("name, options, required", [
    ("from-brats", BratsOptions, ["DIR"]), ("from-vindr-cxr", VindrOptions, ["DIR"]),
    ("from-siim-covid", SiimOptions, ["DIR"]), ("from-folders", FoldersOptions, ["DIR"]),
    ("from-csv", CsvOptions, ["t.csv"])])
def test_the_defaults_are_the_librarys(name, options, required):
    args = build_parser().parse_args(["pool", name, *required, "--out", "p.parquet"])
    for field in fields(options):
        if field.default is MISSING or field.name == "progress":
            continue
        assert getattr(args, field.name) == field.default, field.name
    assert args.quiet is False


def test_from_folders_prints_the_summary_and_writes_what_the_api_writes(layout, tmp_path, capsys):
    from egal.importers import from_folders

    assert pool("from-folders", layout, "--out", tmp_path / "cli.parquet", "--quiet") == 0
    printed = capsys.readouterr().out
    assert "2 rows" in printed and "1  image not in a class folder (e.g. stray.png)" in printed
    from_folders(layout, tmp_path / "api.parquet", progress=False)
    assert pq.read_table(tmp_path / "cli.parquet").equals(pq.read_table(tmp_path / "api.parquet"))


def test_user_errors_exit_2_naming_the_flag(layout, tmp_path, capsys):
    out = tmp_path / "p.parquet"
    assert pool("from-folders", layout, "--out", out, "--quiet") == 0
    assert pool("from-folders", layout, "--out", out, "--quiet") == 2
    # The library names its argument and the flag ("pass overwrite=True (--overwrite)"); the command line, the flag.
    assert "already exists: pass --overwrite to replace it" in capsys.readouterr().err
    write_csv(tmp_path / "l.csv", ["egal_id", "label"], [["b", "zzz"]])
    assert pool("add-labels", out, tmp_path / "l.csv", "--out", tmp_path / "r.parquet") == 2
    assert "has 'egal_id' (a Label Studio export): pass --id-column egal_id\n" in capsys.readouterr().err
    assert pool("add-labels", out, tmp_path / "l.csv", "--out", tmp_path / "r.parquet", "--id-column", "egal_id") == 2
    assert "; pass --allow-new-classes if they are meant\n" in capsys.readouterr().err
    assert pool("from-brats", layout, "--out", tmp_path / "b.parquet", "--min-roi-area", "0") == 2
    assert "egal pool from-brats: error: --min-roi-area must be a positive integer, got 0" in capsys.readouterr().err
    assert pool("from-vindr-cxr", layout, "--out", tmp_path / "v.parquet", "--task", "finding") == 2
    assert "--finding must name a finding" in capsys.readouterr().err
    assert pool("from-folders", tmp_path / "missing", "--out", tmp_path / "m.parquet") == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_missing_nibabel_names_the_extra(tmp_path, monkeypatch, capsys):
    (tmp_path / "brats").mkdir()  # nibabel is imported before the folder is looked at
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel now raises ModuleNotFoundError
    assert pool("from-brats", tmp_path / "brats", "--out", tmp_path / "b.parquet") == 2
    assert "pip install 'egal-al[import]'" in capsys.readouterr().err


def test_round_trip_commands(layout, tmp_path, capsys):
    assert pool("from-folders", layout, "--out", tmp_path / "p.parquet", "--quiet") == 0
    write_csv(tmp_path / "sel.csv", ["rank", "id", "score"], [[1, "b", "0.9"]])
    assert pool("export-selection", "--pool", tmp_path / "p.parquet", "--selection", tmp_path / "sel.csv", "--to",
                "label-studio", "--out", tmp_path / "ls", "--quiet") == 0
    assert json.loads((tmp_path / "ls" / "tasks.json").read_text())[0]["data"]["egal_id"] == "b"
    write_csv(tmp_path / "labels.csv", ["egal_id", "label"], [["b", "glioma"]])
    assert pool("add-labels", tmp_path / "p.parquet", tmp_path / "labels.csv", "--out", tmp_path / "r2.parquet") == 2
    assert "--id-column egal_id" in capsys.readouterr().err
    assert pool("add-labels", tmp_path / "p.parquet", tmp_path / "labels.csv", "--out", tmp_path / "r2.parquet",
                "--id-column", "egal_id") == 0
    assert "1 newly labelled" in capsys.readouterr().out
    assert pool("info", tmp_path / "r2.parquet", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labels"] == {"glioma": 2} and info["roi"]["mask"] == 2
    assert pool("info", tmp_path / "r2.parquet") == 0
    assert "100.0 %) labelled" in capsys.readouterr().out


def test_add_labels_quiet_prints_nothing_but_errors(layout, tmp_path, capsys):
    assert pool("from-folders", layout, "--out", tmp_path / "p.parquet", "--quiet") == 0
    write_csv(tmp_path / "labels.csv", ["id", "label"], [["b", "glioma"]])
    capsys.readouterr()
    assert pool("add-labels", tmp_path / "p.parquet", tmp_path / "labels.csv", "--out", tmp_path / "r2.parquet",
                "--quiet") == 0
    assert capsys.readouterr() == ("", "")
    assert pq.read_table(tmp_path / "r2.parquet").column("label").to_pylist() == ["glioma", "glioma"]
    # An error still says why, on stderr, and names the flag to pass.
    write_csv(tmp_path / "labels.csv", ["id", "label"], [["a", "meningioma"]])
    assert pool("add-labels", tmp_path / "p.parquet", tmp_path / "labels.csv", "--out", tmp_path / "r3.parquet",
                "--quiet") == 2
    out, err = capsys.readouterr()
    assert out == "" and "--relabel" in err and not (tmp_path / "r3.parquet").exists()


def test_every_pool_subcommand_that_prints_has_the_one_quiet_flag():
    parser = build_parser()
    for name in SUBCOMMANDS:
        if name == "info":  # prints the description it is asked for, no progress
            continue
        required = {"export-selection": ["--pool", "p", "--out", "o"], "add-labels": ["p", "l", "--out", "o"]}
        args = parser.parse_args(["pool", name, *required.get(name, ["x", "--out", "o"]), "--quiet"])
        assert args.quiet is True


def test_info_decode_and_its_workers(layout, tmp_path, capsys):
    assert pool("from-folders", layout, "--out", tmp_path / "p.parquet", "--quiet") == 0
    assert pool("info", tmp_path / "p.parquet", "--workers", "2") == 2  # (the check is pool_info's)
    assert "--workers sets the number of decoder processes, which only decoding uses" in capsys.readouterr().err
    assert pool("info", tmp_path / "p.parquet", "--decode", "--workers", "-1") == 2
    assert "--workers must be a non-negative integer" in capsys.readouterr().err
    assert pool("info", tmp_path / "p.parquet", "--decode", "--workers", "100000") == 2
    assert "--workers 100000 is more decoder processes than this machine's" in capsys.readouterr().err
    assert pool("info", tmp_path / "p.parquet", "--decode") == 0
    assert "every image, mask and box decoded" in capsys.readouterr().out
    table = pq.read_table(tmp_path / "p.parquet")
    images = table.column("image").to_pylist()
    images[1] = images[1][: len(images[1]) // 2]  # its header still reads
    pq.write_table(table.set_column(table.column_names.index("image"), "image", pa.array(images)),
                   tmp_path / "cut.parquet")
    assert pool("info", tmp_path / "cut.parquet", "--json") == 0
    assert json.loads(capsys.readouterr().out)["problems"] == {}
    assert pool("info", tmp_path / "cut.parquet", "--decode", "--workers", "2", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["decoded"] is True and info["problems"] == {"image does not decode": 1} and info["rows"] == 2


def test_an_empty_selection_is_refused_before_any_export_is_written(layout, tmp_path, capsys):
    assert pool("from-folders", layout, "--out", tmp_path / "p.parquet", "--quiet") == 0
    write_csv(tmp_path / "sel.csv", ["rank", "id", "score"], [])
    assert pool("export-selection", "--pool", tmp_path / "p.parquet", "--selection", tmp_path / "sel.csv", "--to",
                "folders", "--out", tmp_path / "out") == 2
    assert "has a header but no rows: nothing to export" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_selection_names_the_folder_of_unlabelled_rows_as_from_folders_reads_it(layout, tmp_path):
    assert pool("from-folders", layout, "--out", tmp_path / "p.parquet", "--quiet") == 0
    assert pool("export-selection", "--pool", tmp_path / "p.parquet", "--to", "folders", "--out", tmp_path / "out",
                "--unlabeled-folder", "to-label", "--quiet") == 0
    assert (tmp_path / "out" / "to-label" / "b.png").is_file() and not (tmp_path / "out" / "unlabeled").exists()
    assert pool("from-folders", tmp_path / "out", "--unlabeled-folder", "to-label", "--out", tmp_path / "back.parquet",
                "--quiet") == 0
    back = pq.read_table(tmp_path / "back.parquet").to_pydict()
    assert back["label"][back["id"].index("b")] is None


@pytest.mark.parametrize("labels", [["glioma", "", None, "meningioma"], [1.0, float("nan"), None, 2.0]],
                         ids=["empty-string", "nan"])
def test_an_empty_or_nan_label_is_unlabeled_to_every_command_as_to_training(tmp_path, capsys, labels):
    # Pools written by pandas or from a CSV mark a missing label with "" or NaN. Training skipped those rows,
    # while pool info counted them as a class ("" or "nan"), add-labels called labelling them a relabel and
    # export-selection made a folder "nan" (or refused the folder "").
    from egal.pool.labels import is_label
    from pool_files import simple_pool

    path = simple_pool(tmp_path / "p.parquet", 4, label=labels)
    assert [is_label(v) for v in labels] == [True, False, False, True]
    assert pool("info", path, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["unlabeled"] == 2 and sum(info["labels"].values()) == 2 and info["labelled_share"] == 0.5
    assert pool("export-selection", "--pool", path, "--to", "folders", "--out", tmp_path / "out", "--quiet") == 0
    assert sorted(p.name for p in (tmp_path / "out" / "unlabeled").iterdir()) == ["r1.png", "r2.png"]
    assert not (tmp_path / "out" / "nan").exists()
    selection = (tmp_path / "out" / "selection.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in selection[1:]] == [str(labels[0]), "", "", str(labels[3])]
    # The labelling tools' files too: Label Studio's tasks held a bare NaN (not JSON) or "", CVAT a tag "nan".
    assert pool("export-selection", "--pool", path, "--to", "label-studio", "--out", tmp_path / "ls", "--quiet") == 0
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert ["egal_label" in task["data"] for task in tasks] == [True, False, False, True]
    assert pool("export-selection", "--pool", path, "--to", "cvat", "--out", tmp_path / "cvat", "--quiet") == 0
    xml = (tmp_path / "cvat" / "annotations.xml").read_text()
    assert "<tag " in xml and 'label="nan"' not in xml and 'label=""' not in xml

    new = "glioma" if isinstance(labels[0], str) else "1.0"
    write_csv(tmp_path / "labels.csv", ["id", "label"], [["r1", new], ["r2", new]])
    assert pool("add-labels", path, tmp_path / "labels.csv", "--out", tmp_path / "r2.parquet") == 0  # no --relabel
    assert "2 newly labelled" in capsys.readouterr().out
    assert pool("info", tmp_path / "r2.parquet", "--json") == 0
    assert json.loads(capsys.readouterr().out)["unlabeled"] == 0


def test_blank_labels_are_unlabelled_and_labels_that_read_as_missing_are_pointed_out(tmp_path, capsys):
    # pandas' astype(str) writes a missing label as "nan" or "None": pool info and egal train say so, since a
    # class may be called "None" or "NA" (add-labels keeps such classes); a blank label is no label anywhere.
    from egal.pool.labels import is_label, reads_as_missing
    from pool_files import simple_pool

    labels = ["glioma", " ", "nan", "None", "glioma", "NA"]
    path = simple_pool(tmp_path / "p.parquet", 6, label=labels)
    assert [is_label(v) for v in labels] == [True, False, True, True, True, True]
    assert [reads_as_missing(v) for v in labels] == [False, False, True, True, False, True]
    assert not is_label(b" \t") and not reads_as_missing("glioma") and not reads_as_missing(float("nan"))
    assert pool("info", path, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["unlabeled"] == 1 and info["labels_like_missing"] == {"nan": 1, "None": 1, "NA": 1}
    assert pool("info", path) == 0
    assert "labels that read like a missing value, counted as classes: 'NA' 1, 'None' 1, 'nan' 1" in \
        capsys.readouterr().out


def test_label_studio_tasks_are_strict_json_for_labels_of_any_type(tmp_path):
    # A date label was a TypeError traceback, an infinite float a bare Infinity (not JSON).
    import datetime

    from egal.pool.labels import is_label
    from pool_files import simple_pool

    for name, labels in (("dates", [datetime.date(2020, 1, 1), None, datetime.date(2020, 1, 2)]),
                         ("floats", [1.0, float("inf"), 2]), ("bytes", [b"a", b"", None])):
        path = simple_pool(tmp_path / f"{name}.parquet", 3, label=labels)
        assert pool("export-selection", "--pool", path, "--to", "label-studio", "--out", tmp_path / name,
                    "--quiet") == 0
        tasks = json.loads((tmp_path / name / "tasks.json").read_text(), parse_constant=lambda c: pytest.fail(c))
        written = [task["data"].get("egal_label") for task in tasks]
        assert written == [{"dates": "2020-01-01", "floats": 1.0, "bytes": "b'a'"}[name],
                           {"dates": None, "floats": "inf", "bytes": None}[name],
                           {"dates": "2020-01-02", "floats": 2, "bytes": None}[name]]
    assert not is_label(b"") and is_label(b"a") and not is_label("") and is_label(0) and is_label(False)


def test_ids_that_are_paths_export_one_file_each_and_selection_csv_maps_them_back(layout, tmp_path, capsys):
    # from-folders --ids path (and from-csv's default) make ids with slashes; export refused every one of them.
    folder_image(layout / "glioma" / "deep" / "a.png", 40)
    assert pool("from-folders", layout, "--ids", "path", "--out", tmp_path / "p.parquet", "--quiet") == 0
    ids = pq.read_table(tmp_path / "p.parquet").column("id").to_pylist()
    assert sorted(ids) == ["glioma/a", "glioma/deep/a", "unlabeled/b"]
    for target in ("folders", "label-studio", "cvat"):
        assert pool("export-selection", "--pool", tmp_path / "p.parquet", "--to", target, "--out",
                    tmp_path / target, "--quiet") == 0, capsys.readouterr().err
        with open(tmp_path / target / "selection.csv", newline="") as f:
            mapped = {row["id"]: row["file"] for row in csv.DictReader(f)}
        assert sorted(mapped) == sorted(ids)
        assert all((tmp_path / target / f).is_file() for f in mapped.values())
    assert (tmp_path / "folders" / "glioma" / "glioma%2Fdeep%2Fa.png").is_file()


def test_a_class_named_like_the_folder_of_unlabelled_rows_is_refused(tmp_path, capsys):
    folder_image(tmp_path / "src" / "x" / "a.png", 10)
    assert pool("from-folders", tmp_path / "src", "--out", tmp_path / "p.parquet", "--quiet") == 0
    write_csv(tmp_path / "labels.csv", ["id", "label"], [["a", "unlabeled"]])
    assert pool("add-labels", tmp_path / "p.parquet", tmp_path / "labels.csv", "--out", tmp_path / "q.parquet",
                "--relabel", "--allow-new-classes") == 0
    assert pool("export-selection", "--pool", tmp_path / "q.parquet", "--to", "folders", "--out",
                tmp_path / "out") == 2
    assert "the name of the folder of the rows without a label" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert pool("export-selection", "--pool", tmp_path / "q.parquet", "--to", "folders", "--out", tmp_path / "out",
                "--unlabeled-folder", "to-label", "--quiet") == 0
    assert (tmp_path / "out" / "unlabeled" / "a.png").is_file()


def test_a_class_named_like_a_missing_value_is_a_label_to_add_labels(tmp_path, capsys):
    # A pool with classes "None" and "Severe" (grading tables have them): the annotators' "None" cells were
    # taken for "no label" and dropped without a word.
    folder_image(tmp_path / "src" / "None" / "a.png", 10)
    folder_image(tmp_path / "src" / "Severe" / "b.png", 20)
    folder_image(tmp_path / "src" / "unlabeled" / "d.png", 30)
    folder_image(tmp_path / "src" / "unlabeled" / "e.png", 40)
    assert pool("from-folders", tmp_path / "src", "--out", tmp_path / "p.parquet", "--quiet") == 0
    write_csv(tmp_path / "labels.csv", ["id", "label"], [["d", "None"], ["e", "NA"]])
    assert pool("add-labels", tmp_path / "p.parquet", tmp_path / "labels.csv", "--out", tmp_path / "q.parquet") == 0
    labels = dict(zip(*pq.read_table(tmp_path / "q.parquet", columns=["id", "label"]).to_pydict().values(),
                      strict=True))
    assert labels["d"] == "None" and labels["e"] is None  # "NA" is no class of this pool: no label


def test_a_case_variant_of_a_class_named_like_a_missing_value_is_refused_not_dropped(tmp_path, capsys):
    folder_image(tmp_path / "src" / "None" / "a.png", 10)
    folder_image(tmp_path / "src" / "Mild" / "b.png", 20)
    folder_image(tmp_path / "src" / "unlabeled" / "c.png", 30)
    assert pool("from-folders", tmp_path / "src", "--out", tmp_path / "p.parquet", "--quiet") == 0
    write_csv(tmp_path / "labels.csv", ["id", "label"], [["c", "none"]])
    assert pool("add-labels", tmp_path / "p.parquet", tmp_path / "labels.csv", "--out", tmp_path / "q.parquet") == 2
    assert "'none' reads as no label, but the pool has the class 'None'" in capsys.readouterr().err


def test_csv_ids_and_image_paths_that_read_as_missing_are_skipped_as_missing(tmp_path):
    from egal.importers import from_csv

    folder_image(tmp_path / "img" / "a.png", 10)
    table = write_csv(tmp_path / "t.csv", ["id", "file"], [["a", "img/a.png"], ["NA", "img/a.png"],
                                                          ["b", "null"], ["null", "img/a.png"], ["", "img/a.png"],
                                                          ["\0line 3", "img/a.png"]])  # a NUL id: its own row
    result = from_csv(table, tmp_path / "p.parquet", id="id", image="file", progress=False)
    assert pq.read_table(result.out).column("id").to_pylist() == ["a", "\0line 3"]  # (it vanished, a key's twin)
    # each line without an id is its own skip (they were one id "" of several lines: "rows of one id disagree")
    assert result.skipped.skipped == {"empty id": 3, "no image path": 1}
    # Lines are named as the file numbers them, blank lines counted (they were numbered without them).
    (tmp_path / "gaps.csv").write_text("file\nimg/a.png\n\n,\nNA\n")
    result = from_csv(tmp_path / "gaps.csv", tmp_path / "g.parquet", image="file", progress=False)
    assert result.skipped.examples["no image path"] == ["line 5"]


def test_ids_with_surrounding_spaces_make_the_round_trip(tmp_path, capsys):
    # egal score writes such an id as it is; a table's cells are read stripped, so export-selection and add-labels
    # did not find it ("1 id(s) of the selection are not in the pool").
    from pool_files import simple_pool

    path = simple_pool(tmp_path / "p.parquet", 3, label=[None, None, None])
    table = pq.read_table(path)
    pq.write_table(table.set_column(0, "id", pa.array([" lead", "mid", "tail "])), tmp_path / "spaced.parquet")
    write_csv(tmp_path / "sel.csv", ["rank", "id", "score"], [[1, " lead", "0.9"], [2, "tail ", "0.8"]])
    assert pool("export-selection", "--pool", tmp_path / "spaced.parquet", "--selection", tmp_path / "sel.csv",
                "--out", tmp_path / "out", "--quiet") == 0
    with open(tmp_path / "out" / "selection.csv", newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == [" lead", "tail "]  # the pool's ids, as they are
    write_csv(tmp_path / "labels.csv", ["id", "label"], [[" lead", "glioma"]])
    assert pool("add-labels", tmp_path / "spaced.parquet", tmp_path / "labels.csv", "--out",
                tmp_path / "r2.parquet", "--allow-new-classes") == 0
    back = pq.read_table(tmp_path / "r2.parquet").to_pydict()
    assert back["id"] == [" lead", "mid", "tail "] and back["label"] == ["glioma", None, None]
    # An id the table gives exactly is the one it means, beside another that differs by spaces ...
    pq.write_table(table.set_column(0, "id", pa.array([" lead", "lead", "tail"])), tmp_path / "exact.parquet")
    assert pool("add-labels", tmp_path / "exact.parquet", tmp_path / "labels.csv", "--out",
                tmp_path / "r3.parquet", "--allow-new-classes") == 0
    assert pq.read_table(tmp_path / "r3.parquet").column("label").to_pylist() == [None, "glioma", None]
    # ... while two pool ids that only a stripped table id names are refused, not guessed.
    pq.write_table(table.set_column(0, "id", pa.array([" lead", "lead ", "tail"])), tmp_path / "both.parquet")
    assert pool("add-labels", tmp_path / "both.parquet", tmp_path / "labels.csv", "--out",
                tmp_path / "r4.parquet", "--allow-new-classes") == 2
    assert "the table's id 'lead' names two rows of the pool, ' lead' and 'lead '" in capsys.readouterr().err
    assert not (tmp_path / "r4.parquet").exists()


def test_a_pool_is_written_under_a_parquet_name(layout, tmp_path, capsys):
    assert pool("from-folders", layout, "--out", tmp_path / "pool.csv", "--quiet") == 2
    assert "--out is where the pool goes, as Parquet: give a .parquet name, got" in capsys.readouterr().err
    assert not (tmp_path / "pool.csv").exists()
    assert pool("from-folders", layout, "--out", tmp_path / "pool.PARQUET", "--quiet") == 2  # (folder pools: *.parquet)
    assert pool("from-folders", layout, "--out", tmp_path / "pool", "--quiet") == 0  # no extension: as given


def test_a_symbolic_link_as_out_is_refused_not_replaced_by_a_file(tmp_path, capsys):
    """Before, --overwrite replaced the link itself by the new pool, a regular file, and the pool it led to stayed
    as it was."""
    import os

    import numpy as np

    from egal.importers import from_folders
    from egal.pool.encode import encode_png

    source = tmp_path / "data" / "benign"
    source.mkdir(parents=True)
    (source / "a.png").write_bytes(encode_png(np.zeros((8, 8), np.uint8)))
    real = from_folders(tmp_path / "data", tmp_path / "real.parquet", progress=False).out
    before = real.read_bytes()
    (tmp_path / "link.parquet").symlink_to(real)
    (tmp_path / "labels.csv").write_text("id,label\na,benign\n")
    for command in (["from-folders", str(tmp_path / "data")], ["add-labels", str(real), str(tmp_path / "labels.csv")]):
        assert main(["pool", *command, "--out", str(tmp_path / "link.parquet"), "--overwrite", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"--out {str(tmp_path / 'link.parquet')!r} is a symbolic link: name the file itself ({str(real)!r})" \
            in err, err
    assert os.path.islink(tmp_path / "link.parquet") and real.read_bytes() == before
