"""`egal demo --out DIR`: egal end to end on a built-in synthetic pool, without data or downloads.

1. writes DIR/pool.parquet, a synthetic lesion pool in egal's pool format (egal.demo_data.make_synthetic_pool):
   grey "scans" whose lesion shape gives the class, expert ROIs (masks or boxes, some left
   out), a labelled seed share, and a corner marker that correlates with one class, a
   shortcut a classifier can be right with for the wrong reason;
2. trains a tiny CNN with a prototypical head on the labelled rows (about 25 s on a 2-core CPU),
   DIR/model.pt, and exports DIR/model.onnx where the exporter is installed;
3. runs `egal score` on the pool and shows what EG-AL selects next to entropy alone.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from .._checks import check_alpha, check_int
from ..errors import EgalError
from ..pipeline.options import DEFAULTS as SCORE_DEFAULTS
from ..selection.csv_file import selection_path_for
from ._flags import add_quiet

DEFAULT_OUT = "egal-demo"
# What the demo writes into --out (the ONNX export also leaves its cached copy, model.pt.KEY.onnx).
DEMO_FILES = ("pool.parquet", "model.pt", "model.onnx", "scores.parquet", "scores.selection.csv")


def register(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="run egal end to end on a built-in synthetic pool (no data or download needed)",
        description="Generate a synthetic lesion pool (DIR/pool.parquet), train a tiny model on its labelled seed rows "
        "(DIR/model.pt, about 25 s on a 2-core CPU; DIR/model.onnx when the ONNX exporter is installed), then run "
        "`egal score` on the pool (DIR/scores.parquet, DIR/scores.selection.csv) and compare EG-AL's selection with "
        "entropy alone. The pool hides a shortcut: a corner marker that often comes with one class. A model can "
        "be right by looking at it, and EG-AL should pick such images because their Grad-CAM misses the lesion.",
        epilog="example: egal demo --out egal-demo && egal score --pool egal-demo/pool.parquet "
        "--model egal-demo/model.onnx --alpha 0.2 --select 20 --out egal-demo/alpha02.parquet",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--images", type=int, default=600, help="pool size (default: %(default)s)")
    parser.add_argument("--labelled", type=float, default=0.3,
                        help="share of the pool's rows that come labelled, the seed set (default: %(default)s)")
    parser.add_argument("--roi", choices=("mask", "boxes"), default="mask", help="how the pool gives ROIs (default: "
                        "%(default)s)")
    parser.add_argument("--epochs", type=int, default=60,
                        help="training epochs (default: %(default)s, a first-round seed model that still leans on the "
                        "shortcut; about 200 learn the lesions)")
    parser.add_argument("--beta", type=float, default=0.0,
                        help="weight of the Grad-CAM/ROI Dice loss in training (default: %(default)s, plain training: "
                        "the seed model of a first active-learning round)")
    parser.add_argument("--select", type=int, default=30, metavar="K", help="how many to select (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=SCORE_DEFAULTS["alpha"],
                        help="entropy weight of the score, as egal score's (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the pool and the training (default: "
                        "%(default)s)")
    parser.add_argument("--scorer-only", action="store_true",
                        help="instead: score one synthetic DenseNet-121-sized batch of Grad-CAM inputs with the fused "
                        "scorer and the PyTorch reference (no training)")
    parser.add_argument("--samples", type=int, default=256, help="batch size for --scorer-only (default: %(default)s)")
    add_quiet(parser, "no training or scoring progress, only the steps and results")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace the demo's files ({', '.join(DEMO_FILES)}) where --out already holds them")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.scorer_only:
        from . import demo_scorer

        return demo_scorer.run(args)
    _check(args)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise EgalError("egal demo trains a model and needs PyTorch: pip install 'egal-al[torch]' "
                        "(or run `egal demo --scorer-only`)") from None
    _prepare_out(args.out, args.overwrite)
    pool = _make_pool(args)
    model_path, onnx_path = _train(args, pool)
    return _score(args, pool, model_path, onnx_path)


def _prepare_out(out: str, overwrite: bool) -> None:
    """The demo's folder, made if missing (its parent must exist, and the folder must take files); files of the
    user's that the demo would replace are refused unless --overwrite."""
    from .._paths import check_writable

    if not out.strip():
        raise EgalError("--out is empty: name the folder for the demo's files")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise EgalError(f"--out {out!r}: its folder {parent!r} does not exist")
    if os.path.exists(out) and not os.path.isdir(out):
        raise EgalError(f"--out {out!r} is a file: name a folder for the demo's files")
    check_writable(out, "--out", inside=True)
    present = [name for name in DEMO_FILES if os.path.exists(os.path.join(out, name))]
    if present and not overwrite:
        raise EgalError(f"--out {out!r} already holds {', '.join(present)}: pass --overwrite to replace them, or "
                        "choose another folder")
    os.makedirs(out, exist_ok=True)


def _check(args) -> None:
    check_int(args.images, "--images", minimum=30)
    if not 0.0 < args.labelled < 1.0:  # (at 1 every row comes labelled: nothing is left to select)
        raise EgalError(f"--labelled must lie in (0, 1), a share that leaves rows to select, got {args.labelled}")
    check_int(args.epochs, "--epochs")
    check_alpha(args.alpha, "--alpha")
    check_int(args.select, "--select")
    if args.select >= args.images:
        raise EgalError(f"--select {args.select} must be smaller than the pool (--images {args.images}): choosing "
                        "every scan shows nothing")


def _step(text: str) -> None:
    print(text, flush=True)


def _make_pool(args) -> str:
    from ..demo_data import make_synthetic_pool

    start = time.perf_counter()
    pool = str(make_synthetic_pool(args.out, n=args.images, seed=args.seed, image_size=128, roi=args.roi,
                                   label_fraction=args.labelled))
    _step(f"[1/3] wrote {pool}: {args.images} grey 128x128 PNG scans, ROI as {args.roi}s (some lesions left without "
          f"ROI, 'normal' scans have none), {args.labelled:.0%} of the pool split labelled "
          f"({time.perf_counter() - start:.1f} s)")
    return pool


def _train(args, pool: str):
    from ..progress import Progress
    from ..train import TrainConfig, train_pool

    config = TrainConfig(architecture="tiny_cnn", head="prototypical", input_size=(128, 128), in_channels=1,
                         epochs=args.epochs, beta=args.beta, seed=args.seed)
    model_path = os.path.join(args.out, "model.pt")
    start = time.perf_counter()
    # Progress as `egal train` shows it, thinned: a bar on a terminal, else a line every tenth of the epochs.
    progress = Progress(args.epochs, enabled=not args.quiet, desc="training epochs", unit="epoch")
    progress.log(f"[2/3] training tiny_cnn + prototypical head on the labelled pool rows, {args.epochs} epochs")
    every = max(1, args.epochs // 10)

    def on_epoch(epoch, summary):
        progress.advance(1, f"loss {summary['loss']:.3f}")
        if progress.bar is None and ((epoch + 1) % every == 0 or epoch + 1 == args.epochs):
            progress.log(f"epoch {epoch + 1}/{args.epochs}: loss {summary['loss']:.4f}")

    try:
        # What `egal train --exclude split=test` does: the labelled pool rows, the test split left out; the
        # demo's files were refused without --overwrite (_prepare_out), so replacing them is meant.
        result = train_pool(pool, model_path, config, exclude=[("split", "test")], overwrite=True, progress=on_epoch)
    finally:
        progress.close()
    _step(f"[2/3] trained tiny_cnn + prototypical head on the {result.rows} labelled pool rows "
          f"(cross-entropy{f' + {args.beta} x Grad-CAM Dice' if args.beta else ''}, {args.epochs} epochs, "
          f"{time.perf_counter() - start:.0f} s) -> {model_path}")
    onnx_path = os.path.join(args.out, "model.onnx")
    try:
        from ..onnx import export_onnx

        export_onnx(result.model, onnx_path, overwrite=True)
        _step(f"      exported {onnx_path} (scores on onnxruntime, without PyTorch: egal score --model {onnx_path})")
    except ImportError as exc:
        onnx_path = None
        _step(f"      no ONNX export ({exc}); pip install 'egal-al[export]' for model.onnx")
    return model_path, onnx_path


def _score(args, pool: str, model_path: str, onnx_path) -> int:
    import pyarrow.parquet as pq

    import egal

    from .score import print_summary

    out = os.path.join(args.out, "scores.parquet")
    command = ["score", "--pool", pool, "--model", model_path, "--out", out, "--select", str(args.select),
               "--alpha", str(args.alpha), "--overwrite"] + (["--quiet"] if args.quiet else [])
    _step(f"[3/3] egal {' '.join(command)}")  # what the call below does, as a command to rerun
    result = egal.score_pool(pool, model_path, out=out, select=args.select, alpha=args.alpha, overwrite=True,
                             progress=not args.quiet)
    print_summary(result)
    if result.rows_scored == 0:
        print(f"egal demo: error: none of the {result.rows} rows could be scored (the reasons are in the error "
              f"column of {out})", file=sys.stderr)
        return 1
    scores = result.table.to_pydict()
    pool_table = pq.read_table(pool, columns=["id", "shortcut"]).to_pydict()
    marked = np.array([dict(zip(pool_table["id"], pool_table["shortcut"], strict=True))[i] for i in scores["id"]],
                      dtype=bool)
    ids = np.array(scores["id"])
    column = lambda name: np.array([np.nan if v is None else v for v in scores[name]])  # noqa: E731
    entropy, misalignment = column("entropy_norm"), column("misalignment")
    print(f"\nThe {marked.sum()} scans with the corner marker (the shortcut) against the {(~marked).sum()} without:")
    print(f"  mean entropy_norm  {np.nanmean(entropy[marked]):.3f} vs {np.nanmean(entropy[~marked]):.3f}   "
          "(low: predicted confidently)")
    print(f"  mean misalignment  {np.nanmean(misalignment[marked]):.3f} vs {np.nanmean(misalignment[~marked]):.3f}   "
          "(high: Grad-CAM away from the lesion)")
    ok = np.array([status == "ok" for status in scores["status"]])
    ranked = egal.combine_scores(entropy, misalignment, args.alpha, "rank", valid=ok)  # as egal score ranks
    unlabelled = ok & ~np.array(scores["labelled"])  # what a selection chooses among: the rows to annotate
    picked = {name: int(marked[np.isin(ids, egal.select_top_k(np.where(unlabelled, values, np.nan), ids,
                                                                  args.select))].sum())
              for name, values in (("EG-AL", column("score")), ("EG-AL --combine rank", ranked),
                                   ("entropy alone", entropy), ("misalignment alone", misalignment))}
    print(f"Marker scans among the {args.select} selected: " + ", ".join(f"{v} by {k}" for k, v in picked.items())
          + f" (alpha={args.alpha}; misalignment varies less than entropy, so the raw mix leans on entropy: "
          "--combine rank mixes their ranks, a lower --alpha weighs attention more).")
    print(f"Files: {pool}, {model_path}{', ' + onnx_path if onnx_path else ''}, {out}, "
          + selection_path_for(out))
    return 0
