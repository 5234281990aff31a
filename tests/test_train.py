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
    gradcam_of_class,
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


def test_dice_of_an_empty_roi_is_nan_and_skipped():
    cam = torch.rand(3, 4, 4)
    masks = torch.zeros(3, 16, 16)
    masks[1, 2:6, 2:6] = 1
    d = soft_dice_distance(cam, masks)
    assert torch.isnan(d[0]) and torch.isnan(d[2]) and torch.isfinite(d[1])
    activations = torch.rand(3, 5, 4, 4, requires_grad=True)
    logits = activations.mean((2, 3)) @ torch.randn(5, 3)
    loss, rows = gradcam_dice_loss(activations, logits, torch.tensor([0, 1, 2]), masks)
    assert rows == 1 and torch.isfinite(loss)
    loss, rows = gradcam_dice_loss(activations, logits, torch.tensor([0, 1, 2]), torch.zeros(3, 16, 16))
    assert rows == 0 and float(loss.detach()) == 0.0


def test_the_dice_term_reaches_the_backbone_weights():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", "linear", CLASSES, input_size=(32, 32), in_channels=1).train()
    images, masks, labels = lesion_arrays(8, 32, seed=2)
    activations = model.feature_map(torch.from_numpy(images))
    logits = model.head(model.pool(activations))
    loss, rows = gradcam_dice_loss(activations, logits, torch.from_numpy(labels), torch.from_numpy(masks))
    loss.backward()
    grad = model.features.conv1.weight.grad
    assert rows == 8 and grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # The head's weights get a gradient only through the Grad-CAM channel weights (create_graph).
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
    with pytest.raises(ValueError, match="beta"):
        small_config(beta=-1.0)
    with pytest.raises(ValueError, match="architecture"):
        small_config(architecture="vgg")
