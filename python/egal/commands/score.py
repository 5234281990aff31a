"""`egal score`: rank an unlabeled pool by what is worth annotating next."""
from __future__ import annotations

import os
import sys

DEFAULT_BATCH_SIZE = 32
COMBINE_METHODS = ("raw", "rank")  # egal.combine.METHODS, without importing numpy for --help

NO_MODEL_HELP = """egal score needs a trained model: --model model.pt (PyTorch) or model.onnx (exported).
  - To try egal end to end without data or downloads, run `egal demo --out egal-demo`: it generates a
    synthetic lesion pool, trains a tiny model on it and writes egal-demo/model.pt and egal-demo/model.onnx.
  - To train on your own labelled rows: `egal train --pool pool.parquet --out model.pt`.
  - To score on a node without PyTorch: `egal export --model model.pt --out model.onnx` elsewhere, then
    --model model.onnx."""


def register(subparsers):
    parser = subparsers.add_parser(
        "score",
        help="score a pool of unlabeled images and rank what to annotate next",
        description="Score every image of a Parquet pool with a trained model: softmax entropy, Grad-CAM, "
        "and the soft Dice distance between the Grad-CAM and the expert ROI, fused into one score "
        "(S = alpha * entropy_norm + (1 - alpha) * misalignment; SCORING.md; --combine rank mixes the two terms' "
        "ranks instead). Writes one output row per "
        "input row (id, pred, entropy, entropy_norm, misalignment, score, rank, status, error); rank 1 is "
        "the image most worth annotating. Rows that cannot be decoded get status 'error' with the reason and "
        "are never selected. Output is written in crash-safe shards: a killed run continues with --resume.",
        epilog="Pool format: a Parquet file (or folder of Parquet files) with columns id (string, unique); image "
        "(PNG/JPEG/DICOM bytes) or image_path (relative to the Parquet file's folder); optionally mask (PNG bytes), "
        "mask_path or boxes (list of [x0, y0, x1, y1] in image pixels); label (optional, never read). "
        "Example: egal score --pool pool.parquet --model model.pt --select 60",
    )
    parser.add_argument("--pool", required=True, help="Parquet file or folder of Parquet files (see the format below)")
    parser.add_argument("--model", help="trained model: .pt (egal.models.save_model / egal train) or .onnx (egal export)")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="weight of entropy against misalignment in [0, 1]: 1 is entropy only, 0 attention only "
                        "(default: 0.5)")
    parser.add_argument("--combine", choices=COMBINE_METHODS, default="raw",
                        help="how the two terms are mixed into the score. raw (default): alpha * entropy_norm + "
                        "(1 - alpha) * misalignment, SCORING.md's formula. rank: the same mix of each term's "
                        "normalised rank over the scored pool, (rank - 1) / (n - 1) in [0, 1] with ties sharing "
                        "their average rank, so that the term with the wider spread does not decide alone (in egal "
                        "demo misalignment spans about 0.89-0.97 and entropy_norm about 0.1-0.5, so at alpha 0.5 raw "
                        "is ordered by entropy almost alone). Rows without ROI get the entropy term alone either way. "
                        "The entropy_norm and misalignment columns are written unchanged; only score and rank differ")
    parser.add_argument("--select", type=int, metavar="K",
                        help="also write the K ids to annotate next as CSV and print them")
    parser.add_argument("--out", default="scores.parquet", help="output Parquet file (default: scores.parquet)")
    parser.add_argument("--select-out", metavar="CSV",
                        help="where --select writes its CSV (default: next to --out, NAME.selection.csv)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"images per model call and per output shard (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs (default: cpu)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local engine: decoder processes running beside the model, 0 decodes in the main "
                        "process (default: CPU count - 1, at most 4; 0 below 4 CPUs); ray engine: scoring actors, each loading the "
                        "model once")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="finish an interrupted run with the same arguments: only batches without output are "
                       "scored. Refused, with what differs, when the unfinished (or finished) run at --out had other "
                       "arguments (pool, model, alpha, combine, batch size, device, engine); without a run at --out, "
                       "starts one")
    again.add_argument("--overwrite", action="store_true",
                       help="replace --out if it exists (once the new output is complete), and delete an unfinished "
                       "run's shards at --out first")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this machine; ray: Ray Data on a Ray cluster (default: local)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join with --engine ray (e.g. ray://head:10001 or auto); "
                        "default: RAY_ADDRESS, else a local Ray instance")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--verbose", action="store_true",
                        help="--engine ray: show Ray's own log output here instead of keeping it in NAME.ray.log "
                        "next to --out")
    parser.set_defaults(func=run)


def run(args) -> int:
    if not args.model:
        print(NO_MODEL_HELP, file=sys.stderr)
        return 2
    _check_args(args)
    from ..pipeline.scoring_job import ScoringJob

    job = ScoringJob.prepare(args)
    ranked = job.run()
    _print_summary(job, ranked, args)
    statuses = ranked.column("status").to_pylist()
    if statuses.count("ok") == 0:
        print(f"egal score: error: none of the {len(statuses)} rows could be scored (all {len(statuses)} are in "
              f"error; the reasons are in the error column of {args.out})", file=sys.stderr)
        return 1
    return 0


def _check_args(args) -> None:
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.select is not None and args.select < 1:
        raise ValueError(f"--select must be >= 1, got {args.select}")
    if args.workers is None:
        # Measured (bench/README.md): on 2 cores the model already uses both, and a decoder
        # process only adds transfer costs; with more cores it decodes while the model runs.
        cpus = os.cpu_count() or 1
        args.workers = min(4, cpus - 1) if cpus >= 4 else 0
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.select is not None and args.select_out is None:
        stem = args.out[:-len(".parquet")] if args.out.endswith(".parquet") else args.out
        args.select_out = stem + ".selection.csv"


def _print_summary(job, ranked, args) -> None:
    statuses = ranked.column("status").to_pylist()
    errors = len(statuses) - statuses.count("ok")
    elapsed, rate = job.progress.elapsed(), job.progress.rate()
    if job.store.already_complete:
        print(f"{args.out}: {len(statuses) - errors} of {len(statuses)} rows scored ({errors} in error), "
              "by an earlier run with these arguments")
    else:
        print(f"Scored {len(statuses) - errors} of {len(statuses)} rows ({errors} in error) in {elapsed:.1f} s, "
              f"{rate:.1f} rows/s{' this session' if job.resumed else ''}; wrote {args.out}")
    if errors:
        ids, reasons = ranked.column("id").to_pylist(), ranked.column("error").to_pylist()
        shown = [(i, r) for i, r in zip(ids, reasons) if r][:5]
        print("Rows in error (never selected): " + "; ".join(f"{i}: {r}" for i, r in shown)
              + (f"; and {errors - len(shown)} more (status column of {args.out})" if errors > len(shown) else ""))
    if args.select is not None:
        from ..pipeline import selection_table

        chosen = selection_table(ranked, args.select)
        how = f"alpha={args.alpha}" + (f", --combine {args.combine}" if args.combine != "raw" else "")
        if chosen.num_rows == 0:
            print(f"\nNo image to annotate next: no row could be scored ({args.select_out} lists none)")
            return
        print(f"\nThe {chosen.num_rows} images to annotate next ({how}), written to {args.select_out}:")
        _print_table(chosen, limit=25)


def _print_table(table, limit: int) -> None:
    cols = {c: table.column(c).to_pylist() for c in ("rank", "id", "score", "entropy_norm", "misalignment", "pred")}
    width = max([len("id")] + [len(str(i)) for i in cols["id"][:limit]])
    print(f"  {'rank':>5}  {'id':<{width}}  {'score':>6}  {'entropy_norm':>12}  {'misalignment':>12}  pred")
    for r in range(min(limit, table.num_rows)):
        mis = cols["misalignment"][r]
        mis = "no ROI" if mis is None or mis != mis else f"{mis:.4f}"
        print(f"  {cols['rank'][r]:>5}  {cols['id'][r]:<{width}}  {cols['score'][r]:>6.4f}  "
              f"{cols['entropy_norm'][r]:>12.4f}  {mis:>12}  {cols['pred'][r]}")
    if table.num_rows > limit:
        print(f"  ... and {table.num_rows - limit} more in the CSV")
