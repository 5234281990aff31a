"""Grad-CAM scoring of one batch: egal's backward-free path, egal's autograd path, and
pytorch-grad-cam's GradCAM followed by a numpy Dice, on the same model, images and masks.

Run: python bench/report_gradcam.py  (runs this file under pytest-benchmark and
prints the table with ratios), or directly:
    python -m pytest bench/bench_gradcam.py --benchmark-only

All three produce the full EG-AL score (entropy and soft-Dice misalignment) for
every image of the batch. The ImageNet weights are not needed for timing, so
the models are randomly initialised (nothing is downloaded).
"""
import numpy as np
import pytest
import torch

from egal.gradcam import score_images
from egal.models import build_model

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam", reason="pip install 'egal[bench]'")

MODELS = [("densenet121", "prototypical"), ("resnet18", "linear")]
BATCH = 16
SIZE = 224
ALPHA = 0.5
DICE_EPS = 1e-6
IMPLS = ["egal-closed-form", "egal-autograd", "pytorch-grad-cam+numpy"]


def _model(architecture, head):
    torch.manual_seed(0)
    model = build_model(architecture, head, ["normal", "effusion", "nodule"], input_size=(SIZE, SIZE))
    if head == "prototypical":
        model.fit_prototypes(torch.rand(6, 3, SIZE, SIZE), torch.tensor([0, 1, 2, 0, 1, 2]))
    return model.eval()


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.random((BATCH, 3, SIZE, SIZE), dtype=np.float32))
    masks = np.zeros((BATCH, SIZE, SIZE), dtype=np.uint8)  # one lesion-sized region each
    for b in range(BATCH):
        y, x = rng.integers(0, SIZE - 64, size=2)
        masks[b, y:y + 56, x:x + 64] = 1
    return images, masks


def grad_cam_then_numpy_dice(cam, images, masks_f32):
    """What one writes with pytorch-grad-cam: upsampled maps on the host, then Dice and entropy in numpy."""
    maps = cam(input_tensor=images, targets=None)  # [B, H, W], min-max normalised, predicted class
    logits = cam.outputs.detach().numpy()  # [B, C], kept by pytorch-grad-cam from its forward pass
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    entropy_norm = -(np.exp(log_p) * log_p).sum(axis=1) / np.log(logits.shape[1])
    inter = (maps * masks_f32).sum(axis=(1, 2))
    dice = 1 - (2 * inter + DICE_EPS) / (maps.sum(axis=(1, 2)) + masks_f32.sum(axis=(1, 2)) + DICE_EPS)
    return ALPHA * entropy_norm + (1 - ALPHA) * dice


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: f"{m[0]}-{m[1]}")
def setup(request):
    model = _model(*request.param)
    images, masks = _batch()
    # Scores of every implementation on this batch, to report how far apart they are
    # (pytorch-grad-cam upsamples with OpenCV, egal with PyTorch's bilinear rule).
    reference = score_images(model, images, masks, alpha=ALPHA, method="autograd").score
    return request.param, model, images, masks, reference


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcam_scoring(benchmark, setup, impl):
    (architecture, head), model, images, masks, reference = setup
    benchmark.group = f"{architecture}-{head} B={BATCH} {SIZE}x{SIZE}"
    benchmark.extra_info.update(impl=impl, architecture=architecture, head=head, batch=BATCH, size=SIZE,
                                threads=torch.get_num_threads())
    if impl == "pytorch-grad-cam+numpy":
        masks_f32 = masks.astype(np.float32)
        layer = dict(model.named_modules())[model.config.target_layer]
        with pytorch_grad_cam.GradCAM(model=model, target_layers=[layer]) as cam:
            scores = benchmark.pedantic(grad_cam_then_numpy_dice, args=(cam, images, masks_f32),
                                        rounds=7, iterations=1, warmup_rounds=2)
    else:
        method = "closed_form" if impl == "egal-closed-form" else "autograd"
        scores = benchmark.pedantic(lambda: score_images(model, images, masks, alpha=ALPHA, method=method).score,
                                    rounds=7, iterations=1, warmup_rounds=2)
    benchmark.extra_info["max_abs_score_diff_vs_egal_autograd"] = float(np.abs(np.asarray(scores) - reference).max())
