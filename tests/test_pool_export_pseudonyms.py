"""Pseudonymised exports (export_selection(pseudonym_key=...), --pseudonym-key): no id, pool path or group column in
anything the export holds; the key outside it, mode 0600, never replaced silently; add_labels maps the annotators'
labels back through the key, from every input it reads (a CSV: selection.csv edited, Label Studio's CSV export; CVAT's
annotations.xml), and refuses a pseudonym the key lacks, a key of another pool and pseudonyms without their key."""
from __future__ import annotations

import csv
import json
import os
import stat
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from egal.cli import main
from egal.importers import SourceError, add_labels, export_selection
from egal.importers import pseudonyms as pseudonyms_module
from egal.importers.pseudonyms import KEY_MODE, PSEUDONYM_PREFIX, is_pseudonym, read_key
from egal.pool.encode import encode_dicom, encode_png
from pool_import_sources import write_csv

TARGETS = ("folders", "label-studio", "cvat")
# Ids that carry a patient's identifiers, as hospital ids do; SECRETS are the parts that must not leave.
IDS = ["MRN0012345", "ACC-99887766", "patient/7781 scan", "=HYPERLINK(1)", "CON", "s5"]
LABELS = ["glioma", "meningioma", None, "glioma", None, "meningioma"]
GROUPS = ["pt-MRN0012345", "pt-ACC-99887766", "pt-7781", "pt-x", "pt-y", "pt-z"]
SECRETS = ["0012345", "99887766", "7781", "HYPERLINK", "hospital_ward"]


@pytest.fixture
def pool(tmp_path):
    folder = tmp_path / "hospital_ward"  # the pool's path names a ward: it must not leave either
    folder.mkdir()
    rows = []
    for i, ident in enumerate(IDS):
        mask = np.zeros((30, 40), np.uint8)
        mask[5:15, 3 + i:20] = 255
        image = (encode_dicom((np.arange(30 * 40).reshape(30, 40) % 4000).astype(np.uint16), bits_stored=12)
                 if i == 1 else encode_png(np.full((30, 40), 20 * i, np.uint8)))
        rows.append({"id": ident, "image": image, "mask": encode_png(mask), "label": LABELS[i], "group": GROUPS[i]})
    path = folder / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def selection(tmp_path, ids, name="scores.selection.csv"):
    # egal select --group-column writes the group (a patient id) into the selection: it must not leave.
    header = ["rank", "id", "score", "entropy_norm", "misalignment", "pred", "group"]
    return write_csv(tmp_path / name, header, [[k + 1, i, f"{0.9 - k / 10:.6f}", "0.5", "0.7", "glioma",
                                                GROUPS[IDS.index(i)]] for k, i in enumerate(ids)])


def everything_in(folder: Path) -> str:
    """Every name and every byte below `folder`, as text (latin-1: any byte is a character)."""
    parts = []
    for path in sorted(folder.rglob("*")):
        parts.append(path.relative_to(folder).as_posix())
        if path.is_file():
            parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def export(pool, tmp_path, to, name="out", key="key.csv", **options):
    return export_selection(pool, tmp_path / name, to=to, selection=selection(tmp_path, IDS), progress=False,
                            pseudonym_key=str(tmp_path / key), **options)


def test_an_out_in_a_folder_that_takes_no_files_is_refused_from_python_before_any_work(pool, tmp_path, unwritable,
                                                                                       monkeypatch):
    import egal.importers.selection_export

    folder = unwritable

    def no_work(*args, **kwargs):
        raise AssertionError("the work began")

    monkeypatch.setattr(egal.importers.selection_export, "open_pool", no_work)
    with pytest.raises(SourceError, match=rf"^out \(--out\) {str(folder / 'exp')!r}: its folder {str(folder)!r} is "
                       "not writable here$"):
        export_selection(pool, folder / "exp", selection=selection(tmp_path, IDS[:2]), progress=False)
    assert os.listdir(folder) == []  # not even the lock file beside --out


@pytest.mark.parametrize("to", TARGETS)
def test_a_pseudonymised_export_holds_no_id_no_pool_path_and_no_group(pool, tmp_path, to):
    result = export(pool, tmp_path, to)
    text = everything_in(tmp_path / "out")
    assert not [s for s in SECRETS if s in text], "an identifier left in the export"
    key = read_key(tmp_path / "key.csv")
    assert sorted(key.values()) == sorted(IDS)
    assert all(is_pseudonym(p) and len(p) == len(PSEUDONYM_PREFIX) + 24 for p in key)
    with open(tmp_path / "out" / "selection.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "file", "label", "rank", "score", "entropy_norm", "misalignment", "pred"]
    assert [key[r["id"]] for r in rows] == IDS  # the selection's order, one pseudonym per id
    assert all(Path(r["file"]).stem == r["id"] for r in rows)
    assert [r["label"] for r in rows] == [label or "" for label in LABELS]
    mark = json.loads((tmp_path / "out" / ".egal-export.json").read_text())
    assert mark["pseudonymised"] is True and "pool" not in mark
    assert stat.S_IMODE(os.stat(tmp_path / "key.csv").st_mode) == KEY_MODE
    assert result.pseudonym_key == tmp_path / "key.csv" and result.left_out_columns == ["group"]
    assert "ids replaced by pseudonyms" in result.summary() and "left out the selection's column(s) group" in \
        result.summary()
    if to == "label-studio":
        tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
        assert [key[t["data"]["egal_id"]] for t in tasks] == IDS
        assert set(tasks[0]["data"]) == {"image", "egal_id", "egal_rank", "egal_score", "egal_entropy_norm",
                                         "egal_misalignment", "egal_pred", "egal_label"}
    if to == "cvat":
        names = [i.get("name") for i in ElementTree.parse(tmp_path / "out" / "annotations.xml").iter("image")]
        assert [key[Path(n).stem] for n in names] == IDS


def test_pseudonyms_are_random_not_derived_from_the_ids(pool, tmp_path, monkeypatch):
    first = read_key(export(pool, tmp_path, "folders", "a", "a.csv").pseudonym_key)
    second = read_key(export(pool, tmp_path, "folders", "b", "b.csv").pseudonym_key)
    assert sorted(first.values()) == sorted(second.values()) and not set(first) & set(second)
    # Never two alike, even when the random source repeats itself.
    drawn = iter(["egal-" + "a" * 24, "egal-" + "a" * 24, "egal-" + "b" * 24])
    monkeypatch.setattr(pseudonyms_module, "new_pseudonym", lambda: next(drawn))
    names = pseudonyms_module.Pseudonyms()
    assert (names("x"), names("y"), names("x")) == ("egal-" + "a" * 24, "egal-" + "b" * 24, "egal-" + "a" * 24)


def test_folders_round_trip_through_the_edited_selection_csv(pool, tmp_path):
    export(pool, tmp_path, "folders")
    with open(tmp_path / "out" / "selection.csv", newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1:]:
        row[2] = row[2] or "glioma"  # the annotators label the unlabelled rows
    write_csv(tmp_path / "annotated.csv", rows[0], rows[1:])
    result = add_labels(pool, tmp_path / "annotated.csv", tmp_path / "r2.parquet", pseudonym_key=tmp_path / "key.csv")
    assert (result.newly_labelled, result.unchanged) == (2, 4)
    back = pq.read_table(tmp_path / "r2.parquet").to_pydict()
    assert back["id"] == IDS and back["label"] == [label or "glioma" for label in LABELS]


def test_label_studio_round_trip_through_its_csv_export(pool, tmp_path):
    export(pool, tmp_path, "label-studio")
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    # Label Studio's CSV export: the task's data columns (egal_id ...) and the choice, here named "label".
    write_csv(tmp_path / "ls.csv", ["image", "egal_id", "label"],
              [[t["data"]["image"], t["data"]["egal_id"], "meningioma"] for t in tasks
               if "egal_label" not in t["data"]])
    result = add_labels(pool, tmp_path / "ls.csv", tmp_path / "r2.parquet", id_column="egal_id",
                        pseudonym_key=tmp_path / "key.csv")
    assert result.newly_labelled == 2
    back = pq.read_table(tmp_path / "r2.parquet").to_pydict()
    assert back["label"] == [label or "meningioma" for label in LABELS]


def test_cvat_round_trip_through_its_annotations_xml(pool, tmp_path):
    export(pool, tmp_path, "cvat")
    tree = ElementTree.parse(tmp_path / "out" / "annotations.xml")
    for image in tree.getroot().iter("image"):
        if image.find("tag") is None:
            ElementTree.SubElement(image, "tag", {"label": "glioma", "source": "manual"})
    tree.write(tmp_path / "annotations.xml", encoding="utf-8", xml_declaration=True)
    result = add_labels(pool, tmp_path / "annotations.xml", tmp_path / "r2.parquet",
                        pseudonym_key=str(tmp_path / "key.csv"))
    assert (result.newly_labelled, result.unchanged) == (2, 4)
    assert pq.read_table(tmp_path / "r2.parquet").column("label").to_pylist() == [label or "glioma"
                                                                                 for label in LABELS]


def test_add_labels_refuses_pseudonyms_without_their_key_or_not_in_it_and_a_key_of_another_pool(pool, tmp_path):
    export(pool, tmp_path, "cvat")
    tree = ElementTree.parse(tmp_path / "out" / "annotations.xml")
    for image in tree.getroot().iter("image"):
        ElementTree.SubElement(image, "tag", {"label": "glioma"}) if image.find("tag") is None else None
    tree.write(tmp_path / "annotations.xml")
    labels_csv = tmp_path / "out" / "selection.csv"
    out = tmp_path / "r2.parquet"
    for labels in (tmp_path / "annotations.xml", labels_csv):  # without the key: named, not "ids not in the pool"
        with pytest.raises(SourceError, match=r"names [46] id\(s\) that are pseudonyms of an export made with "
                                              r"--pseudonym-key.*pass the key file that export wrote, "
                                              r"pseudonym_key=KEY \(--pseudonym-key KEY\)"):
            add_labels(pool, labels, out)
    # Another export's key: its pseudonyms are not these.
    export(pool, tmp_path, "folders", "other", "other.csv")
    with pytest.raises(SourceError, match=r"names 4 id\(s\) that are not pseudonyms of the key .*other.csv"):
        add_labels(pool, labels_csv, out, pseudonym_key=tmp_path / "other.csv")
    # The pool's own ids, given with a key: not pseudonyms of it either.
    write_csv(tmp_path / "plain.csv", ["id", "label"], [["s5", "meningioma"]])
    with pytest.raises(SourceError, match=r"names 1 id\(s\) that are not pseudonyms of the key .*'s5'"):
        add_labels(pool, tmp_path / "plain.csv", out, pseudonym_key=tmp_path / "key.csv")
    # A key whose ids the pool does not hold: the export of another pool.
    other_pool = tmp_path / "other_pool.parquet"
    table = pq.read_table(pool)
    pq.write_table(table.set_column(0, "id", pa.array([f"x{i}" for i in range(len(IDS))])), other_pool)
    with pytest.raises(SourceError, match=r"maps 6 pseudonym\(s\) to ids that are not in the pool .*other_pool"):
        add_labels(other_pool, labels_csv, out, pseudonym_key=tmp_path / "key.csv")
    # A file that is no key; a key that does not exist.
    with pytest.raises(SourceError, match="is not a key that export-selection wrote"):
        add_labels(pool, labels_csv, out, pseudonym_key=labels_csv)
    with pytest.raises(SourceError, match=r"pseudonym_key '.*nothing.csv' does not exist"):
        add_labels(pool, labels_csv, out, pseudonym_key=tmp_path / "nothing.csv")
    with pytest.raises(SourceError, match="is the same file as the pseudonym key"):
        add_labels(pool, labels_csv, tmp_path / "key.csv", pseudonym_key=tmp_path / "key.csv", overwrite=True)
    assert not out.exists() and read_key(tmp_path / "key.csv")


def test_the_key_goes_outside_the_export_and_is_never_replaced_silently(pool, tmp_path):
    for inside in ("out/key.csv", "out", "out/sub/key.csv"):
        with pytest.raises(SourceError, match="lies inside the export folder --out"):
            export(pool, tmp_path, "folders", key=inside)
    assert not (tmp_path / "out").exists()
    # An existing file that is not a key (the selection, the pool): never replaced, overwrite or not.
    for other in (selection(tmp_path, IDS, "sel.csv"), pool):
        before = other.read_bytes()
        with pytest.raises(SourceError, match="exists and is not a pseudonym key egal wrote"):
            export(pool, tmp_path, "folders", key=os.path.relpath(other, tmp_path), overwrite=True)
        assert other.read_bytes() == before
    export(pool, tmp_path, "folders")
    first = (tmp_path / "key.csv").read_bytes()
    with pytest.raises(SourceError, match="holds an earlier export: pass overwrite=True"):
        export(pool, tmp_path, "folders")
    # --overwrite replaces the export at --out and its key; not the key of another export still out for labelling.
    for overwrite in (False, True):
        with pytest.raises(SourceError, match="is the key of another export than the one at --out .*never replaced"):
            export(pool, tmp_path, "folders", "new", overwrite=overwrite)
    assert not (tmp_path / "new").exists() and (tmp_path / "key.csv").read_bytes() == first
    os.chmod(tmp_path / "key.csv", 0o644)
    export(pool, tmp_path, "cvat", overwrite=True)
    assert (tmp_path / "key.csv").read_bytes() != first
    assert stat.S_IMODE(os.stat(tmp_path / "key.csv").st_mode) == KEY_MODE
    (tmp_path / "empty.csv").write_text("pseudonym,id\n")  # a key of no rows: no export's, replaced with overwrite
    with pytest.raises(SourceError, match=r"pseudonym_key '.*empty.csv' already exists: pass overwrite=True"):
        export(pool, tmp_path, "folders", "fourth", key="empty.csv")
    os.symlink(tmp_path / "key.csv", tmp_path / "link.csv")
    with pytest.raises(SourceError, match="is a symbolic link"):
        export(pool, tmp_path, "folders", "third", key="link.csv")
    with pytest.raises(SourceError, match="its folder .* does not exist"):
        export(pool, tmp_path, "folders", "third", key="missing/key.csv")
    assert not (tmp_path / "third").exists()


def test_the_key_is_0600_whatever_the_umask_and_a_failed_export_leaves_no_key(pool, tmp_path):
    old = os.umask(0)
    try:
        export(pool, tmp_path, "folders")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "key.csv").st_mode) == KEY_MODE
    write_csv(tmp_path / "bad.csv", ["rank", "id"], [[1, "MRN0012345"], [2, "not-in-the-pool"]])
    with pytest.raises(SourceError, match="not in the pool"):
        export_selection(pool, tmp_path / "failed", selection=tmp_path / "bad.csv", pseudonym_key=tmp_path / "k2.csv",
                         progress=False)
    assert not (tmp_path / "failed").exists() and not [p for p in tmp_path.iterdir() if "k2.csv" in p.name]


def test_a_key_that_cannot_be_moved_into_place_is_kept_and_named_not_lost(pool, tmp_path, monkeypatch):
    import egal.importers.writer

    publish = egal.importers.writer.publish

    def failing(src, dst, **options):
        if Path(dst) == tmp_path / "key.csv":
            raise OSError("disk quota exceeded")
        publish(src, dst, **options)

    monkeypatch.setattr(egal.importers.writer, "publish", failing)
    with pytest.raises(SourceError, match=r"is written, but its pseudonym key could not be moved into place "
                                          r"\(disk quota exceeded\): it is '(.*)', the only key of that export; "
                                          r"move it to") as error:
        export(pool, tmp_path, "folders")
    kept = Path(str(error.value).split("it is '")[1].split("'")[0])
    assert (tmp_path / "out" / "selection.csv").is_file() and sorted(read_key(kept).values()) == sorted(IDS)
    assert stat.S_IMODE(os.stat(kept).st_mode) == KEY_MODE


def test_the_commands_take_the_key_and_name_its_flag(pool, tmp_path, capsys):
    sel = selection(tmp_path, IDS)
    assert main(["pool", "export-selection", "--pool", str(pool), "--selection", str(sel), "--to", "folders",
                 "--out", str(tmp_path / "out"), "--pseudonym-key", str(tmp_path / "key.csv"), "--quiet"]) == 0
    assert "the key is" in capsys.readouterr().out and read_key(tmp_path / "key.csv")
    assert main(["pool", "export-selection", "--pool", str(pool), "--to", "folders", "--out",
                 str(tmp_path / "out2"), "--pseudonym-key", str(tmp_path / "out2" / "k.csv")]) == 2
    assert "--pseudonym-key" in capsys.readouterr().err
    labels = tmp_path / "out" / "selection.csv"
    assert main(["pool", "add-labels", str(pool), str(labels), "--out", str(tmp_path / "r2.parquet")]) == 2
    assert "pass the key file that export wrote, --pseudonym-key KEY, to map" in capsys.readouterr().err
    assert main(["pool", "add-labels", str(pool), str(labels), "--out", str(tmp_path / "r2.parquet"),
                 "--pseudonym-key", str(tmp_path / "key.csv")]) == 0
    assert "0 newly labelled, 4 already had that label" in capsys.readouterr().out
