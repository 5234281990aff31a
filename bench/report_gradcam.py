"""Run bench_gradcam.py under pytest-benchmark and print a markdown table:
images/s of each Grad-CAM scoring implementation and the ratios between them.

    python bench/report_gradcam.py [--json out.json] [-k EXPR]
"""
import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["egal-closed-form", "egal-autograd", "pytorch-grad-cam+numpy"]


def run(json_path, k_expr):
    cmd = [sys.executable, "-m", "pytest", str(HERE / "bench_gradcam.py"), "--benchmark-only", "-q", "-p",
           "no:cacheprovider", f"--benchmark-json={json_path}"]
    if k_expr:
        cmd += ["-k", k_expr]
    subprocess.run(cmd, check=True)


def table(data):
    groups = {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        key = (info["architecture"], info["head"], info["batch"], info["size"], info["threads"])
        groups.setdefault(key, {})[info["impl"]] = (
            b["stats"]["min"], b["stats"]["median"], info["max_abs_score_diff_vs_egal_autograd"])
    lines = [
        "| model | batch | input | closed form img/s (median) | autograd img/s (median) | "
        "pytorch-grad-cam + numpy img/s (median) | "
        "closed form vs autograd | closed form vs pytorch-grad-cam | autograd vs pytorch-grad-cam | "
        "max score diff of pytorch-grad-cam |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (arch, head, batch, size, _threads), impls in sorted(groups.items()):
        if not all(k in impls for k in ORDER):
            continue
        (tc, mc, _), (ta, ma, _), (tg, mg, dg) = (impls[k] for k in ORDER)
        lines.append(
            f"| {arch}, {head} head | {batch} | {size}x{size} | {batch / tc:.1f} ({batch / mc:.1f}) | "
            f"{batch / ta:.1f} ({batch / ma:.1f}) | {batch / tg:.1f} ({batch / mg:.1f}) | "
            f"{ta / tc:.2f}x | {tg / tc:.2f}x | {tg / ta:.2f}x | {dg:.1e} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="keep pytest-benchmark's JSON here")
    parser.add_argument("-k", dest="k_expr", help="pytest -k expression to run a subset")
    args = parser.parse_args()
    json_path = args.json or tempfile.mktemp(suffix=".json")
    run(json_path, args.k_expr)
    data = json.loads(Path(json_path).read_text())
    machine = data["machine_info"]
    threads = {b["extra_info"]["threads"] for b in data["benchmarks"]}
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', platform.processor())}, "
          f"{machine.get('cpu', {}).get('count', '?')} cores, torch threads {sorted(threads)}; "
          f"Python {machine['python_version']}; date {datetime.date.today().isoformat()}; "
          "img/s from the fastest of 7 rounds (after 2 warm-up rounds) (the CPU is shared: the minimum is the least "
          "disturbed), median in brackets; ratios are speed-ups from the fastest rounds")
    print()
    print(table(data))


if __name__ == "__main__":
    main()
