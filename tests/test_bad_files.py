"""Files the user names that are not what they should be: a CSV that is not UTF-8 text, a config file that does
not parse or is not a set of sections. Each is exit 2 with one line naming the file and the reason."""
import pytest

from egal.cli import main
from egal.errors import EgalError
from egal.importers import SourceError
from egal.importers.tables import read_table
from egal.loop.config import load_config
from pools import make_rows, write_pool


@pytest.mark.parametrize("content, reason", [
    (b"id,label\nscan_1,b\xe9nin\n", "not UTF-8 text (byte 0xe9"),                          # Latin-1
    ("id,label\nscan_1,benign\n".encode("utf-16"), "not UTF-8 text (byte 0xff at offset 0)"),  # a spreadsheet's UTF-16
    (b"PAR1\x15\x04\x00\x00\x00\x00\xff\xfe", "not UTF-8 text"),                              # a Parquet file
])
def test_a_table_that_is_not_utf8_text_is_named(tmp_path, content, reason):
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=r"labels table '.*labels.csv' cannot be read: it is ") as caught:
        read_table(path, ("id",), "labels table")
    assert reason in str(caught.value)


def test_add_labels_with_a_latin1_csv_is_exit_2(tmp_path, capsys):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(4, folder=tmp_path, size=32))
    (tmp_path / "labels.csv").write_bytes(b"id,label\nscan_0001,b\xe9nin\n")
    assert main(["pool", "add-labels", pool, str(tmp_path / "labels.csv"), "--out", str(tmp_path / "o.parquet"),
                 "--allow-new-classes"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "is not UTF-8 text" in err and "save it as CSV UTF-8" in err
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("name, content, reason", [
    ("bad.toml", "[train\nepochs = 1\n", "cannot be read: Expected ']'"),
    ("bad.json", '{"train": {"epochs": 1,}}', "cannot be read: "),
    ("bad.yaml", "train:\n\tepochs: 1\n", "cannot be read: "),
    ("list.json", "[1, 2]", "expected sections"),
    ("flat.toml", "epochs = 3\n", "a setting outside a section"),
    ("latin1.yaml", b"train:\n  head: \xe9\n", "cannot be read: "),
])
def test_a_config_that_does_not_parse_names_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(EgalError, match=f"config '.*{name}'") as caught:
        load_config(path)
    assert reason in str(caught.value)


def test_train_with_a_broken_config_is_exit_2(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "c.toml").write_text("[train\n")
    assert main(["train", "--pool", "p.parquet", "--out", str(tmp_path / "m.pt"), "--config",
                 str(tmp_path / "c.toml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "c.toml' cannot be read" in err


@pytest.mark.parametrize("seeds", ["1.5", '"3"', "[0, -1]", "[1.5]"])
def test_seeds_that_are_not_a_count_or_a_list_of_seeds_are_named(tmp_path, seeds):
    (tmp_path / "c.toml").write_text(f"[loop]\nseeds = {seeds}\n")
    with pytest.raises(EgalError, match="seeds must be a count"):
        load_config(tmp_path / "c.toml")


def test_select_names_a_pool_given_as_scores_and_refuses_a_batch_of_none(tmp_path, capsys):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(4, folder=tmp_path, size=32))
    assert main(["select", "--scores", pool, "--select", "2", "--out", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert "is not an egal score output: it lacks the column(s) pred" in err and "__fragment_index" not in err
    assert main(["select", "--scores", pool, "--select", "0", "--out", str(tmp_path / "a.csv")]) == 2
    assert "--select must be a positive integer, got 0" in capsys.readouterr().err
    assert not (tmp_path / "a.csv").exists()


def test_options_that_would_make_a_run_meaningless_are_named(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["demo", "--out", str(tmp_path / "d"), "--images", "30", "--select", "1000"]) == 2
    assert "--select 1000 must be smaller than the pool" in capsys.readouterr().err
    (tmp_path / "src" / "a").mkdir(parents=True)
    assert main(["pool", "from-folders", str(tmp_path / "src"), "--mask-suffix", "", "--out",
                 str(tmp_path / "p.parquet")]) == 2
    assert "error: --mask-suffix must name the suffix" in capsys.readouterr().err


def test_simulate_refuses_a_seed_set_as_large_as_the_pool(tmp_path):
    from dataclasses import replace

    from egal.loop.simulation import prepare_experiment
    from lesion_data import lesion_dataset

    pytest.importorskip("torch")
    from test_loop import tiny_experiment

    config = tiny_experiment()
    config = replace(config, loop=replace(config.loop, init=1000))
    with pytest.raises(EgalError, match=r"init \(--init\) 1000 is not smaller than the pool's"):
        prepare_experiment(config, str(tmp_path), lesion_dataset(40, 32, seed=1, groups=8), None)


def test_a_table_row_with_an_empty_id_is_skipped_and_counted(tmp_path):
    from egal.importers import from_csv
    from pool_import_sources import folder_image, write_csv

    folder_image(tmp_path / "img" / "a.png", 10)
    folder_image(tmp_path / "img" / "b.png", 20)
    table = write_csv(tmp_path / "t.csv", ["key", "path"], [["a", "img/a.png"], ["", "img/b.png"]])
    result = from_csv(table, tmp_path / "p.parquet", id="key", image="path", progress=False)
    assert result.rows == 1 and "empty id" in result.summary()


def test_the_scorer_and_the_pool_refuse_values_that_only_look_valid(tmp_path, capsys):
    import numpy as np

    import egal

    rng = np.random.default_rng(0)
    A, G = rng.random((2, 4, 7, 7), dtype=np.float32), rng.random((2, 4, 7, 7), dtype=np.float32)
    Z, M = rng.random((2, 3), dtype=np.float32), (rng.random((2, 20, 20)) < 0.5).astype(np.uint8)
    with pytest.raises(TypeError, match="return_cam"):
        egal.score_batch(A, Z, M, gradients=G, return_cam="no")
    boxes = np.array([[[0, 0, 5, 5]]] * 2, dtype=np.float32)
    with pytest.raises(ValueError, match="has a side over 65536"):
        egal.score_batch(A, Z, boxes=boxes, roi_size=(2**31, 2**31), gradients=G)
    assert main(["pool", "info", ""]) == 2
    assert "the pool must be the path of a Parquet file" in capsys.readouterr().err


def test_select_names_per_group_first_and_each_flag_once(tmp_path, capsys):
    pytest.importorskip("torch")
    from pools import save_tiny_model

    pool = write_pool(tmp_path / "pool.parquet", make_rows(8, folder=tmp_path, size=64))
    model = save_tiny_model(tmp_path / "m.pt", input_size=(32, 32))
    assert main(["score", "--pool", pool, "--model", model, "--out", str(tmp_path / "s.parquet"), "--quiet"]) == 0
    select = ["select", "--scores", str(tmp_path / "s.parquet"), "--select", "2", "--pool", pool, "--out",
              str(tmp_path / "a.csv")]
    assert main([*select, "--group-column", "nosuch", "--per-group", "0"]) == 2
    assert "--per-group must be a positive integer, got 0" in capsys.readouterr().err
    assert main([*select, "--group-column", "nosuch", "--per-group", "1"]) == 2
    err = capsys.readouterr().err
    assert "--group-column 'nosuch' is not a column" in err and err.count("--group-column") == 1


def test_training_refuses_labels_that_differ_only_in_case_or_spaces(tmp_path, capsys):
    pytest.importorskip("torch")
    rows = make_rows(9, folder=tmp_path, size=32)
    for i, row in enumerate(rows):
        row["label"] = ("benign", "Benign ", "malignant")[i % 3]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    assert main(["train", "--pool", pool, "--out", str(tmp_path / "m.pt"), "--architecture", "tiny_cnn",
                 "--input-size", "32", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "labels 'Benign ' and 'benign', which differ only in case or spaces" in err
    assert not (tmp_path / "m.pt").exists()


def test_score_refuses_more_decoder_processes_than_the_machine_can_use(tmp_path, capsys):
    import os

    pytest.importorskip("torch")
    from pools import save_tiny_model

    pool = write_pool(tmp_path / "pool.parquet", make_rows(4, folder=tmp_path, size=32))
    model = save_tiny_model(tmp_path / "m.pt", input_size=(32, 32))
    too_many = 2 * (os.cpu_count() or 1) + 1
    assert main(["score", "--pool", pool, "--model", model, "--out", str(tmp_path / "s.parquet"), "--workers",
                 str(too_many)]) == 2
    assert f"--workers {too_many} is more decoder processes" in capsys.readouterr().err


def test_a_ray_address_nothing_answers_on_is_named_at_once(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("ray")
    from pools import save_tiny_model

    pool = write_pool(tmp_path / "pool.parquet", make_rows(4, folder=tmp_path, size=32))
    model = save_tiny_model(tmp_path / "m.pt", input_size=(32, 32))
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        assert main(["score", "--pool", pool, "--model", model, "--out", str(tmp_path / "s.parquet"), "--engine",
                     "ray", "--ray-address", address, "--quiet"]) == 2
        assert f"cannot reach the Ray cluster at '{address}'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "pool.parquet"]  # nothing written


def test_decoding_more_than_the_machines_memory_is_refused_with_the_sizes(tmp_path, monkeypatch):
    import egal.pool.load as load
    from egal.pool import DecodeSettings, PoolError, load_pool_arrays

    pool = write_pool(tmp_path / "pool.parquet", make_rows(4, folder=tmp_path, size=32))
    monkeypatch.setattr(load.os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 256}[name])  # 1 MiB
    with pytest.raises(PoolError, match=r"the 4 rows .* at 512 x 512 needs 0.0 GiB in memory, more than this "
                                        r"machine's 0.0 GiB"):
        load_pool_arrays(pool, DecodeSettings(input_size=(512, 512), in_channels=1))
    assert len(load_pool_arrays(pool, DecodeSettings(input_size=(8, 8), in_channels=1))["ids"]) == 4


@pytest.mark.parametrize("cell, message", [
    ("{[1]: 2}", "cannot be read as a list of boxes"), ("[" * 5000, "cannot be read as a list of boxes"),
    ("[[1, 2, 3]]", "does not hold 4 numbers"), ("[[1, 2, 'a', 4]]", "not a number")])
def test_a_boxes_cell_that_cannot_be_read_is_a_row_error(cell, message):
    from egal.importers.box_cells import parse_boxes
    from egal.pool.errors import RowError

    with pytest.raises(RowError, match=message):
        parse_boxes(cell)


def test_a_volume_with_a_nan_voxel_keeps_its_window():
    import numpy as np

    from egal.importers.brats import window_volume

    volume = np.linspace(0, 1000, 4 * 4 * 3).reshape(4, 4, 3)
    damaged = volume.copy()
    damaged[1, 1, 1] = np.nan
    scaled = window_volume(damaged, damaged != 0, (1, 99))
    assert scaled.max() == 65535 and scaled[1, 1, 1] == 0
    keep = np.ones(volume.shape, bool)
    keep[1, 1, 1] = False
    reference = window_volume(np.where(keep, volume, volume[keep].min()), keep & (volume != 0), (1, 99))
    assert np.array_equal(scaled[keep], reference[keep])


@pytest.mark.parametrize("window", [(0, 150), (float("nan"), 50), (60, 40), ("a", 5), (1, 2, 3)])
def test_a_brats_window_outside_the_percentiles_is_named_as_percentiles(tmp_path, window):
    from egal.importers.brats import BratsOptions

    with pytest.raises(ValueError, match=r"window must be two percentiles low < high in \[0, 100\]"):
        BratsOptions(str(tmp_path), str(tmp_path / "o.parquet"), window=window)


def test_report_names_a_pool_given_as_scores_and_a_file_given_as_experiment(tmp_path, capsys):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(4, folder=tmp_path, size=32))
    assert main(["report", "--scores", pool, "--pool", pool, "--model", "m.onnx"]) == 2
    err = capsys.readouterr().err
    assert "lacks the column(s)" in err and "__fragment_index" not in err
    (tmp_path / "config.json").write_text("{}")
    assert main(["report", "--experiment", str(tmp_path / "config.json")]) == 2
    assert "is a file, not the folder egal simulate wrote" in capsys.readouterr().err


def test_from_folders_refuses_the_images_folder_as_its_masks_folder(tmp_path, capsys):
    from pool_import_sources import folder_image

    folder_image(tmp_path / "imgs" / "a" / "x.png", 10)
    assert main(["pool", "from-folders", str(tmp_path / "imgs"), "--masks", str(tmp_path / "imgs"), "--out",
                 str(tmp_path / "p.parquet")]) == 2
    assert "is the images folder itself" in capsys.readouterr().err


def test_importers_refuse_a_case_named_twice_or_given_two_labels(tmp_path):
    from egal.importers.brats import find_cases, read_case_labels
    from egal.importers.siim_covid import STUDY_CLASSES, read_study_labels
    from pool_import_sources import write_csv

    for sub in ("a", "b"):
        (tmp_path / "dup" / sub / "D_001").mkdir(parents=True)
        (tmp_path / "dup" / sub / "D_001" / "D_001_seg.nii.gz").write_bytes(b"")
    with pytest.raises(SourceError, match="case 'D_001' appears twice"):
        find_cases(tmp_path / "dup", "t1ce")
    grades = write_csv(tmp_path / "nm.csv", ["Grade", "BraTS_2020_subject_ID"], [["HGG", "B_001"], ["LGG", "B_001"]])
    with pytest.raises(SourceError, match="gives case 'B_001' two labels, 'HGG' and 'LGG'"):
        read_case_labels(grades)
    columns = list(STUDY_CLASSES)
    studies = write_csv(tmp_path / "s.csv", ["id", *columns],
                        [["s1_study", "1", "0", "0", "0"], ["s1_study", "0", "0", "0", "1"]])
    with pytest.raises(SourceError, match="lists study 's1' twice with different labels"):
        read_study_labels(studies)
