"""egal.models: architectures, heads, initial weights, and the one-file model format."""
import pickle
import urllib.error

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from egal.models import (  # noqa: E402
    ModelConfig,
    ModelConfigError,
    ModelFileError,
    WeightsUnavailableError,
    build_model,
    load_model,
    save_model,
)
from egal.models.heads import PrototypicalHead  # noqa: E402

CLASSES = ["normal", "effusion", "nodule"]


def _with_prototypes(model, size=32):
    g = torch.Generator().manual_seed(1)
    model.fit_prototypes(torch.rand(6, model.config.in_channels, size, size, generator=g),
                         torch.tensor([0, 1, 2, 2, 1, 0]))
    return model


@pytest.mark.parametrize("architecture,size,channels", [("tiny_cnn", 32, 64), ("resnet18", 64, 512),
                                                        ("densenet121", 32, 1024)])
@pytest.mark.parametrize("head", ["linear", "prototypical"])
def test_every_architecture_and_head_gives_logits_per_class(architecture, size, channels, head):
    model = build_model(architecture, head, CLASSES, input_size=(size, size))
    if head == "prototypical":
        _with_prototypes(model, size)
    model.eval()
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        fmap = model.feature_map(images)
        logits = model(images)
    assert logits.shape == (2, 3)
    assert fmap.shape[:2] == (2, channels)
    assert bool((fmap >= 0).all()), "the default target map must be post-ReLU"
    assert model.config.target_layer in model.pooled_layer_names()


def test_paper_model_defaults_are_densenet121_with_512d_prototypes():
    model = build_model(classes=CLASSES)
    config = model.config
    assert (config.architecture, config.head, config.embedding_dim) == ("densenet121", "prototypical", 512)
    assert model.config.target_layer == "features.relu5"
    assert model.head.embedding.out_features == 512


def test_paper_code_layer_name_is_a_valid_target():
    model = build_model("densenet121", "linear", CLASSES, target_layer="features.denseblock4.denselayer16.conv2")
    assert model.config.target_layer == "features.denseblock4.denselayer16.conv2"


def test_unknown_target_layer_is_refused_with_suggestions():
    with pytest.raises(ValueError, match=r"'features\.layer4\.1\.conv3' is not a module.*features\.layer4\.1\.conv2"):
        build_model("resnet18", "linear", CLASSES, target_layer="features.layer4.1.conv3")


def test_grey_input_uses_rgb_kernels_summed(tmp_path):
    rgb = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(rgb.state_dict(), path)
    model = build_model("resnet18", "linear", CLASSES, in_channels=1, weights=str(path))
    assert model.features.conv1.in_channels == 1
    torch.testing.assert_close(model.features.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    assert model.config.mean == pytest.approx((0.449,), abs=1e-3)
    # A grey image gives what the RGB backbone gives for (x, x, x) (up to its own normalisation).
    model.eval(), rgb.eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        grey_out = model.features.conv1(x)
        rgb_out = rgb.conv1(x.expand(1, 3, 32, 32))
    torch.testing.assert_close(grey_out, rgb_out, rtol=1e-4, atol=1e-5)


def test_local_weights_file_is_loaded(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # the wrapped layout is accepted too
    model = build_model("resnet18", "linear", CLASSES, weights=path)
    torch.testing.assert_close(model.features.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.config.extra["initial_weights"] == "file:r18.pth"


def test_densenet_file_with_torchvision_legacy_key_names_is_loaded(tmp_path):
    source = torchvision.models.densenet121(weights=None)
    legacy = {}
    for key, value in source.state_dict().items():
        # torchvision's published file spells "denselayer1.norm1.weight" as "denselayer1.norm.1.weight"
        for part in ("norm1", "norm2", "conv1", "conv2", "relu1", "relu2"):
            key = key.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        legacy[key] = value
    assert any(".norm.1." in k for k in legacy)
    path = tmp_path / "densenet121-legacy.pth"
    torch.save(legacy, path)
    model = build_model("densenet121", "linear", CLASSES, weights=path)
    torch.testing.assert_close(model.features.denseblock4.denselayer16.conv2.weight,
                               source.features.denseblock4.denselayer16.conv2.weight)


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit a densenet121 backbone: missing"):
        build_model("densenet121", "linear", CLASSES, weights=path)


@pytest.mark.parametrize("architecture,file_name", [("resnet18", "resnet18-f37072fd.pth"),
                                                    ("densenet121", "densenet121-a639ec97.pth")])
def test_unobtainable_imagenet_weights_stop_with_what_to_do(monkeypatch, tmp_path, architecture, file_name):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    calls = []

    def offline(url, *args, **kwargs):  # and no network: nothing is downloaded
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(architecture, "linear", CLASSES, weights="imagenet")
    message = str(info.value)
    assert calls and calls[0].endswith("/" + file_name)
    assert f"ImageNet weights for {architecture}" in message
    assert "URLError" in message and "network is unreachable" in message  # why
    assert f"copy {file_name} " in message and str(tmp_path / "hub" / "checkpoints") in message  # where to put the file
    assert f"--weights /path/to/{file_name}" in message and "--weights none" in message and "weights=None" in message
    assert isinstance(info.value, ValueError)  # the CLI reports it with exit status 2
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_the_file_named_in_the_error_is_read_from_the_folder_it_names(monkeypatch, tmp_path):
    """Following the hint works: the file copied where the message says is what torch's hub loads
    (no network needed: a cached file is never downloaded again)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    real_load = torch.hub.load_state_dict_from_url

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("resnet18", "linear", CLASSES, weights="imagenet")
    message = str(info.value)
    folder = message.split("into ", 1)[1].split(" (torch's hub cache", 1)[0].rstrip("/")
    file_name = message.split("copy ", 1)[1].split(" ", 1)[0]
    expected = torchvision.models.resnet18(weights=None).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(expected, f"{folder}/{file_name}")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", real_load)
    model = build_model("resnet18", "linear", CLASSES, weights="imagenet")
    torch.testing.assert_close(model.features.conv1.weight, expected["conv1.weight"])
    assert model.config.extra["initial_weights"] == "imagenet"


def test_a_file_in_the_hub_cache_that_holds_code_is_refused_not_run(monkeypatch, tmp_path):
    """A shared $TORCH_HOME is writable by others: torch.hub unpickles a cached file in full unless asked not to
    (and checks the hash only of what it downloads)."""
    import pickle

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with open(cached, "wb") as f:
        pickle.dump({"conv1.weight": Payload()}, f)
    with pytest.raises(WeightsUnavailableError, match=r"resnet18-f37072fd\.pth, is not a plain state dict.*delete it"):
        build_model("resnet18", "linear", CLASSES, weights="imagenet")
    assert not marker.exists()


def test_imagenet_weights_from_the_hub_cache_are_used(monkeypatch, tmp_path):
    expected = torchvision.models.resnet18(weights=None).state_dict()
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: expected)
    model = build_model("resnet18", "linear", CLASSES, weights="imagenet")
    torch.testing.assert_close(model.features.conv1.weight, expected["conv1.weight"])
    assert model.config.extra["initial_weights"] == "imagenet"


def test_tiny_cnn_has_no_imagenet_weights():
    with pytest.raises(ValueError, match="no ImageNet weights for 'tiny_cnn'"):
        build_model("tiny_cnn", "linear", CLASSES, weights="imagenet")


@pytest.mark.parametrize("kwargs,message", [
    ({"classes": ["only"]}, "at least 2"),
    ({"classes": ["a", "a"]}, "distinct"),
    ({"architecture": "vgg16"}, "architecture must be one of"),
    ({"head": "cosine"}, "head must be one of"),
    ({"in_channels": 2}, "in_channels must be 1 or 3"),
    ({"mean": [0.5]}, "mean must hold 3"),
    ({"input_size": (0, 32)}, "input_size"),
    ({"input_size": 32}, "input_size must be a sequence, got 32"),
    ({"classes": "normal"}, "classes must be a sequence, got 'normal'"),  # was a 6-class model n, o, r, m, a, l
])
def test_invalid_configs_are_refused(kwargs, message):
    args = {"architecture": "tiny_cnn", "head": "linear", "classes": CLASSES, **kwargs}
    with pytest.raises(ModelConfigError, match=message):
        build_model(args.pop("architecture"), args.pop("head"), args.pop("classes"), **args)


def test_prototypical_head_refuses_to_run_without_prototypes():
    model = build_model("tiny_cnn", "prototypical", CLASSES).eval()
    with pytest.raises(RuntimeError, match="no prototypes yet: call model.fit_prototypes"):
        model(torch.rand(1, 3, 32, 32))


def test_prototypes_are_class_means_and_logits_are_negative_squared_distances():
    model = build_model("tiny_cnn", "prototypical", CLASSES, embedding_dim=8).eval()
    images, labels = torch.rand(7, 3, 32, 32), torch.tensor([0, 1, 2, 2, 1, 0, 0])
    model.fit_prototypes(images, labels, batch_size=3)
    embeddings = model.embed(images)
    for c in range(3):
        torch.testing.assert_close(model.head.prototypes[c], embeddings[labels == c].mean(dim=0))
    with torch.no_grad():
        logits = model(images)
    expected = -torch.cdist(embeddings.double(), model.head.prototypes.double()) ** 2
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5)


def test_the_logits_keep_float32_precision_where_embeddings_share_a_large_common_part():
    rng = np.random.default_rng(0)
    common = 20.0 * rng.random(512)
    e, p = common + 0.3 * rng.standard_normal((6, 512)), common + 0.3 * rng.standard_normal((3, 512))
    logits = PrototypicalHead.logits_against(torch.tensor(e, dtype=torch.float32), torch.tensor(p, dtype=torch.float32))
    exact = torch.softmax(-torch.cdist(torch.tensor(e), torch.tensor(p)) ** 2, 1)
    assert float((torch.softmax(logits.double(), 1) - exact).abs().max()) < 1e-4


def test_the_prototypical_closed_form_gradient_is_the_logits_autograd_gradient():
    """2 E^T p: the class-independent -|e|^2 of -|e - p|^2 contributes no gradient, which would pull every
    class's Grad-CAM weights towards -2 E^T e (and most maps to zero after the ReLU)."""
    model = build_model("tiny_cnn", "prototypical", CLASSES, embedding_dim=8).eval()
    model.fit_prototypes(torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2]))
    pooled = torch.randn(5, model.head.embedding.in_features, requires_grad=True)
    pred = torch.tensor([0, 2, 1, 1, 0])
    model.head(pooled).gather(1, pred[:, None]).sum().backward()
    torch.testing.assert_close(model.head.logit_gradient(pooled, pred), pooled.grad, rtol=1e-5, atol=1e-6)


def test_a_class_without_labelled_samples_is_reported():
    model = build_model("tiny_cnn", "prototypical", CLASSES)
    with pytest.raises(ValueError, match=r"none for class\(es\) \[1\]"):
        model.fit_prototypes(torch.rand(3, 3, 32, 32), torch.tensor([0, 2, 2]))


def test_saved_model_round_trips_config_weights_and_prototypes(tmp_path):
    model = _with_prototypes(build_model("tiny_cnn", "prototypical", CLASSES, in_channels=1, input_size=(32, 48),
                                         embedding_dim=16, target_layer="features.conv3"))
    path = tmp_path / "model.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    assert not loaded.training
    images = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model.eval()(images), rtol=0, atol=0)


class _NotAllowed:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("unpickled!",))


def test_loading_refuses_arbitrary_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "egal.model", "payload": _NotAllowed()}, path)
    with pytest.raises(ModelFileError, match="weights_only=True"):
        load_model(path)


@pytest.mark.parametrize("mutate,message", [
    (lambda p: p.update(format="something.else"), "not an egal model file"),
    (lambda p: p.update(format_version=99), "format version 99"),
    (lambda p: p["config"].update(head="cosine"), "invalid model config: head must be one of"),
    (lambda p: p["config"].pop("classes"), r"lacks required field\(s\) \['classes'\]"),
    (lambda p: p["config"].update(classes=["a", "b"]), r"wrong shape \['head.fc.bias \(3,\) != \(2,\)"),
    (lambda p: p["state_dict"].pop("head.fc.bias"), r"missing \['head.fc.bias'\]"),
    (lambda p: p["state_dict"].update(extra=torch.zeros(1)), r"unexpected \['extra'\]"),
])
def test_files_that_do_not_validate_are_refused(tmp_path, mutate, message):
    model = build_model("tiny_cnn", "linear", CLASSES)
    path = tmp_path / "model.pt"
    save_model(model, path)
    payload = torch.load(path, weights_only=True)
    mutate(payload)
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_a_plain_pickle_is_not_a_model_file(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"hello": 1}))
    with pytest.raises(ModelFileError):
        load_model(path)


def test_config_from_dict_rejects_unknown_fields():
    config = build_model("tiny_cnn", "linear", CLASSES).config.to_dict()
    config["dropout"] = 0.5
    with pytest.raises(ModelConfigError, match=r"unknown model config field\(s\) \['dropout'\]"):
        ModelConfig.from_dict(config)


def test_a_folder_or_a_pickled_object_is_named_without_advice_to_load_unsafely(tmp_path):
    from egal.models.checkpoint import ModelFileError

    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_model(tmp_path / "dir.pt")
    torch.save({"format": object()}, tmp_path / "pickled.pt")  # an arbitrary object: refused by the safe load
    with pytest.raises(ModelFileError) as caught:
        load_model(tmp_path / "pickled.pt")
    assert "weights_only=False" not in str(caught.value) and "Python objects" in str(caught.value)
