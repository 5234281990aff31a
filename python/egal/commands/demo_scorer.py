"""`egal demo --scorer-only`: the fused scorer on a built-in synthetic batch, no model needed.

It builds Grad-CAM inputs whose attention either covers the lesion or sits
elsewhere, with confident or uncertain predictions, and shows that EG-AL picks
the confidently-right-for-the-wrong-reason cases that entropy alone misses.
"""
import time

import numpy as np

KINDS = ("confident-aligned", "confident-misaligned", "uncertain-aligned", "uncertain-misaligned")


def synthetic_batch(n, seed, K=1024, h=7, w=7, H=224, W=224, classes=3):
    """Inputs with a known kind per sample: attention on or off the lesion, sharp or flat logits."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, len(KINDS), n)
    masks = np.zeros((n, H, W), dtype=np.uint8)
    activations = np.abs(rng.standard_normal((n, K, h, w), dtype=np.float32)) * 0.1
    weights = np.full((n, K), 1.0 / K, dtype=np.float32)
    logits = np.zeros((n, classes), dtype=np.float32)
    cell = H // h
    for b, kind in enumerate(kinds):
        ly, lx = rng.integers(1, h - 2, 2)  # lesion position on the 7x7 grid
        masks[b, ly * cell : (ly + 2) * cell, lx * cell : (lx + 2) * cell] = 1
        aligned = kind in (0, 2)
        ay, ax = (ly, lx) if aligned else ((ly + 4) % (h - 1), (lx + 4) % (w - 1))
        activations[b, :, ay : ay + 2, ax : ax + 2] += 1.0  # where the model "looks"
        logits[b] = rng.standard_normal(classes) * 0.2
        logits[b, rng.integers(classes)] += 6.0 if kind in (0, 1) else 0.3
    return dict(activations=activations, weights=weights, logits=logits, masks=masks), kinds


def run(args) -> int:
    """args: samples, select, alpha, seed."""
    import egal

    from .._checks import check_int
    from ..errors import EgalError

    check_int(args.samples, "--samples")
    check_int(args.select, "--select")
    if args.select >= args.samples:  # both would pick every sample: the comparison would show nothing
        raise EgalError(f"--select {args.select} must be smaller than --samples {args.samples}: choosing every sample, "
                        "EG-AL and entropy alone pick the same batch; lower --select or raise --samples")
    batch, kinds = synthetic_batch(args.samples, args.seed)
    start = time.perf_counter()
    result = egal.score_batch(batch["activations"], batch["logits"], batch["masks"], weights=batch["weights"],
                              alpha=args.alpha)
    fused_s = time.perf_counter() - start
    print(f"Scored {args.samples} samples (K=1024, 7x7 maps, 224x224 masks) with the fused CPU scorer "
          f"in {fused_s * 1e3:.1f} ms.")
    if egal.backends()["reference"]["available"]:
        # warm up PyTorch (import, thread pool) so the timing below is the scoring alone
        egal.score_batch(batch["activations"][:2], batch["logits"][:2], batch["masks"][:2],
                         weights=batch["weights"][:2], backend="reference")
        start = time.perf_counter()
        ref = egal.score_batch(batch["activations"], batch["logits"], batch["masks"], weights=batch["weights"],
                               alpha=args.alpha, backend="reference")
        ref_s = time.perf_counter() - start
        gap = float(np.nanmax(np.abs(ref.score - result.score)))
        print(f"PyTorch reference: {ref_s * 1e3:.1f} ms; largest score difference {gap:.2e}.")
    ids = np.array([f"sample_{i:04d}" for i in range(args.samples)])
    chosen = egal.select_top_k(result.score, ids, args.select)
    by_entropy = egal.select_top_k(result.entropy_norm, ids, args.select)
    index = {name: i for i, name in enumerate(ids)}
    print(f"\nEG-AL (alpha={args.alpha}) selects {len(chosen)}; the first ten:")
    print(f"  {'id':<12} {'kind':<22} {'entropy_norm':>12} {'misalignment':>12} {'score':>7}")
    for name in chosen[:10]:
        i = index[name]
        print(f"  {name:<12} {KINDS[kinds[i]]:<22} {result.entropy_norm[i]:>12.3f} "
              f"{result.misalignment[i]:>12.3f} {result.score[i]:>7.3f}")
    for label, picked in (("EG-AL", chosen), ("entropy only", by_entropy)):
        counts = {k: sum(KINDS[kinds[index[n]]] == k for n in picked) for k in KINDS}
        print(f"{label:>13}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    confident_wrong_reason = sum(KINDS[kinds[index[n]]] == "confident-misaligned" for n in chosen)
    print(f"\nAmong the {len(chosen)} selected, confident-but-misaligned samples (right for the wrong reason, "
          f"invisible to entropy): EG-AL {confident_wrong_reason}, entropy only "
          f"{sum(KINDS[kinds[index[n]]] == 'confident-misaligned' for n in by_entropy)}. "
          "Lower --alpha to weigh attention more.")
    return 0
