"""An independent float64 implementation of docs/scoring.md, written from the page.

It materialises everything (the upsampled map, rasterised boxes) with plain
numpy and shares no code with egal, so every backend is compared against it.
"""
import numpy as np

DICE_EPS = 1e-6
NORM_EPS = 1e-7


def _axis(out_size, in_size):
    y = np.arange(out_size, dtype=np.float64)
    s = np.maximum((y + 0.5) * in_size / out_size - 0.5, 0.0)
    lo = np.floor(s).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, s - lo


def upsample_operator(out_size, in_size):
    """Step 5 along one axis as a dense [out_size, in_size] matrix: upsampling is R_y @ cam @ R_x.T."""
    lo, hi, t = _axis(out_size, in_size)
    R = np.zeros((out_size, in_size))
    np.add.at(R, (np.arange(out_size), lo), 1 - t)
    np.add.at(R, (np.arange(out_size), hi), t)
    return R


def upsample(cam, H, W):
    """[B, h, w] -> [B, H, W], bilinear, align_corners=False, per docs/scoring.md step 5."""
    h, w = cam.shape[1:]
    y0, y1, t = _axis(H, h)
    x0, x1, u = _axis(W, w)
    t = t[None, :, None]
    u = u[None, None, :]
    c00 = cam[:, y0][:, :, x0]
    c01 = cam[:, y0][:, :, x1]
    c10 = cam[:, y1][:, :, x0]
    c11 = cam[:, y1][:, :, x1]
    return (1 - t) * (1 - u) * c00 + (1 - t) * u * c01 + t * (1 - u) * c10 + t * u * c11


def rasterise(boxes, H, W):
    """[B, N, 4] boxes -> [B, H, W] masks: pixel centres inside the union."""
    boxes = np.asarray(boxes, dtype=np.float64)
    ys = np.arange(H) + 0.5
    xs = np.arange(W) + 0.5
    masks = np.zeros((boxes.shape[0], H, W))
    for b in range(boxes.shape[0]):
        for x0, y0, x1, y1 in boxes[b]:
            if np.isnan([x0, y0, x1, y1]).any() or x1 <= x0:
                continue
            inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
            masks[b][inside] = 1.0
    return masks


def steps(activations, logits, masks, gradients=None, weights=None, alpha=0.5):
    """Every intermediate of docs/scoring.md, as float64 arrays keyed by the page's names.

    channel_weights w [B, K] (step 2), raw = sum_k w_k A_k and relu = max(0, raw) [B, h, w]
    (step 3), lo / hi / cam (step 4), U [B, H, W] (step 5), I / SU / SM / misalignment
    (step 6), p / log_p / entropy / entropy_norm / pred (step 1), score (step 7).
    """
    A = np.asarray(activations, dtype=np.float64)
    Z = np.asarray(logits, dtype=np.float64)
    M = np.asarray(masks, dtype=np.float64)
    if weights is None:
        w = np.asarray(gradients, dtype=np.float64).mean(axis=(2, 3))
    else:
        w = np.asarray(weights, dtype=np.float64)
    raw = np.einsum("bk,bkij->bij", w, A)
    relu = np.maximum(0.0, raw)
    lo = relu.min(axis=(1, 2), keepdims=True)
    hi = relu.max(axis=(1, 2), keepdims=True)
    cam = (relu - lo) / (hi - lo + NORM_EPS)
    U = upsample(cam, M.shape[1], M.shape[2])
    inter = (U * M).sum(axis=(1, 2))
    su = U.sum(axis=(1, 2))
    sm = M.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(sm == 0, np.nan, 1 - (2 * inter + DICE_EPS) / (su + sm + DICE_EPS))
    zmax = Z.max(axis=1, keepdims=True)
    # shifted first: zmax + log(sum) loses log(sum) to rounding once |z| is above about 1e16
    log_p = (Z - zmax) - np.log(np.exp(Z - zmax).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    entropy = -np.where(p > 0, p * log_p, 0.0).sum(axis=1)
    entropy_norm = entropy / np.log(Z.shape[1])
    s = np.where(sm == 0, entropy_norm, alpha * entropy_norm + (1 - alpha) * dice)
    return dict(channel_weights=w, raw=raw, relu=relu, lo=lo[:, 0, 0], hi=hi[:, 0, 0], cam=cam, U=U, I=inter, SU=su,
                SM=sm, misalignment=dice, p=p, log_p=log_p, entropy=entropy, entropy_norm=entropy_norm,
                pred=Z.argmax(axis=1), score=s)


def score(activations, logits, masks, gradients=None, weights=None, alpha=0.5):
    """Returns a dict of float64 arrays: pred, entropy, entropy_norm, misalignment, score, cam."""
    out = steps(activations, logits, masks, gradients=gradients, weights=weights, alpha=alpha)
    return {name: out[name] for name in ("pred", "entropy", "entropy_norm", "misalignment", "score", "cam")}
