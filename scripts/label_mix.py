#!/usr/bin/env python3
"""Class mix of what each strategy had annotated after the last round, from a simulation folder.

    python scripts/label_mix.py results/figshare_cpu ../shared/data/figshare_brain_tumor.parquet

Reads the selected ids from OUT/runs/*.json and the labels from the pool; prints, per
strategy, the mean share of each class among the labelled rows (over seeds). A
diagnostic for the results page: uncertainty-driven selection often skews the mix.
"""
import argparse
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq

from egal.loop import load_runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("pool")
    parser.add_argument("--label-column", default="label")
    args = parser.parse_args()
    table = pq.read_table(args.pool, columns=["id", args.label_column]).to_pydict()
    label_of = dict(zip(table["id"], table[args.label_column], strict=True))
    classes = sorted({v for v in label_of.values() if v is not None})
    shares, sizes = defaultdict(list), defaultdict(set)
    for run in load_runs(args.out):
        ids = list(run["seed_set"]) + [i for r in run["rounds"] for i in r["selected"]]
        labels = [label_of[i] for i in ids]
        shares[run["strategy"]].append([labels.count(c) / len(labels) for c in classes])
        sizes[run["strategy"]].add(len(ids))
    print("| strategy | labels | " + " | ".join(classes) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in classes) + " |")
    for strategy, rows in shares.items():
        mean = np.mean(rows, axis=0)
        n = "/".join(str(v) for v in sorted(sizes[strategy]))
        print(f"| {strategy} ({len(rows)} seeds) | {n} | " + " | ".join(f"{100 * m:.0f} %" for m in mean) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
