"""Peak memory of `egal pool from-folders` on a dataset and on one 10 times larger.

    python bench/import_memory.py [--images 200] [--side 512] [--work DIR]

Writes a synthetic folders layout (16-bit PNG noise, which does not compress: each image is about
its raw size, with a mask beside it), then imports it in a fresh process at 1x and 10x the image
count and reports each process's peak resident memory (ru_maxrss). Two implementations on the same
inputs, in the same run:
  streaming   egal.importers.from_folders: rows written a row group at a time (egal.importers.writer)
  whole-table the same rows gathered into one pyarrow Table, then pq.write_table: what a script that
              builds the pool in memory does
Bounded memory means the streaming import's peak stays near its 1x figure at 10x; the whole-table
one grows with the dataset. Results and the machine they were measured on: bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IMPLEMENTATIONS = ("streaming", "whole-table")


def make_layout(folder: Path, images: int, side: int, seed: int = 0) -> int:
    """`images` 16-bit PNG noise images with masks, in two class folders; returns the bytes written."""
    from egal.importers.imaging import encode_mask
    from egal.pool.encode import encode_png

    rng = np.random.default_rng(seed)
    total = 0
    mask = np.zeros((side, side), bool)
    mask[side // 4: side // 2, side // 4: side // 2] = True
    for i in range(images):
        path = folder / ("a" if i % 2 else "b") / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_png(rng.integers(0, 65536, (side, side), dtype=np.uint16))
        path.write_bytes(data)
        path.with_name(path.stem + "_mask.png").write_bytes(encode_mask(mask))
        total += len(data)
    return total


def child(implementation: str, source: str, out: str) -> None:
    """Runs one import in this (fresh) process and prints its peak RSS as JSON."""
    import resource

    started = time.perf_counter()
    if implementation == "streaming":
        from egal.importers import from_folders

        rows = from_folders(source, out, progress=False).rows
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = []
        for path in sorted(Path(source).rglob("*.png")):
            if path.stem.endswith("_mask"):
                continue
            records.append({"id": path.stem, "image": path.read_bytes(),
                            "mask": path.with_name(path.stem + "_mask.png").read_bytes(), "label": path.parent.name})
        pq.write_table(pa.Table.from_pylist(records), out)
        rows = len(records)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "peak_mib": peak_kib / 1024, "seconds": time.perf_counter() - started}))


def measure(implementation: str, source: Path, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", implementation, str(source), str(out)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="images at 1x (default: %(default)s)")
    parser.add_argument("--side", type=int, default=512, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--work", help="scratch folder (default: a temporary one, removed at the end)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="egal-import-memory-"))
    try:
        print(f"{'scale':>5}  {'images':>6}  {'data MiB':>8}  " + "  ".join(f"{i + ' peak MiB':>21}"
                                                                           for i in IMPLEMENTATIONS) + "  ratio")
        for scale in (1, 10):
            source = work / f"x{scale}"
            size = make_layout(source, args.images * scale, args.side)
            peaks = {}
            for implementation in IMPLEMENTATIONS:
                out = work / f"x{scale}-{implementation}.parquet"
                peaks[implementation] = measure(implementation, source, out)["peak_mib"]
                out.unlink()
            print(f"{scale:>4}x  {args.images * scale:>6}  {size / 2**20:>8.0f}  "
                  + "  ".join(f"{peaks[i]:>21.0f}" for i in IMPLEMENTATIONS)
                  + f"  {peaks['whole-table'] / peaks['streaming']:.1f}x", flush=True)
            shutil.rmtree(source)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
