"""egal.train_pool called directly, as a notebook or a service does: what it returns and warns, what it refuses
before any training, and a trained model that cannot be saved where asked."""
import os
import warnings

import pytest

from pools import CLASSES, make_rows, save_tiny_model, write_pool

torch = pytest.importorskip("torch")

import egal  # noqa: E402
from egal.errors import EgalError  # noqa: E402
from egal.train import ModelNotSaved, TrainConfig, TrainingWarning, train_pool  # noqa: E402

FAST = TrainConfig(architecture="tiny_cnn", head="linear", input_size=(32, 32), epochs=2, batch_size=8)


def test_train_pool_returns_the_model_its_record_and_what_it_left_out(tmp_path):
    from egal.models import load_model

    rows = make_rows(24, folder=tmp_path, roi="boxes")  # odd rows are labelled
    rows[3]["image"] = b"not an image"  # labelled: left out, and said
    for i, row in enumerate(rows):
        row["split"] = "test" if i % 8 == 1 else "train"  # 3 labelled test rows
    pool = write_pool(tmp_path / "pool.parquet", rows)
    epochs = []
    with pytest.warns(TrainingWarning, match=r"left out 1 labelled row\(s\) that cannot be decoded: row 3 "):
        result = train_pool(pool, tmp_path / "m.pt", FAST, train={"seed": 3}, exclude={"split": "test"},
                            progress=lambda epoch, summary: epochs.append((epoch, sorted(summary))))
    assert epochs == [(0, ["ce", "dice", "loss"]), (1, ["ce", "dice", "loss"])]
    assert result.out == str(tmp_path / "m.pt") and result.rows == 12 - 1 - 3 and result.excluded == 3
    assert result.classes == CLASSES and result.label_column == "label" and result.config.seed == 3
    assert [(row, ident) for row, ident, _ in result.dropped] == [(3, "scan_0003")]
    assert len(result.warnings) == 1 and result.notes == ()  # (the linear head takes no episodes)
    assert len(result.history.epoch_loss) == 2
    assert result.summary().startswith(f"wrote {tmp_path / 'm.pt'} (tiny_cnn, linear head, classes ")
    saved = load_model(tmp_path / "m.pt")
    assert saved.config.classes == result.model.config.classes
    training = saved.config.extra["training"]
    assert training["seed"] == 3 and training["epochs"] == 2 and "augment_settings" not in training
    assert training["excluded"] == {"rows": 3, "by": ["split=test"]}
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []


def test_train_pool_reads_an_experiment_config_and_notes_short_episodes(tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, folder=tmp_path, roi="boxes"))
    config = tmp_path / "exp.toml"
    config.write_text('[data]\nlabel_column = "label"\n[train]\narchitecture = "tiny_cnn"\ninput_size = [32, 32]\n'
                      'epochs = 1\nhead = "prototypical"\nn_way = 5\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)  # nothing here to warn of
        result = train_pool(pool, tmp_path / "m.pt", config)
    assert result.config.n_way == 5 and result.config.head == "prototypical"
    assert any("episodes are 3-way" in note for note in result.notes), result.notes


def test_train_pool_refuses_bad_arguments_before_any_training(tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, folder=tmp_path, roi="boxes"))
    out = tmp_path / "m.pt"
    with pytest.raises(TypeError, match=r"exclude must be \(column, value\) pairs"):
        train_pool(pool, out, FAST, exclude="split=test")
    with pytest.raises(TypeError, match=r"exclude must be \(column, value\) pairs.*got 'split' among them"):
        train_pool(pool, out, FAST, exclude=["split", "test"])
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        train_pool(pool, out, FAST, overwrite="yes")
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train_pool(pool, out, {"epochs": 1})
    with pytest.raises(TypeError, match="progress must be True, False or a callable"):
        train_pool(pool, out, FAST, progress="quiet")
    with pytest.raises(EgalError, match=r"^unknown setting\(s\) \['epoch'\] in the train overrides \(did you mean "
                       r"'epochs'\?\); known: \['architecture', .*'epochs', .*'weights'\]$"):
        train_pool(pool, out, FAST, train={"epoch": 2})
    with pytest.raises(EgalError, match=r"out \(--out\) '.*pool.parquet' is the same file as pool \(--pool\)"):
        train_pool(pool, pool, FAST, overwrite=True)
    (tmp_path / "table.parquet").write_bytes(open(pool, "rb").read())
    with pytest.raises(EgalError, match="is not a model file"):  # overwrite replaces a model, nothing else
        train_pool(pool, tmp_path / "table.parquet", FAST, overwrite=True)
    save_tiny_model(out)
    earlier = out.read_bytes()
    with pytest.raises(EgalError, match=r"already exists: pass overwrite=True \(--overwrite\) to replace it"):
        train_pool(pool, out, FAST)
    assert out.read_bytes() == earlier
    assert train_pool(pool, out, FAST, overwrite=True).out == str(out)  # an earlier model: replaced when asked
    assert out.read_bytes() != earlier


def test_a_model_that_cannot_be_saved_is_kept_in_the_temporary_folder(tmp_path, monkeypatch):
    import egal.models
    from egal.models import load_model

    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, folder=tmp_path, roi="boxes"))
    real_save = egal.models.save_model
    out = tmp_path / "m.pt"

    def save_fails_beside_out(model, path):
        if os.path.dirname(os.path.abspath(path)) == str(tmp_path):  # the disk of `out` filled during training
            raise OSError(28, "No space left on device")
        real_save(model, path)

    monkeypatch.setattr(egal.models, "save_model", save_fails_beside_out)
    with pytest.raises(ModelNotSaved) as caught:
        train_pool(pool, out, FAST)
    error = caught.value
    try:
        assert str(error).startswith(f"out {str(out)!r} could not be written (OSError: ")
        assert f"the trained model was written to {error.rescued} instead" in str(error)
        assert error.argument == "out" and isinstance(error, EgalError)  # (egal train names --out instead)
        assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith("m.pt")]
        assert load_model(error.rescued).config.classes == error.model.config.classes
    finally:
        os.remove(error.rescued)


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_out_that_appeared_while_the_model_trained_is_kept_and_the_model_too(tmp_path, monkeypatch, overwrite):
    # Two `egal train --out m.pt` started together both find no m.pt; the one that ends second must not replace the
    # first one's model (overwrite replaces only a model that was there when checked), nor lose its own.
    import egal.models
    from egal.models import load_model

    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, folder=tmp_path, roi="boxes"))
    real_save = egal.models.save_model
    out = tmp_path / "m.pt"
    others = b"the model of the other run, which finished first"

    def save_as_another_run_finishes(model, path):
        real_save(model, path)
        if os.path.dirname(os.path.abspath(path)) == str(tmp_path):  # between the save and the rename
            out.write_bytes(others)

    monkeypatch.setattr(egal.models, "save_model", save_as_another_run_finishes)
    with pytest.raises(ModelNotSaved) as caught:
        train_pool(pool, out, FAST, overwrite=overwrite)
    error = caught.value
    try:
        assert str(error).startswith(f"out {str(out)!r} appeared while this run trained the model (another egal "
                                     "train?): it is kept as it is")
        assert f"the trained model was written to {error.rescued} instead" in str(error)
        assert error.argument == "out"  # (egal train names --out instead)
        assert out.read_bytes() == others
        assert sorted(n for n in os.listdir(tmp_path) if "m.pt" in n) == ["m.pt"]  # no temporary copy left beside
        assert load_model(error.rescued).config.classes == error.model.config.classes
    finally:
        os.remove(error.rescued)


def test_a_second_training_to_the_same_out_is_refused_before_it_trains(tmp_path, monkeypatch):
    import egal.train.trainer
    from egal._atomic import DestinationError, OutputLock

    pool = write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "m.pt"

    def no_training(*args, **kwargs):
        raise AssertionError("the second run trained")

    monkeypatch.setattr(egal.train.trainer, "train_model", no_training)
    with OutputLock(out, "out"):  # the first `egal train --out m.pt`, still training
        with pytest.raises(DestinationError, match=rf"^out \(--out\) {str(out)!r} is being written by another egal "
                           "now"):
            train_pool(pool, out, FAST)
    assert sorted(os.listdir(tmp_path)) == ["pool.parquet"]  # the lock file goes with the run that held it


def test_copies_of_the_model_that_killed_runs_left_are_removed(tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "m.pt"
    killed = tmp_path / "m.pt.tmp-99999999-0123abcd"  # a run SIGKILLed while it saved (no such process now)
    running = tmp_path / f"m.pt.tmp-{os.getpid()}-4567cdef"  # one whose process still runs: never touched
    killed.write_bytes(b"half a model")
    running.write_bytes(b"being written")
    train_pool(pool, out, FAST)
    assert sorted(os.listdir(tmp_path)) == sorted(["pool.parquet", "m.pt", running.name])


def test_threads_hold_while_it_trains_and_the_callers_come_back(tmp_path, monkeypatch):
    import egal.train.trainer

    pool = write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path))
    before = torch.get_num_threads()
    seen = []
    real_train = egal.train.trainer.train_model

    def counting(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(egal.train.trainer, "train_model", counting)
    wanted = 1 if before != 1 else 2
    train_pool(pool, tmp_path / "m.pt", FAST, threads=wanted)
    assert seen == [wanted] and torch.get_num_threads() == before
    with pytest.raises(EgalError, match=r"^threads must be an integer from 1 to "):
        train_pool(pool, tmp_path / "n.pt", FAST, threads=0)
    assert seen == [wanted] and not (tmp_path / "n.pt").exists()


def test_train_pool_is_egal_train_pool():
    assert egal.train_pool is train_pool and egal.TrainResult.__name__ == "TrainResult"


def test_the_pool_may_come_from_the_configs_data_path(tmp_path, capsys):
    """egal train --config said it used the [data] section, yet --pool was required and [data] path ignored."""
    from egal.cli import main

    pool = write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path, roi="boxes"))
    config = tmp_path / "experiment.toml"
    config.write_text(f'[data]\npath = "{pool}"\n[train]\narchitecture = "tiny_cnn"\nhead = "linear"\n'
                      'input_size = [32, 32]\nepochs = 1\nbatch_size = 8\n')
    result = train_pool(None, tmp_path / "m.pt", str(config))
    assert result.rows == 6 and result.classes == CLASSES
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "cli.pt"), "--quiet"]) == 0
    assert (tmp_path / "cli.pt").is_file()
    with pytest.raises(EgalError, match=r"^pool is not given, nor a config's \[data\] path"):
        train_pool(None, tmp_path / "n.pt", FAST)
    assert main(["train", "--out", str(tmp_path / "n.pt")]) == 2
    assert "egal train: error: --pool is not given, nor a config's [data] path" in capsys.readouterr().err
