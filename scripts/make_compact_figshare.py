#!/usr/bin/env python3
"""Write a compact copy of the Figshare brain-tumour pool that fits the GPU machine's 64 MiB transfer.

Images are resized to SIZE x SIZE (bilinear) and stored as JPEG, masks resized
(area average, threshold at one half) and stored as PNG; only the columns the
experiment reads are kept (id, image, mask, label, cv_fold). Write it under an
ignored folder (build/) and never commit it: the data is not ours to redistribute.

    python scripts/make_compact_figshare.py ../shared/data/figshare_brain_tumor.parquet build/data/figshare_224.parquet
"""
import argparse
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--quality", type=int, default=92, help="JPEG quality (default: 92)")
    args = parser.parse_args()
    table = pq.read_table(args.source, columns=["id", "image", "mask", "label", "cv_fold"])
    images, masks = [], []
    for image_png, mask_png in zip(table.column("image").to_pylist(), table.column("mask").to_pylist(), strict=True):
        image = Image.open(io.BytesIO(image_png)).convert("L").resize((args.size, args.size), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=args.quality)
        images.append(buffer.getvalue())
        mask = Image.open(io.BytesIO(mask_png)).convert("L").resize((args.size, args.size), Image.BOX)
        binary = Image.fromarray(((np.asarray(mask) >= 128) * 255).astype(np.uint8))
        buffer = io.BytesIO()
        binary.save(buffer, format="PNG", optimize=True)
        masks.append(buffer.getvalue())
    compact = (table.set_column(1, "image", pa.array(images, pa.binary()))
               .set_column(2, "mask", pa.array(masks, pa.binary())))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    pq.write_table(compact, args.out, compression="zstd")
    print(f"wrote {args.out}: {len(compact)} rows, {os.path.getsize(args.out) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
