"""egal.gradcam: batched Grad-CAM inputs, closed form vs autograd, and scoring through egal.score_batch."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import egal  # noqa: E402
from egal.gradcam import closed_form_applies, extract_gradcam_inputs, score_images  # noqa: E402
from egal.models import build_model  # noqa: E402

CLASSES = ["normal", "effusion", "nodule"]
# Per architecture: an input size giving a map larger than 1 x 1 at small cost.
SIZES = {"tiny_cnn": 32, "resnet18": 96, "densenet121": 96}


def random_model(architecture, head, seed=0, **kwargs):
    """A model with random weights *and* random BatchNorm statistics, prototypes fitted."""
    torch.manual_seed(seed)
    model = build_model(architecture, head, CLASSES, input_size=(SIZES[architecture],) * 2, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=g)
                module.running_var.uniform_(0.5, 2.0, generator=g)
                module.weight.uniform_(0.5, 1.5, generator=g)
                module.bias.uniform_(-0.2, 0.2, generator=g)
    if head == "prototypical":
        size = SIZES[architecture]
        model.fit_prototypes(torch.rand(6, model.config.in_channels, size, size, generator=g),
                             torch.tensor([0, 1, 2, 0, 1, 2]))
    return model.eval()


def images_for(model, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    H, W = model.config.input_size
    return torch.rand(batch, model.config.in_channels, H, W, generator=g)


def masks_for(images, seed=2):
    g = torch.Generator().manual_seed(seed)
    B, _, H, W = images.shape
    masks = torch.zeros(B, H, W, dtype=torch.bool)
    for b in range(B):
        y, x = torch.randint(0, H // 2, (2,), generator=g).tolist()
        masks[b, y:y + H // 2, x:x + W // 2] = True
    return masks


def per_sample_gradcam_weights(model, images, layer):
    """Grad-CAM weights the textbook way: one image, one forward, one backward at a time.

    On a copy of the model with every ReLU out of place: a plain hook on a layer
    followed by ReLU(inplace=True) would read the map after the ReLU overwrote it.
    """
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    module = dict(model.named_modules())[layer]
    weights = []
    for image in images:
        store = {}
        handle = module.register_forward_hook(lambda m, i, o, store=store: store.update(out=o))
        try:
            logits = model(image[None])
            grad = torch.autograd.grad(logits[0, logits[0].argmax()], store["out"])[0]
        finally:
            handle.remove()
        weights.append(grad.mean(dim=(2, 3))[0])
    return torch.stack(weights)


@pytest.mark.parametrize("architecture", ["tiny_cnn", "resnet18", "densenet121"])
@pytest.mark.parametrize("head", ["linear", "prototypical"])
def test_closed_form_weights_and_scores_equal_autograd_at_the_default_layer(architecture, head):
    model = random_model(architecture, head, seed=hash((architecture, head)) % 1000)
    images = images_for(model)
    assert closed_form_applies(model)
    closed = extract_gradcam_inputs(model, images)  # the default path
    autograd = extract_gradcam_inputs(model, images, method="autograd")
    assert (closed.method, autograd.method) == ("closed_form", "autograd")
    assert closed.activations.shape[2:] != (1, 1), "test the map with more than one cell"
    torch.testing.assert_close(closed.activations, autograd.activations, rtol=0, atol=0)
    torch.testing.assert_close(closed.logits, autograd.logits, rtol=0, atol=0)
    scale = float(autograd.channel_weights().abs().max())
    assert scale > 0
    torch.testing.assert_close(closed.weights, autograd.channel_weights(), rtol=1e-5, atol=1e-6 * scale)

    masks = masks_for(images)
    by_closed = egal.score_batch(**closed.scorer_kwargs(), masks=masks)
    by_autograd = egal.score_batch(**autograd.scorer_kwargs(), masks=masks)
    np.testing.assert_allclose(by_closed.score, by_autograd.score, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(by_closed.pred, by_autograd.pred)


@pytest.mark.parametrize("layer", ["features.conv2", "features.norm3", "features.relu2"])
def test_batched_autograd_equals_one_sample_at_a_time(layer):
    model = random_model("tiny_cnn", "prototypical", target_layer=layer)
    images = images_for(model, batch=4)
    assert not closed_form_applies(model)
    inputs = extract_gradcam_inputs(model, images)
    assert inputs.method == "autograd"
    expected = per_sample_gradcam_weights(model, images, layer)
    torch.testing.assert_close(inputs.channel_weights(), expected, rtol=1e-5, atol=1e-7)


def test_layer_followed_by_an_inplace_relu_keeps_its_pre_relu_activations():
    # DenseNet's norm2 feeds relu2(inplace=True): a naive hook would see the map
    # after the ReLU overwrote it. The reference model has every ReLU out of place.
    layer = "features.denseblock4.denselayer16.norm2"
    model = random_model("densenet121", "linear", target_layer=layer)
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    images = images_for(model, batch=2)
    inputs = extract_gradcam_inputs(model, images)
    assert bool((inputs.activations < 0).any()), "a BatchNorm output must keep its negative values"
    store = {}
    handle = dict(reference.named_modules())[layer].register_forward_hook(lambda m, i, o: store.update(out=o))
    with torch.no_grad():
        reference(images)
    handle.remove()
    torch.testing.assert_close(inputs.activations, store["out"])
    torch.testing.assert_close(inputs.channel_weights(), per_sample_gradcam_weights(reference, images, layer),
                               rtol=1e-4, atol=1e-7)


def test_the_paper_code_target_layer_runs_the_autograd_path():
    model = random_model("densenet121", "prototypical", target_layer="features.denseblock4.denselayer16.conv2")
    images = images_for(model, batch=2)
    inputs = extract_gradcam_inputs(model, images)
    assert inputs.method == "autograd"
    assert inputs.activations.shape[:2] == (2, 32)  # DenseNet's growth rate
    assert inputs.gradients.shape == inputs.activations.shape


def test_closed_form_is_refused_where_the_layer_is_not_pooled_directly():
    model = random_model("resnet18", "linear", target_layer="features.layer3")
    with pytest.raises(ValueError, match=r"'features.layer3' is not: use method='autograd'"):
        extract_gradcam_inputs(model, images_for(model, 1), method="closed_form")


def test_a_module_run_twice_per_forward_is_refused():
    model = random_model("resnet18", "linear")
    with pytest.raises(ValueError, match="ran 2 times in one forward pass"):
        extract_gradcam_inputs(model, images_for(model, 1), target_layer="features.layer4.1.relu")


@pytest.mark.parametrize("method,layer", [("auto", None), ("autograd", None), ("auto", "features.conv3")])
def test_no_hook_grad_mode_or_training_flag_is_left_behind(method, layer):
    model = random_model("tiny_cnn", "linear").train()
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    extract_gradcam_inputs(model, images_for(model), method=method, target_layer=layer)
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before
    assert model.training and torch.is_grad_enabled()
    assert all(p.grad is None for p in model.parameters()), "parameter gradients must not be accumulated"


def test_no_hook_is_left_behind_after_an_error():
    model = random_model("resnet18", "linear")
    with pytest.raises(ValueError):
        extract_gradcam_inputs(model, images_for(model, 1), target_layer="features.layer4.1.relu")
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert torch.is_grad_enabled()


def test_extraction_runs_in_eval_mode_so_samples_do_not_interact():
    model = random_model("tiny_cnn", "linear").train()
    images = images_for(model, batch=4)
    together = extract_gradcam_inputs(model, images, method="autograd")
    alone = extract_gradcam_inputs(model, images[:1], method="autograd")
    torch.testing.assert_close(together.gradients[:1], alone.gradients, rtol=1e-5, atol=1e-8)


def test_frozen_backbone_still_gives_gradients():
    model = random_model("tiny_cnn", "linear", target_layer="features.conv3")
    for p in model.parameters():
        p.requires_grad_(False)
    inputs = extract_gradcam_inputs(model, images_for(model))
    assert float(inputs.gradients.abs().sum()) > 0


def test_results_are_detached_and_on_the_model_device():
    model = random_model("tiny_cnn", "linear", target_layer="features.conv3")
    inputs = extract_gradcam_inputs(model, images_for(model).numpy())  # numpy images are accepted
    for t in (inputs.activations, inputs.logits, inputs.gradients):
        assert not t.requires_grad and t.device == next(model.parameters()).device
    torch.testing.assert_close(inputs.pred, inputs.logits.argmax(dim=1))


def test_integer_images_are_refused():
    model = random_model("tiny_cnn", "linear")
    with pytest.raises(TypeError, match="floating point in \\[0, 1\\]"):
        extract_gradcam_inputs(model, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_images_outside_0_1_are_refused_with_what_to_do_but_a_nan_pixel_is_one_samples_problem():
    # 0-255 floats (or normalised images) ran, and every prediction flipped: the models normalise inside.
    model = random_model("tiny_cnn", "linear")
    images = torch.rand(3, 3, 32, 32)
    masks = torch.ones(3, 32, 32, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"images must hold pixel values in \[0, 1\].*: 8-bit pixels, divide"):
        score_images(model, images * 255, masks)
    with pytest.raises(ValueError, match="normalised images"):
        extract_gradcam_inputs(model, (images - 0.5) / 0.25)
    images[1, 0, 0, 0] = float("nan")
    result = score_images(model, images, masks)
    assert np.isnan(result.score[1]) and np.isfinite(result.score[[0, 2]]).all()


def test_numpy_images_read_backwards_or_big_endian_score_as_their_copy():
    model = random_model("tiny_cnn", "linear")
    images = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    masks = np.ones((3, 32, 32), bool)
    np.testing.assert_array_equal(score_images(model, images[::-1], masks).score,
                                  score_images(model, np.ascontiguousarray(images[::-1]), masks).score)
    np.testing.assert_array_equal(score_images(model, images.astype(">f4"), masks).score,  # big-endian data
                                  score_images(model, images, masks).score)


def test_score_images_equals_the_reference_scorer_on_the_same_inputs():
    import egal.reference

    model = random_model("resnet18", "prototypical")
    images = images_for(model, batch=3)
    masks = masks_for(images)
    result = score_images(model, images, masks, alpha=0.3, return_cam=True)
    inputs = extract_gradcam_inputs(model, images, method="autograd")
    expected = egal.reference.score_batch(inputs.activations, inputs.logits, masks, gradients=inputs.gradients,
                                          alpha=0.3, return_cam=True)
    np.testing.assert_allclose(result.score, expected.score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.cam, expected.cam, rtol=1e-4, atol=1e-5)
    assert result.cam.shape == (3, 3, 3)


def test_weights_agree_with_pytorch_grad_cam():
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    model = random_model("tiny_cnn", "linear", target_layer="features.conv3")
    images = images_for(model, batch=3)
    layer = model.features.conv3
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=images, targets=None)  # [B, H, W], upsampled; targets=None: predicted class
        # pytorch-grad-cam keeps the activations and gradients of its last call
        theirs = cam.get_cam_weights(images, [layer], None, cam.activations_and_grads.activations[0].numpy(),
                                     cam.activations_and_grads.gradients[0].numpy())
    ours = extract_gradcam_inputs(model, images)
    np.testing.assert_allclose(ours.channel_weights().numpy(), theirs, rtol=1e-4, atol=1e-8)
    assert maps.shape == (3, 32, 32)


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["closed_form", "autograd"])
def test_cuda_model_scores_on_the_gpu_like_on_the_cpu(method):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    model = random_model("resnet18", "prototypical")
    images = images_for(model, batch=4)
    masks = masks_for(images)
    on_cpu = score_images(model, images, masks, method=method)
    gpu_model = copy.deepcopy(model).cuda()
    inputs = extract_gradcam_inputs(gpu_model, images.cuda(), method=method)
    assert all(t.is_cuda for t in inputs.scorer_kwargs().values())
    on_gpu = score_images(gpu_model, images.cuda(), masks.cuda(), method=method)
    np.testing.assert_array_equal(on_gpu.pred, on_cpu.pred)
    # cuDNN convolutions may differ from the CPU ones in the last bits.
    np.testing.assert_allclose(on_gpu.score, on_cpu.score, rtol=0, atol=1e-4)


def test_grad_cam_inputs_on_a_gpu_are_computed_without_tf32_and_the_setting_is_restored():
    from egal.gradcam.extract import _precision_switches, full_float32

    switches = _precision_switches()
    before = [getattr(owner, name) for owner, name, _ in switches]
    tf32 = "tf32" if isinstance(switches[0][2], str) else True
    try:
        for owner, name, _ in switches:
            setattr(owner, name, tf32)
        with full_float32(torch.device("cuda")):  # the switches need no GPU to be set
            assert [getattr(owner, name) for owner, name, _ in switches] == [exact for _, _, exact in switches]
        assert [getattr(owner, name) for owner, name, _ in switches] == [tf32, tf32]
        with pytest.raises(KeyError), full_float32(torch.device("cuda")):
            raise KeyError("an error inside")
        assert [getattr(owner, name) for owner, name, _ in switches] == [tf32, tf32]
        with full_float32(torch.device("cpu")):
            assert [getattr(owner, name) for owner, name, _ in switches] == [tf32, tf32]
    finally:
        for (owner, name, _), value in zip(switches, before, strict=True):
            setattr(owner, name, value)
