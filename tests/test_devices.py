"""Which devices a model may be asked to run on (cpu, cuda, cuda:N), and what is said when the GPU named is not
there. The runs on a GPU are in test_scorer_cuda.py and bench/gpu_check.sh; these tests hold on any machine."""
import pytest

from egal._checks import check_device, cuda_index
from egal.errors import EgalError

torch = pytest.importorskip("torch")

from egal.pipeline import model_runner  # noqa: E402
from egal.pipeline.model_runner import load_runner  # noqa: E402
from pools import save_tiny_model  # noqa: E402


@pytest.mark.parametrize("device,index", [("cpu", None), ("cuda", 0), ("cuda:0", 0), ("cuda:7", 7), ("cuda:12", 12)])
def test_devices_and_the_gpu_they_name(device, index):
    assert check_device(device) == device
    assert cuda_index(device) == index


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:1 ", " cpu", "cuda:١", "mps", 0, None])
def test_other_devices_are_refused_naming_the_forms(device):
    with pytest.raises(EgalError, match=r"^device must be cpu, cuda or cuda:N, got "):
        check_device(device)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt", input_size=(32, 32))


def test_a_gpu_pytorch_cannot_see_is_named_with_the_ones_it_can(model_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(EgalError, match=r"device='cuda:2' \(--device cuda:2\): PyTorch sees 2 GPUs here "
                       r"\(cuda:0 to cuda:1; CUDA_VISIBLE_DEVICES chooses which\)"):
        load_runner(model_path, "cuda:2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(EgalError, match=r"PyTorch sees 1 GPU here \(cuda:0;"):
        load_runner(model_path, "cuda:1")


def test_no_gpu_at_all_is_said_for_every_cuda_device(model_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(EgalError, match=rf"device='{device}' \(--device {device}\): PyTorch sees no CUDA GPU"):
            load_runner(model_path, device)


def test_the_onnx_runner_opens_its_session_on_the_gpu_named(model_path, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    opened = []

    class OnCuda:
        on_cuda = True

        def __init__(self, path, *, providers, device_id=0):
            opened.append((providers[0], device_id))
            raise EgalError("stop here: the session's settings are what this test reads")

    monkeypatch.setattr(model_runner, "onnxruntime_lacks_cuda", lambda: False)
    monkeypatch.setattr("egal.onnx.runner.OnnxGradCAM", OnCuda)
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"never read")
    for device in ("cuda", "cuda:3"):
        with pytest.raises(EgalError, match="stop here"):
            load_runner(graph, device)
    assert opened == [("CUDAExecutionProvider", 0), ("CUDAExecutionProvider", 3)]


def test_the_onnx_runner_without_a_cuda_provider_names_the_device(model_path, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(model_runner, "onnxruntime_lacks_cuda", lambda: True)
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"never read")
    with pytest.raises(EgalError, match=r"device='cuda:1' \(--device cuda:1\): onnxruntime has no "
                       "CUDAExecutionProvider"):
        load_runner(graph, "cuda:1")


def test_training_may_also_run_on_mps_and_scoring_may_not():
    # The fused scorer has no backend on Apple's GPU; PyTorch training does.
    assert check_device("mps", mps=True) == "mps"
    with pytest.raises(EgalError, match=r"^device must be cpu, cuda, cuda:N or mps, got 'gpu'"):
        check_device("gpu", mps=True)
    with pytest.raises(EgalError, match=r"^device must be cpu, cuda or cuda:N, got 'mps'"):
        check_device("mps")
