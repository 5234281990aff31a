"""egal.train: the differentiable Grad-CAM Dice loss, episodes, paired augmentation, the trainer."""
import numpy as np
import pytest
import torch

import egal
from egal.models import build_model, load_model, save_model
from egal.train import (
    AugmentSettings,
    TrainConfig,
    augment_pair,
    gradcam_dice_loss,
    gradcam_from_weights,
    gradcam_of_class,
    project_masks,
    sample_episode,
    soft_dice_distance,
    train_model,
)
from lesion_data import CLASSES, lesion_arrays

torch.set_num_threads(1)


def small_config(**kw):
    base = dict(architecture="tiny_cnn", head="prototypical", input_size=(32, 32), in_channels=1, embedding_dim=16,
                epochs=2, lr=3e-3, beta=0.5, k_shot=3, n_query=4, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("head", ["linear", "prototypical"])
def test_differentiable_gradcam_and_dice_match_the_fused_scorer(head):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", head, CLASSES, input_size=(32, 32), in_channels=1,
                        embedding_dim=8 if head == "prototypical" else None).eval()
    images, masks, labels = lesion_arrays(12, 32, seed=1)
    x = torch.from_numpy(images)
    if head == "prototypical":
        model.fit_prototypes(x, torch.from_numpy(labels))
    activations = model.feature_map(x)  # [B, K, h, w]
    logits = model.head(model.pool(activations))  # [B, C]
    pred = logits.argmax(1)
    cam = gradcam_of_class(activations, logits, pred)  # [B, h, w]
    distance = soft_dice_distance(cam, torch.from_numpy(masks))
    fused = egal.score_batch(activations.detach(), logits.detach(), masks,
                             gradients=None,
                             weights=model.head.logit_gradient(model.pool(activations), pred).detach() / 16,
                             return_cam=True)
    np.testing.assert_allclose(cam.detach().numpy(), fused.cam, atol=2e-5)
    np.testing.assert_allclose(distance.detach().numpy(), fused.misalignment, atol=2e-5)


def closed_form_weights(model, maps, logits_or_emb, targets, prototypes=None):
    h, w = maps.shape[2:]
    if prototypes is None:
        return model.head.logit_gradient(model.pool(maps), targets) / (h * w)
    return model.head.logit_gradient_against(logits_or_emb, prototypes, targets) / (h * w)


def test_dice_of_an_empty_roi_is_nan_and_skipped():
    cam = torch.rand(3, 4, 4)
    masks = torch.zeros(3, 16, 16)
    masks[1, 2:6, 2:6] = 1
    d = soft_dice_distance(cam, masks)
    assert torch.isnan(d[0]) and torch.isnan(d[2]) and torch.isfinite(d[1])
    activations = torch.rand(3, 5, 4, 4, requires_grad=True)
    weights = torch.randn(3, 5)
    loss, rows = gradcam_dice_loss(activations, weights, *project_masks(masks, (4, 4)), (16, 16))
    assert rows == 1 and torch.isfinite(loss)
    expected = soft_dice_distance(gradcam_from_weights(activations, weights), masks)[1]
    np.testing.assert_allclose(float(loss.detach()), float(expected.detach()), rtol=1e-5)
    empty = torch.zeros(3, 16, 16)
    loss, rows = gradcam_dice_loss(activations, weights, *project_masks(empty, (4, 4)), (16, 16))
    assert rows == 0 and float(loss.detach()) == 0.0


@pytest.mark.parametrize("cam_size,roi_size", [((4, 4), (16, 16)), ((7, 5), (33, 20)), ((8, 8), (6, 6))])
def test_the_projected_dice_is_the_upsampled_dice(cam_size, roi_size):
    """The trainer's Dice (ROI projected onto the grid once) equals docs/scoring.md's upsample-then-compare,
    for binary and soft masks, up- and downsampling, with the same gradient with respect to the map."""
    gen = torch.Generator().manual_seed(7)
    for masks in ((torch.rand(5, *roi_size, generator=gen) > 0.7).float(), torch.rand(5, *roi_size, generator=gen)):
        cam = torch.rand(5, *cam_size, generator=gen, requires_grad=True)
        full = soft_dice_distance(cam, masks)
        (grad_full,) = torch.autograd.grad(full.sum(), cam)
        weights, area = project_masks(masks, cam_size)
        projected = egal.reference.projected_dice_distance(cam, weights, area, roi_size)
        (grad_projected,) = torch.autograd.grad(projected.sum(), cam)
        torch.testing.assert_close(projected, full, atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(grad_projected, grad_full, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("head", ["linear", "prototypical"])
@pytest.mark.parametrize("soft", [False, True])
def test_the_trainers_step_is_the_definition(head, soft):
    """One training step (closed-form Grad-CAM weights, projected ROIs) gives the loss and the parameter
    gradients of the definition: autograd Grad-CAM weights with create_graph, the map upsampled to the
    ROI, soft Dice averaged over the rows with an ROI (one row has none)."""
    from egal.train.trainer import _step, _TrainingRois

    config = small_config(head=head, augment=False, beta=0.5)
    images, masks, labels = lesion_arrays(12, 32, seed=5)
    if soft:
        masks = masks * np.random.default_rng(0).uniform(0.2, 1.0, masks.shape).astype(np.float32)
    masks[4] = 0
    x, m = torch.from_numpy(images), torch.from_numpy(masks)
    if head == "prototypical":
        support, query = np.array([0, 1, 2, 3, 6, 7]), np.array([4, 5, 8, 9, 10, 11])
        batch = (support, labels[support], query, labels[query])
    else:
        batch = np.arange(12)

    def gradients(model, loss):
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(0)
    model = build_model("tiny_cnn", head, CLASSES, input_size=(32, 32), in_channels=1,
                        embedding_dim=16 if head == "prototypical" else None).train()
    initial = state(model)
    parts = _step(model, None, x, _TrainingRois(m, 1, "cpu"), labels, batch, config, torch.Generator())
    step_grads = gradients(model, parts["loss"])

    model.load_state_dict(initial)
    model.zero_grad()
    if head == "prototypical":
        activations = model.feature_map(x[np.concatenate([support, query])])
        support_emb = model.head.embed(model.pool(activations[:len(support)]))
        sy = torch.from_numpy(labels[support])
        prototypes = torch.stack([support_emb[sy == c].mean(0) for c in range(int(sy.max()) + 1)])
        maps = activations[len(support):]
        query_emb = model.head.embed(model.pool(maps))  # the head's logits: 2 e.p - |p|^2
        logits = 2 * query_emb @ prototypes.T - (prototypes ** 2).sum(-1)
        targets, roi = torch.from_numpy(labels[query]), m[query]
    else:
        maps = model.feature_map(x)
        logits = model.head(model.pool(maps))
        targets, roi = torch.from_numpy(labels), m
    distance = soft_dice_distance(gradcam_of_class(maps, logits, targets), roi)
    has_roi = ~torch.isnan(distance)
    assert 0 < int(has_roi.sum()) < len(distance)
    loss = torch.nn.functional.cross_entropy(logits, targets) + 0.5 * distance[has_roi].mean()
    definition_grads = gradients(model, loss)

    torch.testing.assert_close(parts["loss"].detach(), loss.detach(), atol=1e-6, rtol=1e-5)
    assert step_grads.keys() == definition_grads.keys()
    for name, grad in definition_grads.items():
        torch.testing.assert_close(step_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_cached_views_use_the_mirrored_roi():
    from egal.train.trainer import _TrainingRois

    _, masks, _ = lesion_arrays(6, 32, seed=1)
    m = torch.from_numpy(masks)
    rois = _TrainingRois(m, 2, "cpu", chunk=4)  # chunks of 4 rows: the last one partial
    rows, view = np.array([5, 0, 3, 3]), torch.tensor([1, 0, 0, 1])
    weights, area = rois.of_views(rows, view, (4, 4))
    for i, (r, v) in enumerate(zip(rows, view.tolist(), strict=True)):
        expected = project_masks(m[r:r + 1].flip(-1) if v else m[r:r + 1], (4, 4))
        torch.testing.assert_close(weights[i], expected[0][0])
        torch.testing.assert_close(area[i], expected[1][0])


def test_the_dice_term_reaches_the_backbone_weights():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", "linear", CLASSES, input_size=(32, 32), in_channels=1).train()
    images, masks, labels = lesion_arrays(8, 32, seed=2)
    activations = model.feature_map(torch.from_numpy(images))
    weights = closed_form_weights(model, activations, None, torch.from_numpy(labels))
    roi = project_masks(torch.from_numpy(masks), activations.shape[2:])
    loss, rows = gradcam_dice_loss(activations, weights, *roi, (32, 32))
    loss.backward()
    grad = model.features.conv1.weight.grad
    assert rows == 8 and grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # The head's weights get a gradient only through the Grad-CAM channel weights.
    assert model.head.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("head", ["linear", "prototypical"])
def test_beta_changes_the_trained_weights_and_empty_rois_skip_the_dice_term(head):
    images, masks, labels = lesion_arrays(30, 32, seed=3)
    plain, _ = train_model(images, masks, labels, CLASSES, small_config(head=head, beta=0.0, epochs=1))
    guided, history = train_model(images, masks, labels, CLASSES, small_config(head=head, beta=1.0, epochs=1))
    assert not same_state(state(plain), state(guided))
    assert np.isfinite(history.epoch_dice).all()
    # With no ROI anywhere the Dice term is skipped: beta no longer matters.
    empty = np.zeros_like(masks)
    a, _ = train_model(images, empty, labels, CLASSES, small_config(head=head, beta=0.0, epochs=1))
    b, history = train_model(images, empty, labels, CLASSES, small_config(head=head, beta=1.0, epochs=1))
    assert same_state(state(a), state(b))
    assert np.isnan(history.epoch_dice).all()


def test_training_is_deterministic_given_the_seed():
    images, masks, labels = lesion_arrays(30, 32, seed=4)
    a, _ = train_model(images, masks, labels, CLASSES, small_config(seed=7))
    b, _ = train_model(images, masks, labels, CLASSES, small_config(seed=7))
    c, _ = train_model(images, masks, labels, CLASSES, small_config(seed=8))
    assert same_state(state(a), state(b))
    assert not same_state(state(a), state(c))


@pytest.mark.parametrize("head", ["linear", "prototypical"])
def test_the_history_counts_the_images_through_the_training_steps(head):
    from egal.train.episodes import episodes_per_epoch

    images, masks, labels = lesion_arrays(31, 32, seed=4)
    config = small_config(head=head, epochs=3, batch_size=10)
    _, history = train_model(images, masks, labels, CLASSES, config)
    if head == "prototypical":  # 3 classes x (3 support + 4 query) per episode
        expected = config.epochs * episodes_per_epoch(31, 3, config.k_shot, config.n_query) * 3 * 7
    else:  # batches of 10, 10, 10; the last batch of one is dropped
        expected = config.epochs * 30
    assert history.images == expected


@pytest.mark.parametrize("head", ["linear", "prototypical"])
def test_training_learns_the_lesion_classes_and_saves_a_loadable_model(head, tmp_path):
    images, masks, labels = lesion_arrays(150, 32, seed=5)
    test_images, _, test_labels = lesion_arrays(90, 32, seed=6)
    model, history = train_model(images, masks, labels, CLASSES, small_config(head=head, epochs=8, batch_size=16))
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(test_images)).argmax(1).numpy() == test_labels).mean()
    assert accuracy > 0.6, f"accuracy {accuracy:.2f} after training (chance 0.33)"
    assert history.epoch_loss[-1] < history.epoch_loss[0]
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.from_numpy(test_images)), model(torch.from_numpy(test_images)))


def test_augmentation_moves_image_and_roi_together_and_is_reproducible():
    _, masks, _ = lesion_arrays(6, 32, seed=7)
    images = torch.from_numpy(masks[:, None].astype(np.float32))  # the image *is* its ROI
    settings = AugmentSettings(hflip=True, vflip=True, rotate_degrees=30, scale=0.2, shift=0.1, brightness=0,
                               contrast=0)
    out_images, out_masks = augment_pair(images, torch.from_numpy(masks), torch.Generator().manual_seed(3), settings)
    torch.testing.assert_close(out_images[:, 0], out_masks)
    assert not torch.equal(out_masks, torch.from_numpy(masks).float())  # something did move
    again, _ = augment_pair(images, torch.from_numpy(masks), torch.Generator().manual_seed(3), settings)
    torch.testing.assert_close(again, out_images)
    assert out_masks.min() >= 0 and out_masks.max() <= 1


def test_episodes_draw_k_shot_support_and_disjoint_queries():
    labels = np.repeat([0, 1, 2], [10, 10, 4])
    e = sample_episode(labels, n_way=3, k_shot=5, n_query=3, rng=np.random.default_rng(0))
    assert not set(e.support) & set(e.query)
    for local, c in enumerate(e.classes):
        assert (labels[e.support[e.support_labels == local]] == c).all()
        assert (labels[e.query[e.query_labels == local]] == c).all()
    counts = {int(c): int((e.support_labels == i).sum()) for i, c in enumerate(e.classes)}
    assert counts == {0: 5, 1: 5, 2: 3}  # class 2 keeps one row for the query
    with pytest.raises(ValueError, match="at least 2 classes"):
        sample_episode(np.array([0, 0, 0, 1]), 3, 5, 3, np.random.default_rng(0))


def test_bad_training_input_is_refused():
    images, masks, labels = lesion_arrays(12, 32, seed=8)
    with pytest.raises(ValueError, match="no labelled rows"):
        train_model(images[:0], masks[:0], labels[:0], CLASSES, small_config())
    with pytest.raises(ValueError, match="class indices"):
        train_model(images, masks, labels + 5, CLASSES, small_config())
    with pytest.raises(ValueError, match="prototype"):
        train_model(images, masks, np.where(labels == 2, 0, labels), CLASSES, small_config())
    poisoned = images.copy()
    poisoned[7, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="1 training image\\(s\\) hold NaN or infinite values, first row 7"):
        train_model(poisoned, masks, labels, CLASSES, small_config())
    # A 0/255 mask: refused before training, by its row (it stopped training mid-way, named by its place in a batch,
    # and only without augmentation, which clamps).
    wide = masks.astype(np.uint8) * 255
    with pytest.raises(ValueError, match=r"12 training mask\(s\) hold values outside \[0, 1\] \(or NaN\), first row 0 "
                                         r"\(a 0/255 mask"):
        train_model(images, wide, labels, CLASSES, small_config())
    with pytest.raises(ValueError, match=r"images must hold pixel values in \[0, 1\].*8-bit pixels"):
        train_model(images * 255, masks, labels, CLASSES, small_config())
    with pytest.raises(TypeError, match="floating point in"):
        train_model((images * 255).astype(np.uint8), masks, labels, CLASSES, small_config())
    with pytest.raises(ValueError, match="beta"):
        small_config(beta=-1.0)
    with pytest.raises(ValueError, match="architecture"):
        small_config(architecture="vgg")


@pytest.mark.parametrize("setting", [{"channels_last": True}, {"precision": "bf16"}])
def test_channels_last_and_bfloat16_steps_match_float32(setting):
    """The GPU settings change how a step computes, not what: the same loss and gradients as float32 NCHW,
    exactly up to convolution rounding for channels_last, within bfloat16's precision for autocast."""
    from egal.train.trainer import _step, _TrainingRois

    images, masks, labels = lesion_arrays(12, 32, seed=6)
    x, m = torch.from_numpy(images), torch.from_numpy(masks)
    support, query = np.array([0, 1, 2, 3, 6, 7]), np.array([4, 5, 8, 9, 10, 11])
    batch = (support, labels[support], query, labels[query])
    results = {}
    for name, extra in (("fp32", {}), ("other", setting)):
        torch.manual_seed(0)
        model = build_model("tiny_cnn", "prototypical", CLASSES, input_size=(32, 32), in_channels=1,
                            embedding_dim=16).train()
        config = small_config(augment=False, **extra)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        parts = _step(model, None, x, _TrainingRois(m, 1, "cpu"), labels, batch, config, torch.Generator())
        parts["loss"].backward()
        results[name] = (float(parts["loss"].detach()), float(parts["dice"]),
                         {n: p.grad.clone() for n, p in model.named_parameters()})
    exact = "channels_last" in setting
    tol = 1e-5 if exact else 3e-2
    np.testing.assert_allclose(results["other"][:2], results["fp32"][:2], rtol=tol, atol=tol)
    for name, grad in results["fp32"][2].items():
        other = results["other"][2][name]
        assert other.dtype == torch.float32
        if exact:
            torch.testing.assert_close(other, grad, rtol=1e-4, atol=1e-6, msg=name)
        elif grad.norm() > 1e-6:  # the same direction: bfloat16 keeps 8 bits of mantissa
            assert float(torch.nn.functional.cosine_similarity(other.flatten(), grad.flatten(), dim=0)) > 0.95, name


def test_bfloat16_training_trains_and_the_settings_are_checked():
    images, masks, labels = lesion_arrays(30, 32, seed=3)
    model, history = train_model(images, masks, labels, CLASSES, small_config(precision="bf16", channels_last=True))
    assert np.isfinite(history.epoch_loss).all() and np.isfinite(history.epoch_dice).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: weights stay float32
    with pytest.raises(egal.errors.EgalError, match="precision must be one of"):
        small_config(precision="fp16")


@pytest.mark.parametrize("setting, message", [({"seed": -1}, "seed must be a non-negative integer"),
                                              ({"seed": 1.5}, "seed must be"),
                                              ({"device": "banana"}, "device must be cpu, cuda")])
def test_bad_seed_and_device_are_named(setting, message):
    with pytest.raises(egal.errors.EgalError, match=message):
        small_config(**setting)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_training_on_cuda_without_a_gpu_says_so():
    images, masks, labels = lesion_arrays(12, 32, seed=4)
    with pytest.raises(egal.errors.EgalError, match="PyTorch sees no CUDA GPU"):
        train_model(images, masks, labels, CLASSES, small_config(device="cuda"))


def test_training_that_diverges_or_cannot_step_is_refused_and_a_diverged_model_is_not_loaded(tmp_path):
    from egal.errors import EgalError
    from egal.models.checkpoint import ModelFileError

    images, masks, labels = lesion_arrays(36, 32, seed=2)
    with pytest.raises(EgalError, match=r"training diverged: a step of epoch \d has the loss nan \(lr 1e\+30 or beta "
                                        r"0.5 too high\?\); no model is kept"):
        train_model(images, masks, labels, CLASSES, small_config(lr=1e30, epochs=3))
    # One step in all: its loss is computed before its update, so only the model after it shows the divergence
    # (weights of 1e30 are finite, their logits NaN; the model was written and simulate failed in its AUC).
    with pytest.raises(EgalError, match=r"training diverged: after the last step, (the weights \S+|its logits on "
                                        r"training rows) are not finite \(lr 1e\+30 or beta 0.5 too high\?\)"):
        train_model(images[:8], masks[:8], labels[:8], CLASSES,
                    small_config(head="linear", batch_size=8, lr=1e30, epochs=1))
    # Within the only epoch: its mean over the finite steps would look fine, the weights are NaN all the same.
    with pytest.raises(EgalError, match=r"training diverged: a step of epoch 1 has the loss nan"):
        train_model(images, masks, labels, CLASSES, small_config(head="linear", batch_size=4, lr=1e20, epochs=1))
    with pytest.raises(EgalError, match=r"batch_size must be at least 2 for the linear head"):
        small_config(head="linear", batch_size=1)
    with pytest.raises(EgalError, match=r"input size 4x4 \(--input-size\) is too small for densenet121"):
        train_model(None, None, None, CLASSES, small_config(architecture="densenet121", input_size=(4, 4)))
    model = build_model("tiny_cnn", "linear", CLASSES, input_size=(32, 32))
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")  # as a diverged training leaves them
    save_model(model, tmp_path / "diverged.pt")
    with pytest.raises(ModelFileError, match=r"has weights that are not finite .* the training that made it diverged"):
        load_model(tmp_path / "diverged.pt")


def test_views_with_negative_strides_train_as_their_copies():
    # torch takes no numpy view such as images[::-1]: training raised torch's own "negative strides" error.
    images, masks, labels = lesion_arrays(12, 32, seed=8)
    config = small_config(epochs=1)
    viewed, _ = train_model(images[::-1], masks[::-1], labels[::-1], CLASSES, config)
    copied, _ = train_model(images[::-1].copy(), masks[::-1].copy(), labels[::-1].copy(), CLASSES, config)
    assert same_state(state(viewed), state(copied))
