"""`egal score` on this machine: rows per second by backbone and decoder workers, and peak memory by pool size.

Each measurement runs `egal score` as its own process (as a user would), on a synthetic pool
written once per size (egal.demo_data.make_synthetic_pool, 224 x 224 grey PNG, masks), with a
randomly initialised model of the named architecture (timing does not depend on the weights).
Peak memory is sampled every 20 ms over the whole process tree (the scoring process and its
decoder workers) with psutil.

    python bench/bench_score.py                 # the full table for bench/README.md
    python bench/bench_score.py --quick         # a small smoke run
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import psutil


def make_model(architecture: str, path: str) -> None:
    import torch

    from egal.models import build_model, save_model

    torch.manual_seed(0)
    head = "prototypical" if architecture == "densenet121" else "linear"
    model = build_model(architecture, head, ("benign", "malignant", "normal"), input_size=(224, 224), in_channels=1)
    if head == "prototypical":  # prototypes from a few random images, so the head can run
        model.fit_prototypes(torch.rand(6, 1, 224, 224), torch.tensor([0, 1, 2, 0, 1, 2]))
    save_model(model, path)


def run_score(pool: str, model: str, out: str, workers: int, batch_size: int) -> dict:
    cmd = [sys.executable, "-m", "egal.cli", "score", "--pool", pool, "--model", model, "--out", out, "--overwrite",
           "--workers", str(workers), "--batch-size", str(batch_size), "--quiet"]
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_main = peak_tree = 0
    while proc.poll() is None:
        try:
            main_rss = proc.memory_info().rss
            tree = main_rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            break
        peak_main, peak_tree = max(peak_main, main_rss), max(peak_tree, tree)
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"egal score failed: {stderr}")
    elapsed = time.perf_counter() - start
    rate = float(stdout.split(" rows/s")[0].rsplit(", ", 1)[1])  # the job's own rows/s (scoring, no start-up)
    return {"wall_s": elapsed, "rows_per_s": rate, "peak_main_mib": peak_main / 2**20,
            "peak_tree_mib": peak_tree / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small pools, tiny_cnn only")
    parser.add_argument("--workdir", default=None, help="where pools and models go (default: a temporary folder)")
    args = parser.parse_args()
    from egal.demo_data import make_synthetic_pool

    work = args.workdir or tempfile.mkdtemp(prefix="egal-bench-score-")
    sizes = (200, 1000) if args.quick else (1000, 10000)
    pools = {}
    for n in sizes:
        folder = os.path.join(work, f"pool{n}")
        if not os.path.exists(os.path.join(folder, "pool.parquet")):
            make_synthetic_pool(folder, n=n, seed=0, image_size=224)
        pools[n] = os.path.join(folder, "pool.parquet")
    archs = ("tiny_cnn",) if args.quick else ("tiny_cnn", "resnet18", "densenet121")
    models = {}
    for arch in archs:
        models[arch] = os.path.join(work, f"{arch}.pt")
        make_model(arch, models[arch])
    out = os.path.join(work, "scores.parquet")

    print(f"# egal score on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}")
    print("\n| model | rows | workers | rows/s | wall s | peak RSS, main MiB | peak RSS, tree MiB |")
    print("|---|---|---|---|---|---|---|")
    small = sizes[0]
    throughput = {}
    for arch in archs:
        for workers in (0, 1):
            r = run_score(pools[small], models[arch], out, workers, 32)
            throughput[arch, workers] = r["rows_per_s"]
            print(f"| {arch} | {small} | {workers} | {r['rows_per_s']:.1f} | {r['wall_s']:.1f} | "
                  f"{r['peak_main_mib']:.0f} | {r['peak_tree_mib']:.0f} |", flush=True)
    print("\nDecoder worker speed-up (workers 1 vs 0): " + ", ".join(
        f"{arch} {throughput[arch, 1] / throughput[arch, 0]:.2f}x" for arch in archs))

    print("\n| pool rows | rows/s | peak RSS, main MiB | peak RSS, tree MiB |")
    print("|---|---|---|---|")
    memory = {}
    for n in sizes:
        r = run_score(pools[n], models["tiny_cnn"], out, 1, 32)
        memory[n] = r
        print(f"| {n} | {r['rows_per_s']:.1f} | {r['peak_main_mib']:.0f} | {r['peak_tree_mib']:.0f} |", flush=True)
    big, little = memory[sizes[1]], memory[sizes[0]]
    print(f"\nPeak RSS, {sizes[1]} rows vs {sizes[0]}: main process "
          f"{big['peak_main_mib'] / little['peak_main_mib']:.3f}x, "
          f"process tree {big['peak_tree_mib'] / little['peak_tree_mib']:.3f}x (tiny_cnn, 1 decoder worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
