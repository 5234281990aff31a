#!/usr/bin/env python3
"""Paired differences for a simulation folder that kept only its rounds.csv (its runs/*.json not kept).

    python scripts/paired_from_rounds.py docs/figshare_cpu [--baseline random]

Rebuilds each (strategy, seed) run's curve from rounds.csv and writes what `egal simulate`
writes from the runs themselves (egal.loop.report.write_paired): paired.csv, and the same
tables appended to summary.md. For the result folders under docs/ made before egal simulate
wrote paired statistics.
"""
import argparse
import csv
import os
from collections import defaultdict

from egal.loop.report import write_paired

CURVE_FIELDS = ("accuracy", "auc", "dice")


def runs_from_rounds(path: str) -> list:
    rounds = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            entry = {"labels": int(row["labels"])}
            entry.update({k: float(row[k]) if row.get(k) not in (None, "") else None for k in CURVE_FIELDS})
            rounds[(row["strategy"], int(row["seed"]))].append(entry)
    return [{"strategy": strategy, "seed": seed, "rounds": entries} for (strategy, seed), entries in rounds.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a simulation folder holding rounds.csv and summary.md")
    parser.add_argument("--baseline", default="random", help="the strategy compared against (default: random)")
    args = parser.parse_args()
    if os.path.exists(os.path.join(args.folder, "paired.csv")):
        parser.error(f"{args.folder} already has a paired.csv; this script is for folders without one")
    runs = runs_from_rounds(os.path.join(args.folder, "rounds.csv"))
    written = write_paired(args.folder, runs, os.path.join(args.folder, "summary.md"), args.baseline)
    print(written.get("paired_csv", f"no strategy to compare with {args.baseline!r}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
