"""One explanation-guided training step, the trainer's form against the definition's, in one pytest-benchmark run.

    python bench/bench_train_step.py            # both forms, then the table for bench/README.md
    python bench/bench_train_step.py --threads 2

The step of configs/figshare_pretrained_cpu.toml: EfficientNet-Lite0 (ImageNet weights) trained from
features.blocks.15 on cached prefix features (a 3-way 5-shot episode with 10 queries per class: 45 rows of
[192, 7, 7], each from a randomly chosen view, the image or its mirror), CE + 0.5 * soft Dice(Grad-CAM of
the true class, ROI) at 224 x 224, backward, Adam step.

  before       the trainer until 2026-11-26: the definition's form below on the EfficientNet-Lite code's
               own convolutions, which zero-pad with a separate ZeroPad2d before every depthwise convolution
  definition   Grad-CAM weights from torch.autograd.grad(..., create_graph=True), the map upsampled to
               224 x 224 with F.interpolate and compared with the (mirrored) mask: the form
               tests/test_train.py holds the trainer to, on egal's EfficientNet-Lite0, which pads inside
               each stride-1 convolution (egal.models.efficientnet_lite; the same output, bit for bit)
  trainer      egal.train.trainer._step: the head's closed-form d logit / d pooled as the channel weights
               (differentiable, no second backward graph) and the ROIs projected onto the 7 x 7 grid once
               per training (egal.reference.projected_dice_distance)

All three take the same gradient (tests/test_train.py::test_the_trainers_step_is_the_definition).
Then scoring 2,400 cached rows through the tail and the fused scorer in batches of 32 to 256 rows (what
`loop.score_batch_size` sets). Timer: CPU
time of this process (all its threads), so that other work on a shared machine counts less; the
ratio is the figure to read.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys

import numpy as np
import pytest

from _cpu_run import cpu_model, run_own_benchmarks

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch", reason="pip install 'egal-al[efficientnet]'")

import torch.nn.functional as F  # noqa: E402

from egal.models import build_model  # noqa: E402
from egal.models.split import freeze_prefix, split_features  # noqa: E402
from egal.train import FeatureCache, TrainConfig  # noqa: E402
from egal.train.feature_cache import prefix_fingerprint  # noqa: E402
from egal.train.losses import gradcam_of_class, soft_dice_distance  # noqa: E402
from egal.train.trainer import _step, _TrainingRois  # noqa: E402

CUT = "features.blocks.15"
ROWS = 45  # 3 classes x (5 support + 10 query)
SIZE = 224
ROUNDS = int(os.environ.get("EGAL_BENCH_ROUNDS", "10"))
FORMS = ("before", "definition", "trainer")
SCORE_BATCHES = (32, 64, 128, 256)
POOL_ROWS = 2400


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(int(os.environ.get("EGAL_BENCH_THREADS", "1")))
    config = TrainConfig(architecture="efficientnet_lite0", weights="imagenet", trainable_from=CUT,
                         input_size=(SIZE, SIZE), in_channels=1, embedding_dim=128, beta=0.5, augment=True)
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", "prototypical", ("a", "b", "c"), weights="imagenet",
                        input_size=(SIZE, SIZE), in_channels=1, embedding_dim=128)
    prefix, tail = split_features(model, CUT)
    model.train()
    freeze_prefix(prefix)
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(2, ROWS, 192, 7, 7, generator=gen).half()  # [views, N, K', h', w']
    cache = FeatureCache(features, ("identity", "hflip"), CUT, "0" * 32)
    masks = torch.zeros(ROWS, SIZE, SIZE, dtype=torch.uint8)  # one lesion-sized box per row
    for i in range(ROWS):
        y, x = (int(v) for v in torch.randint(20, 170, (2,), generator=gen))
        masks[i, y:y + 30, x:x + 34] = 1
    support = np.concatenate([np.arange(c * 15, c * 15 + 5) for c in range(3)])
    query = np.concatenate([np.arange(c * 15 + 5, c * 15 + 15) for c in range(3)])
    batch = (support, np.repeat(np.arange(3), 5), query, np.repeat(np.arange(3), 10))
    labels = np.repeat(np.arange(3), 15)
    return model, tail, cache, masks, labels, batch, config


def with_explicit_padding(model):
    """A copy of the model whose padded convolutions zero-pad with a ZeroPad2d first, as the model code does."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(getattr(module, "static_padding", None), torch.nn.Identity) and module.padding != (0, 0):
            top, left = module.padding
            module.static_padding = torch.nn.ZeroPad2d((left, left, top, top))
            module.padding = (0, 0)
    return model


def definition_step(model, tail, cache, masks, batch, config, generator):
    support, support_y, query, query_y = batch
    rows = np.concatenate([support, query])
    view = torch.randint(0, 2, (len(rows),), generator=generator)
    x = cache.features[view, torch.as_tensor(rows)].float()  # [B, K', h', w']
    m = masks[rows].float()
    m = torch.where((view == 1)[:, None, None], m.flip(-1), m)  # [B, H, W]
    activations = tail(x)
    n_support = len(support)
    support_emb = model.head.embed(model.pool(activations[:n_support]))
    sy = torch.as_tensor(support_y)
    prototypes = torch.zeros(3, support_emb.shape[1]).index_add(0, sy, support_emb) / torch.bincount(sy)[:, None]
    maps = activations[n_support:]
    logits = -((model.head.embed(model.pool(maps))[:, None] - prototypes[None]) ** 2).sum(-1)
    targets = torch.as_tensor(query_y)
    distance = soft_dice_distance(gradcam_of_class(maps, logits, targets), m[n_support:])
    return F.cross_entropy(logits, targets) + config.beta * distance.nanmean()


@pytest.mark.parametrize("form", FORMS)
def test_train_step(benchmark, setup, form):
    model, tail, cache, masks, labels, batch, config = setup
    if form == "before":
        model = with_explicit_padding(model)
        tail = split_features(model, CUT)[1]
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(2)
    rois = _TrainingRois(masks, 2, "cpu")

    def one_step():
        if form == "trainer":
            loss = _step(model, tail, cache, rois, labels, batch, config, generator)["loss"]
        else:
            loss = definition_step(model, tail, cache, masks, batch, config, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    one_step()  # the trainer projects the ROIs on its first step (once per training): not timed
    benchmark.group = f"{CUT}, {ROWS} rows, {SIZE} px, {torch.get_num_threads()} thread(s)"
    benchmark.extra_info.update(form=form, threads=torch.get_num_threads())
    benchmark.pedantic(one_step, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("batch_size", SCORE_BATCHES)
def test_score_pool_tail(benchmark, setup, batch_size):
    """What each simulation round does after training: the trainable tail's forward pass over the pool's
    cached features and the fused scorer (egal.loop.scoring.score_in_batches), by rows per batch."""
    from egal.loop.scoring import score_in_batches

    model, tail, _, _, _, _, _ = setup
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(1, POOL_ROWS, 192, 7, 7, generator=gen).half()  # the speed does not depend on them
    cache = FeatureCache(features, ("identity",), CUT, prefix_fingerprint(model, CUT))
    masks = np.zeros((POOL_ROWS, SIZE, SIZE), np.uint8)
    masks[:, 90:130, 80:120] = 1
    model.eval()
    model.head.set_prototypes(torch.randn(3, 128, generator=gen), torch.arange(3))
    benchmark.group = f"scoring {POOL_ROWS} cached rows, {torch.get_num_threads()} thread(s)"
    benchmark.extra_info.update(batch_size=batch_size)
    benchmark.pedantic(lambda: score_in_batches(model, None, masks, alpha=0.5, batch_size=batch_size, features=cache),
                       rounds=3, iterations=1)
    model.train()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    env = dict(os.environ, EGAL_BENCH_THREADS=str(args.threads))
    data = run_own_benchmarks(__file__, env=env)
    model = cpu_model()
    print(f"{datetime.date.today()}, {model}, {os.cpu_count()} CPUs, {args.threads} thread(s), Python "
          f"{platform.python_version()}, torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}")
    stats = {b["extra_info"]["form"]: b["stats"] for b in data["benchmarks"] if "form" in b["extra_info"]}
    print("| form | CPU ms per step, min | median | speed vs before (min) |\n| --- | ---: | ---: | ---: |")
    for form in FORMS:
        s = stats[form]
        print(f"| {form} | {s['min'] * 1e3:.0f} | {s['median'] * 1e3:.0f} | "
              f"{stats['before']['min'] / s['min']:.2f}x |")
    scoring = {b["extra_info"]["batch_size"]: b["stats"] for b in data["benchmarks"] if "batch_size" in b["extra_info"]}
    print(f"\n| rows per batch | CPU s to score {POOL_ROWS} cached rows, min | vs 256 |\n| ---: | ---: | ---: |")
    for batch_size in SCORE_BATCHES:
        best = scoring[batch_size]["min"]
        print(f"| {batch_size} | {best:.2f} | {scoring[256]['min'] / best:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
