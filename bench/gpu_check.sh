#!/usr/bin/env bash
# Issue 17 as one prepared command for the GPU machine: build with the CUDA backend for sm_90, the CUDA tests
# (CUDA against the CPU backend and the float64 definition), compute-sanitizer memcheck and racecheck on the
# boundary shapes, the GPU benchmark (fused CUDA against the PyTorch reference on the GPU, with the copy
# floor), and `egal score --device cuda` end to end (bench/gpu_score_check.py: parity of every runtime with
# the CPU, DenseNet-121 rows/s against its forward pass alone).
#
# Rehearse here, on the CPU (every GPU part skips and says so; the build is skipped unless asked for):
#   EGAL_GPU_REHEARSAL=1 OUT=/tmp/gpu-check bash bench/gpu_check.sh
# On the device machine (timeout_s 600; carry [".ortgpu/part-1"] after `bash scripts/ort_gpu_parts.sh split`
# here, for onnxruntime's CUDA provider, else nothing):
#   bash bench/gpu_check.sh
#
# Everything stays inside a deadline (EGAL_GPU_DEADLINE seconds, default 480): each step gets at most what is
# left, so a slow step costs the ones after it, not the whole run. $OUT receives at most 8 files, written as
# the run goes, so a run cut off still returns what it measured: log.txt (every step's whole output),
# summary.md (one line per step: exit status and seconds), bench_cuda.json / bench_cuda.md (the benchmark)
# and score_cuda.json (the end-to-end check).
#
# EGAL_GPU_STEPS picks steps (default: "ort build tests sanitizer bench profile score"; "cpu" adds issue 11's CPU scorer
# benchmark on this machine's CPU, into bench_cpu.json, and "isa" the CPU kernels' tests in every instruction set
# this CPU has, AVX-512 among them where it has it; build runs only where egal's CUDA backend is not installed yet,
# or with EGAL_GPU_BUILD=1, after a change), EGAL_GPU_SCORE_ARGS replaces bench/gpu_score_check.py's arguments,
# and EGAL_GPU_APPEND=1 adds to log.txt and summary.md instead of starting them again: scripts/gpu_session.sh
# runs the sanitizer after the GPU steps that way.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/egal-gpu}
WORK=/tmp/egal-gpu-work
REHEARSAL=${EGAL_GPU_REHEARSAL:-0}
DEADLINE=$(( $(date +%s) + ${EGAL_GPU_DEADLINE:-480} ))
mkdir -p "$OUT" "$WORK"
LOG="$OUT/log.txt"
SUMMARY="$OUT/summary.md"
export PYTHONUNBUFFERED=1
STEPS=" ${EGAL_GPU_STEPS:-ort build tests sanitizer bench profile score} "
for s in $STEPS; do
  case "$s" in ort|build|tests|sanitizer|bench|profile|score|cpu|isa) ;; *) echo "EGAL_GPU_STEPS: unknown step '$s' (ort build tests sanitizer bench profile score cpu isa, space-separated)" >&2; exit 2 ;; esac
done
wanted() { [[ "$STEPS" == *" $1 "* ]]; }
[ "${EGAL_GPU_APPEND:-0}" = 1 ] || { : > "$LOG"; : > "$SUMMARY"; }
echo "# bench/gpu_check.sh ($STEPS), $(date -u +%Y-%m-%dT%H:%M:%SZ)$([ "$REHEARSAL" = 1 ] && echo ', rehearsal on the CPU')" >> "$SUMMARY"

step() {  # step NAME LIMIT_SECONDS COMMAND...: runs COMMAND into the log, within LIMIT and the deadline
  local name=$1 limit=$2 left start rc
  shift 2
  left=$(( DEADLINE - $(date +%s) ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    echo "- $name: not run (the deadline was reached)" >> "$SUMMARY"
    return 124
  fi
  echo "==== $name ($(date +%T), at most ${limit} s): $*" >> "$LOG"
  start=$(date +%s)
  timeout -k 10 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  echo "- $name: exit $rc in $(( $(date +%s) - start )) s$([ "$rc" = 124 ] && echo ' (stopped at its limit)')" >> "$SUMMARY"
  return $rc
}

# onnxruntime-gpu, where scripts/ort_gpu_parts.sh's parts came along (.ortgpu/part-*): unpacked into
# /tmp/ort-site and put first on PYTHONPATH only once its CUDA provider has run a small graph, so that the
# tests and the end-to-end check below run .onnx models on the GPU; else the image's onnxruntime (CPU) stays.
if ! wanted ort; then
  :
elif ! ls -d .ortgpu/part-* > /dev/null 2>&1; then
  echo "- ort-gpu: no parts carried (.ortgpu/part-*), so onnxruntime has no CUDA provider here" >> "$SUMMARY"
elif step ort-gpu 90 bash scripts/ort_gpu_parts.sh install; then
  export PYTHONPATH=${ORT_SITE:-/tmp/ort-site}${PYTHONPATH:+:$PYTHONPATH}
fi

SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
{
  echo "==== versions ($(date +%T))"
  nvidia-smi || echo "nvidia-smi: not found"
  nvcc --version || echo "nvcc: not found"
  python3 -c "import sys, numpy, torch; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" || true
  echo "compute-sanitizer: ${SANITIZER:-not found}; ncu: $(command -v ncu || echo not found)"
  echo "$(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo)"
} >> "$LOG" 2>&1

cuda_installed() { python3 -m egal.cli backends --require cuda > /dev/null 2>&1; }
if wanted build && { [ "${EGAL_GPU_BUILD:-0}" = 1 ] || { [ "$REHEARSAL" != 1 ] && ! cuda_installed; }; }; then
  export EGAL_CUDA=ON CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
  step build 240 python3 -m pip install --no-build-isolation --no-deps --no-cache-dir . || { echo "the build failed: see log.txt" >> "$SUMMARY"; exit 2; }
elif wanted build && [ "$REHEARSAL" != 1 ]; then
  echo "- build: skipped, egal's CUDA backend is installed already (EGAL_GPU_BUILD=1 builds this tree)" >> "$SUMMARY"
fi
step backends 60 python3 -c "import egal; print(egal.__file__, egal.backends())"

wanted tests && step cuda-tests 150 python3 -m pytest -q -rs -p no:cacheprovider tests/test_scorer_cuda.py tests/test_scorer_errors.py
# The models' own GPU tests: Grad-CAM inputs extracted on the GPU, and onnxruntime's CUDA provider keeping its
# outputs there (skipped, with the reason, where onnxruntime has no CUDA provider).
wanted tests && step model-cuda-tests 90 python3 -m pytest -q -rs -p no:cacheprovider -m cuda tests/test_gradcam.py tests/test_onnx.py

if ! wanted sanitizer; then
  :
elif [ -n "$SANITIZER" ]; then
  for tool in memcheck racecheck; do
    step "sanitizer-$tool" 90 "$SANITIZER" --tool "$tool" --error-exitcode 9 python3 bench/cuda_sanitizer_cases.py
  done
else
  echo "- sanitizer: compute-sanitizer not found, not run" >> "$SUMMARY"
fi

wanted bench && step bench-cuda 150 python3 -m pytest bench/bench_cuda.py --benchmark-only -q -rs -p no:cacheprovider \
  --benchmark-json="$OUT/bench_cuda.json"
wanted bench && [ -s "$OUT/bench_cuda.json" ] && python3 bench/report_scorer.py --from-json "$OUT/bench_cuda.json" > "$OUT/bench_cuda.md" 2>> "$LOG"

# Nsight Compute on the benchmark's headline case, each pass's kernels once, and on its largest map with channel
# warps and cell blocks (into log.txt): throughput against the card's peaks, occupancy and what the warps wait on.
# --clock-control none leaves the card's clocks as they are.
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if wanted profile && [ -n "$NCU" ] && [ "$REHEARSAL" != 1 ]; then
  KERNELS="score_kernel|project_|channel_split|channel_means|cell_map"
  step profile 90 "$NCU" --clock-control none --kernel-name regex:"$KERNELS" --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats \
    python3 bench/cuda_profile_case.py
elif wanted profile; then
  step profile 60 python3 bench/cuda_profile_case.py  # no ncu (or a rehearsal): the case runs, unprofiled
fi

# Issue 11 on this machine's CPU, another model than the development machine's: the fused CPU scorer against
# the PyTorch reference in the issue's headline case, and the mask pass, on two cores as there (not in the
# default steps; scripts/gpu_session.sh runs it beside the protocol, so other work shares the memory bus).
PIN=(); command -v taskset > /dev/null && PIN=(taskset -c 0,1)
if wanted isa; then
  { echo "==== lscpu ($(date +%T))"; lscpu; } >> "$LOG" 2>&1
  step isa-tests 120 "${PIN[@]}" python3 -c "import egal, pytest, sys; print('best CPU instruction set here:', egal._core.best_cpu_isa()); sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', 'tests/test_scorer_isa.py']))"
fi
if wanted cpu; then
  wanted isa || { echo "==== lscpu ($(date +%T))"; lscpu; } >> "$LOG" 2>&1
  step cpu-scorer 150 "${PIN[@]}" env OMP_NUM_THREADS=2 python3 bench/report_scorer.py --json "$OUT/bench_cpu.json" \
    -k "(densenet121-block4 and 256 and gradients) or mask_pass or bandwidth"
fi

if [ -n "${EGAL_GPU_SCORE_ARGS:-}" ]; then  # a shorter rerun, say: "--device cuda" without --profile
  read -r -a SCORE_ARGS <<< "$EGAL_GPU_SCORE_ARGS"
elif [ "$REHEARSAL" = 1 ]; then
  SCORE_ARGS=(--device cpu --rows 48 --densenet-rows 32 --batch-sizes 16 --profile)
else
  SCORE_ARGS=(--device cuda --profile)
fi
wanted score && step score-end-to-end 240 python3 bench/gpu_score_check.py --work "$WORK" --json "$OUT/score_cuda.json" "${SCORE_ARGS[@]}"

echo "- done at $(date +%T), $(( $(date +%s) - DEADLINE + ${EGAL_GPU_DEADLINE:-480} )) s in all" >> "$SUMMARY"
cat "$SUMMARY"
