"""Frozen prefix + feature cache: the cached path equals the full model, training touches only the tail,
and a model trained this way saves, exports and scores like any other."""
import numpy as np
import pytest
import torch

import egal
from egal.gradcam import extract_gradcam_inputs
from egal.loop.scoring import score_in_batches
from egal.models import build_model, load_model, save_model
from egal.models.split import cut_points, split_features
from egal.train import FeatureCache, TrainConfig, build_feature_cache, train_model
from egal.train.trainer import new_model
from lesion_data import CLASSES, lesion_arrays

torch.set_num_threads(1)
CUT = "features.conv3"


def config(**kw):
    base = dict(architecture="tiny_cnn", head="prototypical", input_size=(32, 32), in_channels=1, embedding_dim=16,
                epochs=2, lr=3e-3, beta=0.5, k_shot=3, n_query=4, seed=0, trainable_from=CUT)
    base.update(kw)
    return TrainConfig(**base)


def trained(n=36, **kw):
    images, masks, labels = lesion_arrays(n, 32, seed=3)
    model, _ = train_model(images, masks, labels, CLASSES, config(**kw))
    return model, images, masks, labels


def test_prefix_then_tail_is_the_backbone():
    model = build_model("tiny_cnn", "prototypical", CLASSES, input_size=(32, 32), in_channels=1, embedding_dim=8).eval()
    x = torch.rand(4, 1, 32, 32)
    for cut in cut_points(model):
        prefix, tail = split_features(model, cut)
        with torch.no_grad():
            assert torch.equal(tail(prefix(x)), model.feature_map(x)), cut


def test_bad_cut_names_say_what_exists():
    model = build_model("tiny_cnn", "prototypical", CLASSES, input_size=(32, 32), in_channels=1, embedding_dim=8)
    with pytest.raises(ValueError, match="features.conv2"):
        split_features(model, "features.conv9")
    with pytest.raises(ValueError, match="nothing would be frozen"):
        split_features(model, "features.conv1")
    with pytest.raises(ValueError, match="trainable_from"):
        TrainConfig(trainable_from="blocks.3")


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2)])
def test_cached_scores_equal_the_full_model(dtype, tol):
    model, images, masks, labels = trained()
    cache = build_feature_cache(model, images, CUT, dtype=dtype)
    full = score_in_batches(model, images, masks, alpha=0.5, batch_size=16)
    cached = score_in_batches(model, None, masks, alpha=0.5, batch_size=16, features=cache)
    for name in ("score", "entropy_norm", "misalignment", "probs"):
        np.testing.assert_allclose(getattr(cached, name), getattr(full, name), atol=tol, rtol=tol, err_msg=name)
    if dtype == torch.float32:
        np.testing.assert_array_equal(cached.pred, full.pred)
        logits_full = extract_gradcam_inputs(model, torch.from_numpy(images)).logits
        _, tail = split_features(model, CUT)
        with torch.no_grad():
            logits_cached = model.head(model.pool(tail(cache.identity().float())))
        torch.testing.assert_close(logits_cached, logits_full, atol=1e-5, rtol=1e-5)


def test_mirror_view_is_the_mirrored_image():
    model = new_model(config(), CLASSES).eval()
    images, _, _ = lesion_arrays(6, 32, seed=1)
    cache = build_feature_cache(model, images, CUT, dtype=torch.float32)
    prefix, _ = split_features(model, CUT)
    with torch.no_grad():
        assert torch.equal(cache.features[1], prefix(torch.from_numpy(images).flip(-1)))
    assert cache.views == ("identity", "hflip")


def test_training_moves_only_the_tail_and_the_dice_term_matters():
    images, masks, labels = lesion_arrays(36, 32, seed=3)
    initial = {k: v.clone() for k, v in new_model(config(), CLASSES).state_dict().items()}
    model, history = train_model(images, masks, labels, CLASSES, config())
    after = model.state_dict()
    frozen = [k for k in initial if k.startswith(("features.conv1", "features.norm1", "features.conv2",
                                                  "features.norm2"))]
    trainable = [k for k in initial if k.startswith(("features.conv3", "head.embedding"))]
    assert frozen and trainable
    assert all(torch.equal(initial[k], after[k]) for k in frozen)  # BatchNorm statistics included
    assert all(not torch.equal(initial[k], after[k]) for k in trainable if "num_batches" not in k)
    assert not np.isnan(history.epoch_dice).all()
    plain, _ = train_model(images, masks, labels, CLASSES, config(beta=0.0))
    assert not torch.equal(plain.state_dict()["features.conv3.weight"], after["features.conv3.weight"])


def test_a_given_cache_trains_exactly_like_one_built_inside():
    images, masks, labels = lesion_arrays(30, 32, seed=4)
    a, _ = train_model(images, masks, labels, CLASSES, config())
    cache = build_feature_cache(new_model(config(), CLASSES), images, CUT)
    b, _ = train_model(None, masks, labels, CLASSES, config(), features=cache)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_a_cache_from_another_prefix_is_refused():
    images, masks, labels = lesion_arrays(24, 32, seed=4)
    cache = build_feature_cache(new_model(config(), CLASSES), images, CUT)
    other = FeatureCache(cache.features, cache.views, cache.trainable_from, "0" * 32)
    with pytest.raises(ValueError, match="another frozen prefix"):
        train_model(None, masks, labels, CLASSES, config(), features=other)
    with pytest.raises(ValueError, match="nothing is frozen"):
        train_model(images, masks, labels, CLASSES, config(trainable_from=None), features=cache)


def test_a_cache_with_non_finite_features_is_refused_naming_the_row():
    images, masks, labels = lesion_arrays(24, 32, seed=4)
    cache = build_feature_cache(new_model(config(), CLASSES), images, CUT)
    poisoned = FeatureCache(cache.features.clone(), cache.views, cache.trainable_from, cache.fingerprint)
    poisoned.features[1, 9, 0, 0, 0] = float("inf")  # the mirrored view of row 9: float16 overflow
    poisoned.features[0, 13, 2, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"2 training row\(s\) have NaN or infinite cached features, first row 9: "
                       r".*overflow the cache's float16 \(build it with dtype=torch.float32\)"):
        train_model(None, masks, labels, CLASSES, config(), features=poisoned)


def test_disk_cache_reuses_rows_it_has_seen(tmp_path):
    model = new_model(config(), CLASSES)
    images, _, _ = lesion_arrays(20, 32, seed=5)
    calls = []
    first = build_feature_cache(model, images, CUT, cache_dir=str(tmp_path), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (40, 40)  # 20 images x 2 views computed
    calls.clear()
    changed = images.copy()
    changed[3] += 0.1
    second = build_feature_cache(model, changed, CUT, cache_dir=str(tmp_path),
                                 progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]  # only the changed image, in both views
    unchanged = np.delete(np.arange(20), 3)
    assert torch.equal(first.features[:, unchanged], second.features[:, unchanged])
    assert not torch.equal(first.features[:, 3], second.features[:, 3])


def test_a_model_trained_on_cached_features_saves_exports_and_scores(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from egal.onnx import OnnxGradCAM, export_onnx

    model, images, masks, labels = trained()
    assert model.config.extra["trainable_from"] == CUT
    path = tmp_path / "model.pt"
    save_model(model, path)
    loaded = load_model(path)
    expected = egal.gradcam.score_images(model, torch.from_numpy(images[:8]), masks[:8])
    again = egal.gradcam.score_images(loaded, torch.from_numpy(images[:8]), masks[:8])
    np.testing.assert_array_equal(again.score, expected.score)
    onnx_path = export_onnx(loaded, tmp_path / "model.onnx")
    onnx_scores = OnnxGradCAM(onnx_path).score(images[:8], masks[:8])
    np.testing.assert_allclose(onnx_scores.score, expected.score, atol=1e-5)
