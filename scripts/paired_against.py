#!/usr/bin/env python3
"""Paired differences of every strategy of a simulation folder against another baseline than random.

    python scripts/paired_against.py docs/figshare_pretrained_cpu_headfix_misalignment --baseline entropy

`egal simulate` writes the differences against random (paired.csv, summary.md); this prints the same
tables (egal.loop.stats, per seed, t and bootstrap intervals) against the strategy named, from the
folder's runs/*.json, and writes nothing.
"""
import argparse

from egal.loop.report import load_runs
from egal.loop.stats import paired_markdown, paired_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="an egal simulate --out folder with runs/*.json")
    parser.add_argument("--baseline", required=True, help="the strategy compared against, as runs/ names it "
                        "(entropy, egal_a0.5, misalignment, ...)")
    args = parser.parse_args()
    runs = load_runs(args.folder)
    names = sorted({run["strategy"] for run in runs})
    if args.baseline not in names:
        parser.error(f"{args.folder} has no runs of {args.baseline!r}; it has {', '.join(names)}")
    print(paired_markdown(paired_report(runs, baseline=args.baseline), baseline=args.baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
