"""Run bench_scorer.py under pytest-benchmark and print a markdown table:
samples/s of both implementations, their ratio, and the bandwidth floor.

    python bench/report_scorer.py [--json out.json] [-k EXPR] [--isa avx2] [--one-core]

--one-core runs everything on one thread (the fused scorer, PyTorch and the copy) and
times it in CPU time (time.process_time) instead of wall time: on a machine that other
work keeps busy, wall time measures the other work as much as the scorer.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The CUDA backend's other passes that bench_cuda.py times beside "fused", and their columns' names.
ALTERNATIVES = {"fused-channel-warps": "channel-warps", "fused-per-pixel": "per-pixel",
                "fused-vector-projection": "vector-projection"}


def run(json_path, k_expr, isa, one_core):
    cmd = [sys.executable, "-m", "pytest", str(HERE / "bench_scorer.py"), "--benchmark-only", "-q", "-p",
           "no:cacheprovider", f"--benchmark-json={json_path}"]
    if k_expr:
        cmd += ["-k", k_expr]
    env = dict(os.environ)
    if isa:
        env["EGAL_BENCH_CPU_ISA"] = isa
    if one_core:  # egal's OpenMP threads, and PyTorch's (bench_scorer.py sets them equal)
        env["OMP_NUM_THREADS"] = "1"
        cmd.append("--benchmark-timer=time.process_time")
    subprocess.run(cmd, check=True, env=env)


def table(data):
    bench = data["benchmarks"]
    copy = next((b for b in bench if b["extra_info"].get("impl") == "numpy-copy"), None)
    if copy is None:  # a run whose benchmarks all skipped (the GPU ones on a machine without a GPU)
        return "No benchmark ran: no copy-bandwidth measurement in this JSON."
    bandwidth = copy["extra_info"]["bytes_moved"] / copy["stats"]["min"]
    cases = {}
    for b in bench:
        info = b["extra_info"]
        if info.get("impl") in ("fused", "reference", *ALTERNATIVES):
            key = (info["layer"], info["B"], info["dtype"], info["source"], info["roi"])
            cases.setdefault(key, {})[info["impl"]] = b["stats"]["min"], info["bytes_read"]
    shown = [alt for alt in ALTERNATIVES if any(alt in impls for impls in cases.values())]
    lines = [
        f"Copy bandwidth ({copy['extra_info'].get('copy', 'numpy copy')} of "
        f"{copy['extra_info']['bytes_moved'] // 2 >> 20} MiB, read + write): {bandwidth / 1e9:.1f} GB/s",
        "",
        "| layer | B | dtype | channel weights | ROI | fused samples/s | reference samples/s | speed-up | "
        "MB read | floor ms | fused ms | fused / floor |"
        + "".join(f" {ALTERNATIVES[alt]} ms | {ALTERNATIVES[alt]} / fused |" for alt in shown),
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|---|" * len(shown),
    ]
    for key in sorted(cases):
        impls = cases[key]
        if "fused" not in impls or "reference" not in impls:
            continue
        (tf, nbytes), (tr, _) = impls["fused"], impls["reference"]
        B = key[1]
        floor = nbytes / bandwidth
        row = (f"| {key[0]} | {B} | {key[2]} | {key[3]} | {key[4]} | {B / tf:,.0f} | {B / tr:,.0f} | {tr / tf:.1f}x | "
               f"{nbytes / 1e6:.1f} | {floor * 1e3:.2f} | {tf * 1e3:.2f} | {tf / floor:.2f} |")
        for alt in shown:
            ta = impls.get(alt, (float("nan"),))[0]
            row += f" {ta * 1e3:.2f} | {ta / tf:.2f}x |" if ta == ta else " – | – |"
        lines.append(row)
    passes = {}
    for b in bench:
        info = b["extra_info"]
        if info.get("impl", "").startswith("mask-pass-"):
            impl = info["impl"][len("mask-pass-") :]
            passes.setdefault(info["mask"], {})[impl] = b["stats"]["min"], info["bytes_read"]
    if passes:
        lines += [
            "",
            "Mask pass alone: 256 masks of 224 x 224 onto 7 x 7 (egal.project_roi against the reference's einsum):",
            "",
            "| masks | MB read | fused ms | reference ms | speed-up | fused / blob | fused / floor |",
            "|---|---|---|---|---|---|---|",
        ]
        blob = passes.get("blob", {}).get("fused", (float("nan"),))[0]
        for mask in ("blob", "scattered", "soft"):
            impls = passes.get(mask, {})
            if "fused" not in impls or "reference" not in impls:
                continue
            (tf, nbytes), (tr, _) = impls["fused"], impls["reference"]
            lines.append(f"| {mask} | {nbytes / 1e6:.1f} | {tf * 1e3:.2f} | {tr * 1e3:.1f} | {tr / tf:.1f}x | "
                         f"{tf / blob:.2f} | {tf * bandwidth / nbytes:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="keep pytest-benchmark's JSON here")
    parser.add_argument("-k", dest="k_expr", help="pytest -k expression to run a subset")
    parser.add_argument("--from-json", help="only tabulate an existing pytest-benchmark JSON (e.g. the GPU run's)")
    parser.add_argument("--isa", choices=["baseline", "avx2", "avx512"],
                        help="run the fused scorer's CPU kernels in this instruction set (default: the widest the "
                             "CPU has), e.g. avx2 for the code path of CPUs without AVX-512")
    parser.add_argument("--one-core", action="store_true",
                        help="one thread everywhere, timed in CPU time (for a machine busy with other work)")
    args = parser.parse_args()
    if args.from_json:
        json_path = args.from_json
    else:
        json_path = args.json or tempfile.mktemp(suffix=".json")
        run(json_path, args.k_expr, args.isa, args.one_core)
    data = json.loads(Path(json_path).read_text())
    machine = data["machine_info"]
    isas = sorted({b["extra_info"]["cpu_isa"] for b in data["benchmarks"] if "cpu_isa" in b["extra_info"]})
    timer = data["benchmarks"][0]["options"].get("timer", "?") if data["benchmarks"] else "?"
    threads = sorted({b["extra_info"]["threads"] for b in data["benchmarks"] if "threads" in b["extra_info"]})
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', platform.processor())}, "
          f"{machine.get('cpu', {}).get('count', '?')} cores; fused scorer's instruction set: "
          f"{', '.join(isas) or 'not recorded'}; threads {', '.join(map(str, threads)) or '?'}; timer {timer}; "
          f"Python {machine['python_version']}; date {datetime.date.today().isoformat()}")
    print()
    print(table(data))


if __name__ == "__main__":
    main()
