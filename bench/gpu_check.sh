#!/usr/bin/env bash
# One prepared run on a GPU machine (issue 6): build with CUDA for sm_90, run the
# tests with the CUDA backend, compute-sanitizer memcheck and racecheck, and the
# GPU benchmark. Logs go to $OUT (or /tmp/egal-gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/egal-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{ nvidia-smi; nvcc --version; python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"; } 2>&1 | tee "$OUT/versions.txt"

EGAL_CUDA=ON CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90" \
  python3 -m pip install --no-build-isolation --no-deps . 2>&1 | tail -5 | tee "$OUT/build.txt"
python3 -c "import egal; print(egal.backends())" | tee -a "$OUT/build.txt"

python3 -m pytest -q tests/test_scorer_cuda.py tests/test_scorer_correctness.py tests/test_scorer_errors.py \
  2>&1 | tail -15 | tee "$OUT/tests.txt"

sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in memcheck racecheck; do
  "$sanitizer" --tool "$tool" --error-exitcode 9 python3 bench/cuda_sanitizer_cases.py 2>&1 | tail -8 | tee "$OUT/sanitizer_$tool.txt"
done

python3 -m pytest bench/bench_cuda.py --benchmark-only -q --benchmark-json="$OUT/bench_cuda.json" 2>&1 | tail -3
python3 bench/report_scorer.py --from-json "$OUT/bench_cuda.json" | tee "$OUT/bench_cuda.md"

# egal score --device cuda end to end (issue 4's GPU path): the synthetic demo pool, a
# tiny model (.pt and .onnx), scores compared with a CPU run of the same model.
python3 - <<'PY' 2>&1 | tail -12 | tee "$OUT/score_cuda.txt"
import os, subprocess, sys, numpy as np, pyarrow.parquet as pq, torch
from egal.models import build_model, save_model
from egal.demo_data import make_synthetic_pool
work = os.environ.get("OUT", "/tmp/egal-gpu") + "/score"
pool = str(make_synthetic_pool(work, n=512, image_size=128))
torch.manual_seed(0)
save_model(build_model("tiny_cnn", "linear", ("benign", "malignant", "normal"), input_size=(128, 128), in_channels=1), f"{work}/m.pt")
subprocess.run([sys.executable, "-m", "egal.cli", "export", "--model", f"{work}/m.pt", "--out", f"{work}/m.onnx"], check=True)
runs = {}
for name, model, device in (("pt-cpu", "m.pt", "cpu"), ("pt-cuda", "m.pt", "cuda"), ("onnx-cuda", "m.onnx", "cuda")):
    r = subprocess.run([sys.executable, "-m", "egal.cli", "score", "--pool", pool, "--model", f"{work}/{model}", "--device", device,
                        "--out", f"{work}/{name}.parquet", "--overwrite", "--quiet"], capture_output=True, text=True)
    print(name, r.returncode, r.stdout.strip().splitlines()[:1], r.stderr[-500:])
    runs[name] = pq.read_table(f"{work}/{name}.parquet") if r.returncode == 0 else None
for name in ("pt-cuda", "onnx-cuda"):
    if runs[name] is not None:
        a, b = runs["pt-cpu"].column("score").to_numpy(), runs[name].column("score").to_numpy()
        print(name, "max |score - cpu|", float(np.nanmax(np.abs(a - b))), "ranks equal", runs["pt-cpu"].column("rank").to_pylist() == runs[name].column("rank").to_pylist())
PY
