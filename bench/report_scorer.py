"""Run bench_scorer.py under pytest-benchmark and print a markdown table:
samples/s of both implementations, their ratio, and the bandwidth floor.

    python bench/report_scorer.py [--json out.json] [-k EXPR]
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


def run(json_path, k_expr):
    cmd = [sys.executable, "-m", "pytest", str(HERE / "bench_scorer.py"), "--benchmark-only", "-q", "-p",
           "no:cacheprovider", f"--benchmark-json={json_path}"]
    if k_expr:
        cmd += ["-k", k_expr]
    subprocess.run(cmd, check=True)


def table(data):
    bench = data["benchmarks"]
    copy = next(b for b in bench if b["extra_info"].get("impl") == "numpy-copy")
    bandwidth = copy["extra_info"]["bytes_moved"] / copy["stats"]["min"]
    cases = {}
    for b in bench:
        info = b["extra_info"]
        if info.get("impl") in ("fused", "reference"):
            key = (info["layer"], info["B"], info["dtype"], info["source"], info["roi"])
            cases.setdefault(key, {})[info["impl"]] = b["stats"]["min"], info["bytes_read"]
    lines = [
        f"Copy bandwidth (numpy copy of {copy['extra_info']['bytes_moved'] // 2 >> 20} MiB, read + write): "
        f"{bandwidth / 1e9:.1f} GB/s",
        "",
        "| layer | B | dtype | channel weights | ROI | fused samples/s | reference samples/s | speed-up | "
        "MB read | floor ms | fused ms | fused / floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(cases):
        impls = cases[key]
        if "fused" not in impls or "reference" not in impls:
            continue
        (tf, nbytes), (tr, _) = impls["fused"], impls["reference"]
        B = key[1]
        floor = nbytes / bandwidth
        lines.append(
            f"| {key[0]} | {B} | {key[2]} | {key[3]} | {key[4]} | {B / tf:,.0f} | {B / tr:,.0f} | {tr / tf:.1f}x | "
            f"{nbytes / 1e6:.1f} | {floor * 1e3:.2f} | {tf * 1e3:.2f} | {tf / floor:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="keep pytest-benchmark's JSON here")
    parser.add_argument("-k", dest="k_expr", help="pytest -k expression to run a subset")
    parser.add_argument("--from-json", help="only tabulate an existing pytest-benchmark JSON (e.g. the GPU run's)")
    args = parser.parse_args()
    if args.from_json:
        json_path = args.from_json
    else:
        json_path = args.json or tempfile.mktemp(suffix=".json")
        run(json_path, args.k_expr)
    data = json.loads(Path(json_path).read_text())
    machine = data["machine_info"]
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', platform.processor())}, "
          f"{machine.get('cpu', {}).get('count', '?')} cores; Python {machine['python_version']}; "
          f"date {datetime.date.today().isoformat()}")
    print()
    print(table(data))


if __name__ == "__main__":
    main()
