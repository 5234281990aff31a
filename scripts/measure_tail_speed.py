"""Training speed of EfficientNet-Lite0's trainable tail for each cut, on cached prefix features.

One prototypical episode (45 rows: 3-way, 5-shot, 10 queries) at 224 x 224 grey: forward, CE +
0.5 * Grad-CAM soft Dice (the trainer's form: closed-form channel weights, ROI projected
once), Adam step; then an inference forward of the
tail. Prints images per second per cut: the cost side of choosing `trainable_from`.

    python scripts/measure_tail_speed.py --threads 2
"""
import argparse
import time

import torch
import torch.nn.functional as F

from egal.models import build_model
from egal.models.split import split_features
from egal.train.losses import gradcam_dice_loss, project_masks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cuts", default="features.blocks.11,features.blocks.13,features.blocks.15,features.head")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model("efficientnet_lite0", "prototypical", ("a", "b", "c"), weights="imagenet",
                        input_size=(args.size, args.size), in_channels=1, embedding_dim=128)
    x = torch.rand(45, 1, args.size, args.size)
    masks = (torch.rand(45, args.size, args.size) > 0.9).float()
    y = torch.arange(45) // 15
    for cut in args.cuts.split(","):
        prefix, tail = split_features(model, cut)
        with torch.no_grad():
            z = prefix.eval()(x)
        tail.train()
        optimiser = torch.optim.Adam(list(tail.parameters()) + list(model.head.parameters()), 1e-3)
        times, roi = [], None
        for _ in range(4):
            start = time.perf_counter()
            maps = tail(z)  # [45, K, h, w]
            emb = model.head.embed(model.pool(maps))
            prototypes = emb[:15].reshape(3, 5, -1).mean(1)
            logits = model.head.logits_against(emb, prototypes)
            h, w = maps.shape[2:]
            if roi is None:  # projected once, as the trainer does
                roi = project_masks(masks, (h, w))
            weights = model.head.logit_gradient_against(emb, prototypes, y) / (h * w)
            dice, _ = gradcam_dice_loss(maps, weights, *roi, tuple(masks.shape[1:]))
            (F.cross_entropy(logits, y) + 0.5 * dice).backward()
            optimiser.step()
            optimiser.zero_grad()
            times.append(time.perf_counter() - start)
        with torch.no_grad():
            tail.eval()
            start = time.perf_counter()
            tail(z)
            forward = time.perf_counter() - start
        print(f"{cut:22s} cached input {tuple(z.shape[1:])}: train {45 / min(times[1:]):6.0f} img/s, "
              f"tail forward {45 / forward:6.0f} img/s")


if __name__ == "__main__":
    main()
