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

python3 -m pytest -q tests/test_engine_cuda.py tests/test_engine_correctness.py tests/test_engine_errors.py \
  2>&1 | tail -15 | tee "$OUT/tests.txt"

sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in memcheck racecheck; do
  "$sanitizer" --tool "$tool" --error-exitcode 9 python3 bench/cuda_sanitizer_cases.py 2>&1 | tail -8 | tee "$OUT/sanitizer_$tool.txt"
done

python3 -m pytest bench/bench_cuda.py --benchmark-only -q --benchmark-json="$OUT/bench_cuda.json" 2>&1 | tail -3
python3 bench/report_engine.py --from-json "$OUT/bench_cuda.json" | tee "$OUT/bench_cuda.md"
