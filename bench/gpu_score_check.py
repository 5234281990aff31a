"""`egal score --device cuda` end to end, in one process, as bench/gpu_check.sh runs it (issue 17).

    python bench/gpu_score_check.py --work /tmp/egal-gpu-work --json score_cuda.json        # on the GPU machine
    python bench/gpu_score_check.py --device cpu --rows 48 --densenet-rows 32 --work /tmp/w  # the rehearsal

1. The same scores on the GPU: a tiny model (.pt, and its .onnx export) scores a synthetic pool on the CPU with
   PyTorch, the baseline, then on --device with PyTorch (runtime "torch"), with auto (which runtime it picks
   and why), with the .onnx graph (onnxruntime's CUDA provider; where onnxruntime has none, the error it
   gives), and through onnxruntime's IOBinding path with the provider there is. Each: the largest |score -
   baseline| (the tolerance is egal.pipeline.runtime.PARITY_ATOL) and how many rows changed rank. Then the
   command itself once: `egal score --device DEVICE` on the .pt model.
2. Speed of the paper's model: DenseNet-121 (random initialisation, prototypical head) at 224 x 224 grey, rows/s
   of `egal score` end to end (decoding, model, fused scorer, shards, ranking) per batch size on pools of N and
   4N rows (and the steady rate from the difference of their times: 3N rows over the extra seconds), of egal's
   Grad-CAM inputs + fused scorer on batches already on the device, and of the forward pass alone. Then the
   same pools with `--runtime onnxruntime` (the model exported to ONNX, onnxruntime's CUDA provider), and the
   runtime `auto` picks there per batch size, with its reason.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import egal
from egal.demo_data import make_synthetic_pool
from egal.gradcam import score_images
from egal.gradcam.extract import full_float32
from egal.models import build_model, load_model, save_model
from egal.onnx import export_onnx
from egal.pipeline.options import default_workers
from egal.pipeline.runtime import PARITY_ATOL

CLASSES = ("benign", "malignant", "normal")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/egal-gpu-work", help="scratch folder (pools, models, outputs)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--rows", type=int, default=512, help="rows of the parity pool")
    parser.add_argument("--densenet-rows", type=int, default=1024, help="rows of the DenseNet-121 pool")
    parser.add_argument("--batch-sizes", default="32,128", help="egal score batch sizes for DenseNet-121")
    parser.add_argument("--profile", action="store_true",
                        help="print where `egal score` spends its time (cProfile) for the last DenseNet batch size")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {"device": args.device, "torch": torch.__version__, "backends": egal.backends()}
    if args.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name(0)
    results["parity"] = parity(work, args.device, args.rows)
    _dump(results, args.json)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    pt, pool, large = densenet_inputs(work, args.densenet_rows)
    save = lambda: _dump(results, args.json)  # noqa: E731  (the figures so far, a batch size at a time)
    densenet_speed(pt, pool, large, work, args.device, args.densenet_rows, batch_sizes, args.profile,
                   out=results.setdefault("densenet121", {}), save=save)
    save()
    densenet_onnx(pt, pool, large, work, args.device, args.densenet_rows, batch_sizes,
                  out=results.setdefault("densenet121_onnx", {}), save=save)
    save()
    print(json.dumps(results, indent=1, default=str))
    return 0


# -- 1. the same scores on the device ------------------------------------------------------------------------

def parity(work: Path, device: str, rows: int) -> dict:
    pool = str(make_synthetic_pool(work / "parity", n=rows, image_size=128))
    torch.manual_seed(0)
    pt = str(work / "tiny.pt")
    save_model(build_model("tiny_cnn", "linear", CLASSES, input_size=(128, 128), in_channels=1), pt)
    onnx = export_onnx(pt, str(work / "tiny.onnx"), overwrite=True)  # (a scratch folder kept between runs)
    baseline = _score(pool, pt, work / "pt-cpu.parquet", device="cpu", runtime="torch")
    out = {"pool_rows": rows, "tolerance": PARITY_ATOL, "baseline": "PyTorch on the CPU"}
    # egal's Grad-CAM path turns TF32 off on a GPU (egal.gradcam.extract.full_float32): with PyTorch's
    # default TF32 convolutions the first H100 run differed by 3e-4 here, and by 1.8e-7 without.
    for name, model, runtime in (("pt-torch", pt, "torch"), ("pt-auto", pt, "auto"), ("onnx", onnx, "auto")):
        try:
            run = _score(pool, model, work / f"{name}.parquet", device=device, runtime=runtime)
        except Exception as exc:  # recorded: the .onnx run fails where onnxruntime has no CUDA provider
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[name] = {"runtime": run.runtime, "note": run.runtime_note, "rows_per_second": round(run.rows_per_second, 1),
                     **_difference(baseline.table, run.table)}
    out["iobinding"] = _iobinding(pool, onnx)
    # The command names its GPU by index (cuda:0), as a user of a machine with several would; the runs above say cuda.
    command = [sys.executable, "-m", "egal.cli", "score", "--pool", pool, "--model", pt,
               "--device", "cuda:0" if device == "cuda" else device,
               "--runtime", "torch", "--out", str(work / "cli.parquet"), "--overwrite", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    out["cli"] = {"exit": done.returncode, "stdout": done.stdout.strip()[-300:], "stderr": done.stderr.strip()[-300:]}
    if done.returncode == 0:
        import pyarrow.parquet as pq

        out["cli"].update(_difference(baseline.table, pq.read_table(work / "cli.parquet")))
    return out


def _score(pool, model, out, **options):
    return egal.score_pool(pool, model, out=str(out), overwrite=True, progress=False, **options)


def _difference(a, b) -> dict:
    """Largest |score difference| and how many rows changed rank, between two runs over one pool (pool order)."""
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    x, y = (t.column("score").to_numpy(zero_copy_only=False).astype(float) for t in (a, b))
    same_nan = bool(np.array_equal(np.isnan(x), np.isnan(y)))
    both = ~np.isnan(x) & ~np.isnan(y)
    worst = float(np.max(np.abs(x[both] - y[both]))) if both.any() else 0.0
    moved = sum(p != q for p, q in zip(a.column("rank").to_pylist(), b.column("rank").to_pylist(), strict=True))
    return {"max_score_difference": worst, "within_tolerance": same_nan and worst <= PARITY_ATOL,
            "rows_that_changed_rank": moved}


def _iobinding(pool: str, onnx: str) -> dict:
    """onnxruntime's IOBinding path with the best provider there is, against its plain run on the CPU."""
    import onnxruntime as ort

    from egal.onnx.runner import CPU_PROVIDER, CUDA_PROVIDER, OnnxGradCAM
    from egal.pool import DecodeSettings, decode_batch, open_pool

    provider = CUDA_PROVIDER if CUDA_PROVIDER in ort.get_available_providers() else CPU_PROVIDER
    settings = DecodeSettings(input_size=(128, 128), in_channels=1)
    batch = decode_batch(next(iter(open_pool(pool).iter_batches(32))), settings)
    bound = OnnxGradCAM(onnx, providers=[provider], io_binding=True).score(batch.images, batch.masks)
    plain = OnnxGradCAM(onnx, providers=[CPU_PROVIDER], io_binding=False).score(batch.images, batch.masks)
    worst = float(np.nanmax(np.abs(np.asarray(bound.score) - np.asarray(plain.score))))
    return {"provider": provider, "rows": len(batch.ids), "max_score_difference_to_cpu": worst,
            "within_tolerance": worst <= PARITY_ATOL}


# -- 2. the paper's model: rows per second ---------------------------------------------------------------------

def densenet_inputs(work: Path, rows: int) -> tuple[str, str, str]:
    """The model (.pt) and two pools of N and 4N rows: the difference of their times is the steady rate,
    without the fixed costs (decoder start, first batch) that dominate a small pool on a GPU."""
    pool = str(make_synthetic_pool(work / "densenet", n=rows, image_size=224))
    torch.manual_seed(0)
    model = build_model("densenet121", "prototypical", CLASSES, input_size=(224, 224), in_channels=1)
    model.fit_prototypes(torch.rand(6, 1, 224, 224), torch.tensor([0, 1, 2, 0, 1, 2]))  # so that the head runs
    pt = str(work / "densenet121.pt")
    save_model(model.eval(), pt)
    return pt, pool, _repeated_pool(pool, 4, work / "densenet-large.parquet")


def _pool_rates(out: dict, b: int, rows: int, small_run, large_run) -> None:
    """Seconds and rows/s of a batch size's two runs, and the steady rate: 3N rows over the extra seconds."""
    out.setdefault("egal_score_seconds", {})[b] = [round(small_run.seconds, 2), round(large_run.seconds, 2)]
    out.setdefault("egal_score_rows_per_second", {})[b] = [round(small_run.rows_per_second, 1),
                                                           round(large_run.rows_per_second, 1)]
    out.setdefault("egal_score_steady_rows_per_second", {})[b] = round(
        3 * rows / max(large_run.seconds - small_run.seconds, 1e-9), 1)


def densenet_speed(pt: str, pool: str, large: str, work: Path, device: str, rows: int, batch_sizes: list[int],
                   profile: bool = False, out: dict | None = None, save=lambda: None) -> dict:
    """PyTorch's figures, into `out` as they come (save() after each batch size)."""
    out = {} if out is None else out
    out.update({"pool_rows": [rows, 4 * rows], "runtime": "torch", "in_memory_rows_per_second": {},
                "forward_only_rows_per_second": {}})
    for b in batch_sizes:
        small_run = _score(pool, pt, work / f"densenet-{b}.parquet", device=device, runtime="torch", batch_size=b)
        large_run = _score(large, pt, work / f"densenet-large-{b}.parquet", device=device, runtime="torch",
                           batch_size=b)
        _pool_rates(out, b, rows, small_run, large_run)
        save()
    # The pool's decoding alone, as `egal score` runs it (its default decoder processes, their start
    # included), on both pools, and the steady rate between them: whether the decoders are what bounds the
    # end-to-end figure (the first GPU run's decode figure held the processes' start).
    out["decoders"] = default_workers()
    small_decode, large_decode = (_decode_seconds(p, batch_sizes[-1], default_workers()) for p in (pool, large))
    out["decode_only_rows_per_second"] = [round(rows / small_decode, 1), round(4 * rows / large_decode, 1)]
    out["decode_only_steady_rows_per_second"] = round(3 * rows / max(large_decode - small_decode, 1e-9), 1)
    save()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(_score, pool, pt, work / "densenet-profile.parquet", device=device, runtime="torch",
                         batch_size=batch_sizes[-1])
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    model = load_model(pt, map_location=device)
    for b in batch_sizes:
        images = torch.rand(b, 1, 224, 224, device=device)
        masks = torch.zeros(b, 224, 224, dtype=torch.uint8, device=device)
        masks[:, 60:140, 70:150] = 1
        with torch.inference_mode():
            out["forward_only_rows_per_second"][b] = _rate(lambda: model(images), b, device)  # noqa: B023
            with full_float32(images.device):  # what egal's Grad-CAM path runs under: the cost of exact scores
                out.setdefault("forward_only_no_tf32_rows_per_second", {})[b] = _rate(
                    lambda: model(images), b, device)  # noqa: B023
        out["in_memory_rows_per_second"][b] = _rate(lambda: score_images(model, images, masks),  # noqa: B023
                                                    b, device)
        save()
    return out


def densenet_onnx(pt: str, pool: str, large: str, work: Path, device: str, rows: int, batch_sizes: list[int],
                  out: dict | None = None, save=lambda: None) -> dict:
    """The same model through onnxruntime (`--runtime onnxruntime`: exported once, checked against PyTorch on
    the first batch, cached beside the model; the first run pays that), per batch size as densenet_speed, and
    what `auto` picks on this device and why; into `out` as they come. Where onnxruntime cannot run on the
    device, the reason."""
    from egal.pipeline.model_runner import NO_CUDA_PROVIDER, onnxruntime_lacks_cuda

    out = {} if out is None else out
    out.update({"pool_rows": [rows, 4 * rows], "runtime": "onnxruntime"})
    try:
        if device == "cuda" and onnxruntime_lacks_cuda():
            out["error"] = NO_CUDA_PROVIDER
            return out
        for b in batch_sizes:
            small_run = _score(pool, pt, work / f"densenet-onnx-{b}.parquet", device=device, runtime="onnxruntime",
                               batch_size=b)
            large_run = _score(large, pt, work / f"densenet-onnx-large-{b}.parquet", device=device,
                               runtime="onnxruntime", batch_size=b)
            out.setdefault("notes", {})[b] = small_run.runtime_note
            _pool_rates(out, b, rows, small_run, large_run)
            save()
        for b in batch_sizes:  # the graph is cached by now: what auto picks, and the times it picked by
            auto = _score(pool, pt, work / f"densenet-auto-{b}.parquet", device=device, runtime="auto", batch_size=b)
            out.setdefault("auto", {})[b] = {"runtime": auto.runtime, "note": auto.runtime_note}
            save()
    except Exception as exc:  # recorded beside what was measured: the PyTorch figures above stand without it
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _repeated_pool(pool: str, copies: int, out: Path) -> str:
    """The pool's rows `copies` times over, with ids made unique: as costly to score per row, and written in a
    second where drawing 4N new scans would take minutes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pool)
    ids = table.column("id")
    parts = [table.set_column(table.schema.get_field_index("id"), "id",
                              pa.array([f"{i}-{k}" for i in ids.to_pylist()])) for k in range(copies)]
    pq.write_table(pa.concat_tables(parts), out)
    return str(out)


def _decode_seconds(pool: str, batch: int, workers: int) -> float:
    from egal.pool import DecodeSettings, open_pool
    from egal.pool.workers import decode_in_order

    start = time.perf_counter()
    batches = decode_in_order(open_pool(pool).iter_batches(batch), DecodeSettings(input_size=(224, 224)), workers)
    try:
        for _ in batches:
            pass
    finally:
        batches.close()
    return time.perf_counter() - start


def _rate(step, batch: int, device: str, warmup: int = 3, seconds: float = 3.0) -> float:
    """Rows per second of `step` (one batch), after warm-up, synchronised on a GPU."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    sync()
    return round(n * batch / (time.perf_counter() - start), 1)


def _dump(results: dict, path: str | None) -> None:
    if path:  # after each part, so that a run cut off still returns what it measured
        Path(path).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
