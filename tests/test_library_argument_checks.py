"""Checks that once lived only in a command, made by the library function a notebook calls: export_onnx's
.onnx names and the files it may replace, pool_info's workers without decode, run_simulation without a pool."""
import pytest

from egal.errors import EgalError
from pools import make_rows, save_tiny_model, write_pool


def test_export_onnx_writes_only_onnx_names_and_replaces_only_its_own_graphs(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from egal.cli import main
    from egal.onnx import export_onnx

    model = save_tiny_model(tmp_path / "model.pt", input_size=(32, 32))
    with pytest.raises(EgalError, match=r"out \(--out\) '.*x\.pt' must end in \.onnx"):
        export_onnx(model, tmp_path / "x.pt")
    user = tmp_path / "theirs.onnx"
    user.write_bytes(b"a user's own file")
    for overwrite in (False, True):  # never replaced, overwrite or not
        with pytest.raises(EgalError, match="is not an ONNX graph that egal exported"):
            export_onnx(model, user, overwrite=overwrite)
    assert user.read_bytes() == b"a user's own file"
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        export_onnx(model, tmp_path / "m.onnx", overwrite=1)
    graph = export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(EgalError, match=r"already exists: pass overwrite=True \(--overwrite\)"):
        export_onnx(model, graph)
    assert export_onnx(model, graph, overwrite=True) == graph  # a graph egal exported: replaced when asked
    # The command says the same with its flags.
    assert main(["export", "--model", model, "--out", str(tmp_path / "x.pt")]) == 2
    assert f"egal export: error: --out {str(tmp_path / 'x.pt')!r} must end in .onnx: egal score runs" in \
        capsys.readouterr().err
    assert main(["export", "--model", model, "--out", graph]) == 2
    assert f"--out {graph!r} already exists: pass --overwrite to replace it" in capsys.readouterr().err


def test_pool_info_refuses_workers_without_decode(tmp_path, capsys):
    from egal.cli import main
    from egal.importers.info import pool_info

    pool = write_pool(tmp_path / "pool.parquet", make_rows(6, folder=tmp_path))
    with pytest.raises(EgalError, match=r"^workers sets the number of decoder processes, which only decoding") as error:
        pool_info(pool, workers=2)
    assert error.value.argument == "workers"
    assert pool_info(pool, workers=0).rows == 6 and pool_info(pool, decode=True, workers=0).rows == 6
    assert main(["pool", "info", pool, "--workers", "2"]) == 2
    assert "egal pool info: error: --workers sets the number of decoder processes, which only decoding uses" in \
        capsys.readouterr().err


def test_run_simulation_refuses_a_config_without_a_pool(tmp_path):
    pytest.importorskip("torch")
    from egal.loop import ExperimentConfig, run_simulation

    with pytest.raises(EgalError, match=r"no pool given: config\.data\.path is empty"):
        run_simulation(ExperimentConfig(), tmp_path / "results", progress=False)
    assert not (tmp_path / "results").exists()
