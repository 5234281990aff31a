"""egal.onnx and `egal export`: the graph, its parity with PyTorch, and scoring without PyTorch.

Tolerance stated by this file: ONNX scores equal the PyTorch path's within
SCORE_ATOL (float32 graphs; onnxruntime fuses and reorders the convolutions).
"""
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

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import egal  # noqa: E402
from egal.gradcam import extract_gradcam_inputs, score_images  # noqa: E402
from egal.models import build_model, save_model  # noqa: E402
from egal.onnx import ExportError, OnnxGradCAM, export_onnx  # noqa: E402
from egal.onnx import graph as onnx_graph  # noqa: E402

SCORE_ATOL = 1e-5
CLASSES = ["normal", "effusion", "nodule"]
# (architecture, head, in_channels, input size): DenseNet-121 is the paper's model.
CASES = [
    ("tiny_cnn", "linear", 1, (32, 40)),
    ("tiny_cnn", "prototypical", 3, (32, 32)),
    ("resnet18", "prototypical", 3, (64, 64)),
    ("densenet121", "prototypical", 3, (64, 64)),
]


def make_model(architecture, head, in_channels, size, seed=0):
    torch.manual_seed(seed)
    model = build_model(architecture, head, CLASSES, in_channels=in_channels, input_size=size)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    if head == "prototypical":
        model.fit_prototypes(torch.rand(6, in_channels, *size), torch.tensor([0, 1, 2, 0, 1, 2]))
    return model.eval()


def images_and_masks(model, batch, seed=3):
    rng = np.random.default_rng(seed)
    H, W = model.config.input_size
    images = rng.random((batch, model.config.in_channels, H, W), dtype=np.float32)
    masks = np.zeros((batch, H, W), dtype=np.uint8)
    for b in range(batch):
        y, x = rng.integers(0, H // 2), rng.integers(0, W // 2)
        masks[b, y:y + H // 2, x:x + W // 2] = 1
    return images, masks


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def exported(request, tmp_path_factory):
    model = make_model(*request.param)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, path)
    return model, path


def test_graph_passes_the_checker_with_a_dynamic_batch_and_the_stated_ir_version(exported):
    model, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == onnx_graph.IR_VERSION
    assert [o.name for o in proto.graph.output] == list(onnx_graph.OUTPUTS)
    batch_dims = [v.type.tensor_type.shape.dim[0] for v in [*proto.graph.input, *proto.graph.output]]
    assert all(d.dim_param and not d.dim_value for d in batch_dims), "the batch axis must be symbolic"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[onnx_graph.CONFIG_KEY]) == model.config.to_dict()


def test_onnx_outputs_and_scores_equal_the_pytorch_path(exported):
    model, path = exported
    runner = OnnxGradCAM(path, providers=["CPUExecutionProvider"])
    images, masks = images_and_masks(model, batch=5)  # not the batch size the graph was traced with
    outputs = runner.run(images)
    expected = extract_gradcam_inputs(model, torch.from_numpy(images))
    np.testing.assert_allclose(outputs.logits, expected.logits.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outputs.activations, expected.activations.numpy(), rtol=1e-4, atol=1e-5)
    scale = float(np.abs(expected.weights.numpy()).max())
    np.testing.assert_allclose(outputs.cam_weights, expected.weights.numpy(), rtol=1e-3, atol=1e-5 * scale)

    by_onnx = runner.score(images, masks, alpha=0.4)
    by_torch = score_images(model, torch.from_numpy(images), masks, alpha=0.4, method="autograd")
    np.testing.assert_array_equal(by_onnx.pred, by_torch.pred)
    np.testing.assert_allclose(by_onnx.score, by_torch.score, rtol=0, atol=SCORE_ATOL)
    np.testing.assert_allclose(by_onnx.misalignment, by_torch.misalignment, rtol=0, atol=SCORE_ATOL)


def test_ortvalue_outputs_are_scored_in_place(exported):
    # The CUDA path hands OrtValues to the scorer; here the same on CPU.
    model, path = exported
    runner = OnnxGradCAM(path, providers=["CPUExecutionProvider"])
    images, masks = images_and_masks(model, batch=3)
    outputs = runner.run(ort.OrtValue.ortvalue_from_numpy(images))
    as_ortvalues = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v))
                    for k, v in outputs.scorer_kwargs().items()}
    from_ortvalues = egal.score_batch(**as_ortvalues, masks=masks)
    from_numpy = egal.score_batch(**outputs.scorer_kwargs(), masks=masks)
    np.testing.assert_array_equal(from_ortvalues.score, from_numpy.score)


def test_the_io_binding_path_gives_the_same_scores(exported):
    # The CUDA path's IOBinding code, run here with outputs bound on the CPU.
    model, path = exported
    bound = OnnxGradCAM(path, providers=["CPUExecutionProvider"], io_binding=True)
    plain = OnnxGradCAM(path, providers=["CPUExecutionProvider"])
    images, masks = images_and_masks(model, batch=3)
    outputs = bound.run(images)
    assert all(isinstance(v, ort.OrtValue) for v in outputs.scorer_kwargs().values())
    np.testing.assert_array_equal(bound.score(images, masks).score, plain.score(images, masks).score)


def test_batches_of_one_and_many_run_through_one_graph(tmp_path):
    model = make_model("tiny_cnn", "linear", 3, (32, 32))
    path = export_onnx(model, tmp_path / "m.onnx")
    runner = OnnxGradCAM(path)
    for batch in (1, 7):
        images, _ = images_and_masks(model, batch)
        assert runner.run(images).activations.shape == (batch, 64, 4, 4)


def test_runner_refuses_images_of_the_wrong_shape(tmp_path):
    model = make_model("tiny_cnn", "linear", 1, (32, 32))
    runner = OnnxGradCAM(export_onnx(model, tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match=r"images must be \[B, 1, 32, 32\] for this model, got \(2, 3, 32, 32\)"):
        runner.run(np.zeros((2, 3, 32, 32), np.float32))


def test_runner_refuses_a_graph_that_egal_did_not_export(tmp_path):
    node = onnx.helper.make_node("Identity", ["images"], ["logits"])
    g = onnx.helper.make_graph([node], "plain", [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT,
                                                                                    [1, 2])],
                               [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 2])])
    proto = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 18)])
    proto.ir_version = onnx_graph.IR_VERSION
    path = tmp_path / "plain.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match="not an egal Grad-CAM graph"):
        OnnxGradCAM(path)


@pytest.mark.parametrize("head", ["prototypical", "linear"])
def test_a_graph_of_the_format_before_the_prototype_fix(tmp_path, head):
    path = export_onnx(make_model("tiny_cnn", head, 1, (32, 32)), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    next(p for p in proto.metadata_props if p.key == onnx_graph.FORMAT_KEY).value = "egal.gradcam/1"
    onnx.save(proto, str(path))
    if head == "linear":  # a linear head's weights are the same in both formats
        assert OnnxGradCAM(path).run(np.zeros((1, 1, 32, 32), np.float32)).logits.shape == (1, 3)
    else:
        with pytest.raises(ValueError, match="exported before 2026-11-27.*export it again"):
            OnnxGradCAM(path)


def test_a_target_layer_without_closed_form_is_refused(tmp_path):
    model = build_model("resnet18", "linear", CLASSES, target_layer="features.layer3")
    with pytest.raises(ExportError, match=r"'features.layer3' is not the map that its head pools.*no closed form"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_head_without_closed_form_is_refused(tmp_path):
    model = build_model("tiny_cnn", "linear", CLASSES)
    model.head = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    with pytest.raises(ExportError, match="has no closed-form Grad-CAM weights"):
        export_onnx(model, tmp_path / "m.onnx")


def test_prototypes_must_be_fitted_before_export(tmp_path):
    with pytest.raises(ExportError, match="no prototypes yet"):
        export_onnx(build_model("tiny_cnn", "prototypical", CLASSES), tmp_path / "m.onnx")


def _cli(argv):
    from egal.cli import main

    return main(argv)


def test_cli_exports_a_saved_model(tmp_path, capsys):
    model = make_model("tiny_cnn", "prototypical", 3, (32, 32))
    save_model(model, tmp_path / "model.pt")
    assert _cli(["export", "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "model.onnx")]) == 0
    assert "wrote" in capsys.readouterr().out
    runner = OnnxGradCAM(tmp_path / "model.onnx")
    assert runner.classes == tuple(CLASSES)


def test_cli_refuses_to_overwrite_without_overwrite(tmp_path, capsys):
    save_model(make_model("tiny_cnn", "prototypical", 3, (32, 32)), tmp_path / "model.pt")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"a user's own file")
    from egal.cli import main

    # --overwrite replaces a graph egal exported, never another .onnx file (a user's own model was replaced); such a
    # file is named at once, not after a first "pass --overwrite"
    for extra in ([], ["--overwrite"]):
        assert main(["export", "--model", str(tmp_path / "model.pt"), "--out", str(out), *extra]) == 2
        assert "is not an ONNX graph that egal exported" in capsys.readouterr().err
    assert out.read_bytes() == b"a user's own file"
    out.unlink()
    assert _cli(["export", "--model", str(tmp_path / "model.pt"), "--out", str(out)]) == 0
    assert main(["export", "--model", str(tmp_path / "model.pt"), "--out", str(out)]) == 2  # the CLI's exit status
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert _cli(["export", "--model", str(tmp_path / "model.pt"), "--out", str(out), "--overwrite"]) == 0
    assert OnnxGradCAM(out).classes == tuple(CLASSES)
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "model.pt"]  # no temporary left


def test_a_corrupt_graph_is_refused_with_the_reason(tmp_path):
    model = make_model("tiny_cnn", "prototypical", 3, (32, 32))
    good = export_onnx(model, tmp_path / "m.onnx")
    data = open(good, "rb").read()
    for name, content in (("truncated.onnx", data[: len(data) // 3]), ("junk.onnx", b"junk" * 10)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="cannot be loaded by onnxruntime") as error:
            OnnxGradCAM(tmp_path / name)
        assert name in str(error.value) and "egal export" in str(error.value)


def test_cli_reports_a_model_it_cannot_export(tmp_path, capsys):
    save_model(build_model("tiny_cnn", "linear", CLASSES, target_layer="features.conv3"), tmp_path / "model.pt")
    assert _cli(["export", "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "model.onnx")]) == 2
    assert "no closed form" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert _cli(["export", "--model", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "model.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("egal export: error: ") and "is not a PyTorch checkpoint egal can read" in err, err


def test_cli_writes_only_onnx_files(tmp_path, capsys):
    model = make_model("tiny_cnn", "prototypical", 3, (32, 32))
    save_model(model, tmp_path / "model.pt")
    pool = tmp_path / "pool.parquet"
    pool.write_bytes(b"PAR1 a pool PAR1")
    assert _cli(["export", "--model", str(tmp_path / "model.pt"), "--out", str(pool), "--overwrite"]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert pool.read_bytes() == b"PAR1 a pool PAR1"


TORCH_FREE_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name in ("torchvision", "onnxscript"):
                raise ImportError(f"{name} is blocked: this process stands for an inference-only node")

    sys.meta_path.insert(0, NoTorch())
    import numpy as np
    import egal
    from egal.onnx import OnnxGradCAM

    data = np.load(sys.argv[2])
    result = OnnxGradCAM(sys.argv[1]).score(data["images"], data["masks"], alpha=0.4)
    assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
    print(json.dumps({"score": result.score.tolist(), "pred": result.pred.tolist()}))
""")


def test_onnx_scoring_runs_where_importing_torch_fails(tmp_path):
    model = make_model("tiny_cnn", "prototypical", 3, (32, 32))
    path = export_onnx(model, tmp_path / "m.onnx")
    images, masks = images_and_masks(model, batch=4)
    np.savez(tmp_path / "batch.npz", images=images, masks=masks)
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(egal.__file__))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", TORCH_FREE_SCRIPT, str(path), str(tmp_path / "batch.npz")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    expected = score_images(model, torch.from_numpy(images), masks, alpha=0.4)
    np.testing.assert_array_equal(got["pred"], expected.pred)
    np.testing.assert_allclose(got["score"], expected.score, rtol=0, atol=SCORE_ATOL)


def test_the_blocker_really_blocks_torch(tmp_path):
    # Guards the test above: the same blocker makes `import torch` fail.
    script = TORCH_FREE_SCRIPT.split("import numpy as np")[0] + "import torch\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "torch is blocked" in done.stderr


@pytest.mark.cuda
def test_cuda_provider_keeps_outputs_on_the_gpu_and_matches_cpu(tmp_path):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA execution provider here (install onnxruntime-gpu on a GPU node)")
    if not egal.backends()["cuda"]["available"]:
        pytest.skip(f"egal's CUDA scorer is not available: {egal.backends()['cuda'].get('reason')}")
    model = make_model("resnet18", "prototypical", 3, (64, 64))
    path = export_onnx(model, tmp_path / "m.onnx")
    gpu, cpu = OnnxGradCAM(path), OnnxGradCAM(path, providers=["CPUExecutionProvider"])
    assert gpu.on_cuda
    images, masks = images_and_masks(model, batch=6)
    outputs = gpu.run(images)
    assert all(v.device_name().lower() == "cuda" for v in outputs.scorer_kwargs().values())
    on_gpu, on_cpu = gpu.score(images, masks), cpu.score(images, masks)
    np.testing.assert_array_equal(on_gpu.pred, on_cpu.pred)
    np.testing.assert_allclose(on_gpu.score, on_cpu.score, rtol=0, atol=1e-4)


def test_a_cuda_session_that_falls_back_to_the_cpu_says_why(tmp_path):
    # This onnxruntime has no CUDA provider: asked for it, the session runs on the CPU (onnxruntime only logs
    # that), and the runner keeps the reason; `egal score --device cuda` refuses with it.
    path = export_onnx(make_model("tiny_cnn", "linear", 1, (32, 32)), tmp_path / "m.onnx")
    runner = OnnxGradCAM(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not runner.on_cuda
    assert runner.cuda_unavailable_reason.startswith("onnxruntime could not start its CUDA execution provider")
    assert OnnxGradCAM(path, providers=["CPUExecutionProvider"]).cuda_unavailable_reason is None


def test_the_cuda_provider_runs_in_full_float32():
    from egal.onnx.runner import provider_settings

    assert provider_settings(["CUDAExecutionProvider", "CPUExecutionProvider"], 1) == [
        ("CUDAExecutionProvider", {"device_id": 1, "use_tf32": "0"}), "CPUExecutionProvider"]


def test_a_cuda_provider_that_fails_to_start_is_kept_as_the_reason_not_printed(tmp_path, capsys):
    # onnxruntime-gpu whose CUDA provider raises at session start (a driver too old, say): onnxruntime itself
    # would print the error to stdout and retry on the CPU.
    from egal.onnx.runner import _open_session, provider_settings

    path = export_onnx(make_model("tiny_cnn", "linear", 1, (32, 32)), tmp_path / "m.onnx")

    class FailingCuda:
        def InferenceSession(self, path, sess_options=None, providers=(), **kwargs):  # noqa: N802
            if any(isinstance(p, tuple) and p[0] == "CUDAExecutionProvider" for p in providers):
                assert kwargs.get("enable_fallback") == 0
                raise RuntimeError("CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version")
            return ort.InferenceSession(path, sess_options=sess_options, providers=providers)

    session, why = _open_session(FailingCuda(), path, None,
                                 provider_settings(["CUDAExecutionProvider", "CPUExecutionProvider"], 0))
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert why == "CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version"
    assert capsys.readouterr().out == ""


class _FakeOnnxruntime:
    """preload_dlls as onnxruntime-gpu's: it prints what failed to load, and raises for a missing folder."""

    def __init__(self, prints="", raises=None):
        self.prints, self.raises, self.calls = prints, raises, 0

    def preload_dlls(self):
        self.calls += 1
        print(self.prints)
        if self.raises:
            raise self.raises


def test_cuda_libraries_are_loaded_from_the_pip_packages_and_failures_kept(monkeypatch, capsys):
    from egal.onnx.runner import load_cuda_libraries

    load = load_cuda_libraries.__wrapped__  # without the once-per-process cache
    monkeypatch.delitem(sys.modules, "torch")  # an inference-only node
    quiet = _FakeOnnxruntime()
    assert load(quiet) is None and quiet.calls == 1
    failing = _FakeOnnxruntime("Failed to load libcublasLt.so.13: cannot open shared object file\n"
                               "Please follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.")
    assert load(failing) == ("Failed to load libcublasLt.so.13: cannot open shared object file Please follow "
                             "https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.")
    assert load(_FakeOnnxruntime(raises=RuntimeError("no such folder"))) == "RuntimeError: no such folder"
    assert capsys.readouterr().out == ""  # nothing on egal's stdout
    assert load(object()) is None  # an onnxruntime older than preload_dlls


def test_cuda_libraries_are_left_to_torch_once_it_is_imported():
    from egal.onnx.runner import load_cuda_libraries

    assert "torch" in sys.modules
    fake = _FakeOnnxruntime("Failed to load everything")
    assert load_cuda_libraries.__wrapped__(fake) is None and fake.calls == 0


@pytest.mark.parametrize("option, value, message", [
    ("--opset", "1", "error: --opset must be an integer from 18"), ("--opset", "99", "error: --opset must be"),
    ("--ir-version", "1", "error: --ir-version must be an integer from 8"),
    ("--ir-version", "999", "error: --ir-version must be")])
def test_cli_refuses_versions_it_cannot_write(tmp_path, capsys, option, value, message):
    from egal.cli import main

    save_model(make_model("tiny_cnn", "prototypical", 3, (32, 32)), tmp_path / "model.pt")
    assert main(["export", "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.onnx"), option,
                 value]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "m.onnx").exists()


def _edited_graph(source, out, edit):
    proto = onnx.load(str(source))
    edit(proto)
    onnx.save_model(proto, str(out))
    return out


def _fix_batch(size):
    def edit(proto):
        for value in list(proto.graph.input) + list(proto.graph.output):
            dim = value.type.tensor_type.shape.dim[0]
            dim.ClearField("dim_param")
            dim.dim_value = size
    return edit


def _metadata(key, value):
    def edit(proto):
        next(p for p in proto.metadata_props if p.key == key).value = value
    return edit


def test_a_graph_edited_after_export_is_refused_when_loaded_not_at_the_first_batch_that_differs(tmp_path):
    # A batch axis fixed by a shape tool scored the pool's full batches, then failed in onnxruntime with a
    # traceback at the smaller last one; a config that disagrees with the graph failed at the first batch.
    model = make_model("tiny_cnn", "prototypical", 1, (32, 32))
    good = export_onnx(model, tmp_path / "m.onnx")
    cases = [(_fix_batch(32), "takes batches of exactly 32 images (a fixed batch axis)"),
             (_metadata(onnx_graph.CONFIG_KEY, json.dumps({**model.config.to_dict(), "input_size": [64, 64]})),
              "but its embedded config says images are [batch, 1, 64, 64]"),
             (_metadata(onnx_graph.CONFIG_KEY, "{not json"), "its embedded model config (egal.model_config) is "
                                                             "damaged"),
             (_metadata(onnx_graph.CONFIG_KEY, "null"), "is damaged (NoneType)")]
    for i, (edit, message) in enumerate(cases):
        with pytest.raises(egal.errors.EgalError, match=re.escape(message)):
            OnnxGradCAM(_edited_graph(good, tmp_path / f"edited{i}.onnx", edit))


def test_versions_the_installed_onnxruntime_cannot_load_are_refused_at_export_and_named_when_scored(tmp_path):
    model = make_model("tiny_cnn", "prototypical", 1, (32, 32))
    newest = max(v for v in range(8, onnx.IR_VERSION + 1))
    try:
        export_onnx(model, tmp_path / "new.onnx", ir_version=newest)
    except ExportError as error:  # onnxruntime 1.31 reads IR 13 at most; onnx 1.23 writes 14
        assert f"cannot load the graph written with IR version {newest}" in str(error)
        assert "[ONNXRuntimeError]" not in str(error) and ".cc:" not in str(error)
        assert not (tmp_path / "new.onnx").exists()
    else:
        pytest.skip(f"the installed onnxruntime loads IR version {newest}")
    stamped = _edited_graph(export_onnx(model, tmp_path / "m.onnx"), tmp_path / "stamped.onnx",
                            lambda proto: setattr(proto, "ir_version", newest))
    with pytest.raises(egal.errors.EgalError, match="it was written for a newer onnxruntime") as error:
        OnnxGradCAM(stamped)
    assert "copy it again" not in str(error.value)  # the file is whole: it is not a truncated copy


def test_the_graph_refuses_images_a_model_was_not_trained_on_and_scores_an_empty_batch(tmp_path):
    # uint8 images were converted to 0-255 floats and scored: every prediction changed, without a word.
    model = make_model("tiny_cnn", "prototypical", 1, (32, 32))
    scorer = OnnxGradCAM(export_onnx(model, tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    masks = np.ones((2, 32, 32), bool)
    with pytest.raises(TypeError, match=r"images must be floating point in \[0, 1\], got dtype uint8: divide"):
        scorer.score((images * 255).astype(np.uint8), masks)
    with pytest.raises(ValueError, match="8-bit pixels, divide them by 255"):
        scorer.score(images * 255, masks)
    empty = scorer.score(images[:0], masks[:0])  # onnxruntime failed inside the graph's broadcast
    assert empty.score.shape == (0,) and scorer.run(images[:0]).activations.shape[0] == 0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxGradCAM(tmp_path / "missing.onnx")


def test_export_of_a_graph_or_a_pool_says_what_the_file_is(tmp_path, capsys):
    # torch.load reported an UnpicklingError ("it holds Python objects") for both.
    model = make_model("tiny_cnn", "prototypical", 1, (32, 32))
    graph = export_onnx(model, tmp_path / "m.onnx")
    assert _cli(["export", "--model", str(graph), "--out", str(tmp_path / "again.onnx")]) == 2
    err = capsys.readouterr().err
    assert "it is an ONNX graph: egal score and egal report take it as it is" in err and "Unpickl" not in err
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "pool.parquet")
    assert _cli(["export", "--model", str(tmp_path / "pool.parquet"), "--out", str(tmp_path / "p.onnx")]) == 2
    assert "it is a Parquet file (a pool or a scores file?), not a model" in capsys.readouterr().err
    assert not (tmp_path / "again.onnx").exists() and not (tmp_path / "p.onnx").exists()


def test_a_torchscript_file_or_a_config_asking_for_huge_layers_is_refused_without_allocating(tmp_path, capsys):
    model = make_model("tiny_cnn", "prototypical", 1, (32, 32))
    torch.jit.save(torch.jit.trace(model.features, torch.rand(1, 1, 32, 32)), str(tmp_path / "script.pt"))
    assert _cli(["export", "--model", str(tmp_path / "script.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "it is a TorchScript archive" in err and "weights_only` set to `False`" not in err
    assert len(err.strip().splitlines()) == 1  # PyTorch's UserWarning is not printed
    payload = torch.load(_saved(model, tmp_path / "m.pt"), weights_only=True)
    payload["config"]["embedding_dim"] = 10**9  # 256 GB of weights, before: the allocator's traceback
    torch.save(payload, tmp_path / "huge.pt")
    assert _cli(["export", "--model", str(tmp_path / "huge.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "the state dict does not match its config" in capsys.readouterr().err


def _saved(model, path):
    save_model(model, path)
    return path


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    import errno

    import egal.onnx.export as export_module

    def full(proto, path, **kwargs):
        open(path, "wb").write(b"half a graph")
        raise OSError(errno.ENOSPC, "No space left on device")

    save_model(make_model("tiny_cnn", "prototypical", 1, (32, 32)), tmp_path / "model.pt")
    monkeypatch.setattr(export_module.onnx, "save_model", full)
    assert _cli(["export", "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "egal export: error: [Errno 28] No space left on device"  # was a traceback
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
