#!/usr/bin/env bash
# Issues 17 and 11 in one call of the device machine (under its 10-minute limit), for a session whose 15 minutes
# of GPU time must hold it, a machine start and a rerun:
#   1. bench/gpu_check.sh on a quiet GPU: onnxruntime-gpu where its parts came along, the sm_90 build, the CUDA
#      tests (every pass of the backend, and the models' GPU tests), the benchmark (every pass side by side),
#      Nsight Compute on its headline case and its largest map, and `egal score --device cuda` end to end, .pt and
#      .onnx (EGAL_GPU_CHECK_SECONDS, default 400; EGAL_GPU_CHECK_STEPS, default "ort build tests bench profile
#      score");
#   2. then, with the time left (EGAL_GPU_TOTAL, default 560 s, counted from the start), the compute-sanitizer
#      runs over every pass, and beside them, on two other cores, issue 11 on this machine's CPU (another model
#      than the development machine's): the CPU kernels' tests in every instruction set it has (AVX-512 where it
#      has it) and the CPU scorer benchmark. The sanitizer checks correctness and times nothing; the CPU figures
#      are ratios of two implementations in one run, and share the memory bus with the sanitizer (say so).
# The protocol run of issue 18 (scripts/gpu_protocol.sh) is done; run it on its own to repeat it.
#
# Here first: bash scripts/ort_gpu_parts.sh split (onnxruntime-gpu cut to sm_90, about 59 MB: it prints what
# each call carries; two parts beside an 8 MB working tree). On the device machine, back to back:
#   bash scripts/ort_gpu_parts.sh stash    with carry [".ortgpu/part-1"] (a second; the machine keeps it in /tmp)
#   bash scripts/gpu_session.sh            with carry [".ortgpu/part-2"], timeout_s 598 (without both parts, no
#                                          onnxruntime CUDA run; the rest runs)
# A session with less device time left shortens it: EGAL_GPU_CHECK_SECONDS=300 EGAL_GPU_TOTAL=440 took 314 s
# on the H200 (2026-11-28).
# Rehearse here, on the CPU (the GPU parts skip and say so):
#   EGAL_GPU_REHEARSAL=1 OUT=/tmp/gpu-session bash scripts/gpu_session.sh
#
# $OUT gets check/ (log.txt, summary.md, bench_cuda.json, bench_cuda.md, score_cuda.json) and cpu/ (log.txt,
# summary.md, bench_cpu.json): 8 files, the most that come back.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${OUT:-/tmp/egal-gpu-session}
mkdir -p "$OUT/check" "$OUT/cpu"

EGAL_GPU_DEADLINE=${EGAL_GPU_CHECK_SECONDS:-400} EGAL_GPU_STEPS=${EGAL_GPU_CHECK_STEPS:-"ort build tests bench profile score"} \
  OUT="$OUT/check" bash bench/gpu_check.sh > /dev/null
left=$(( ${EGAL_GPU_TOTAL:-560} - ($(date +%s) - START) ))  # leaves the 30 s of timeout's kill and the packing
echo "check done after $(( $(date +%s) - START )) s; the sanitizer and the CPU get $left s"

if python3 -m egal.cli backends --require cuda > /dev/null 2>&1; then
  SPARE=(); command -v taskset > /dev/null && [ "$(nproc)" -gt 4 ] && SPARE=(taskset -c 2-$(( $(nproc) - 1 )))
  EGAL_GPU_DEADLINE=$left EGAL_GPU_STEPS="sanitizer" EGAL_GPU_APPEND=1 OUT="$OUT/check" \
    "${SPARE[@]}" bash bench/gpu_check.sh > /dev/null &
  sanitizer=$!
else
  echo "- sanitizer: not run (no CUDA build of egal after the check)" >> "$OUT/check/summary.md"
  sanitizer=
fi
EGAL_GPU_DEADLINE=$left EGAL_GPU_STEPS="isa cpu" OUT="$OUT/cpu" bash bench/gpu_check.sh > /dev/null
[ -n "$sanitizer" ] && wait "$sanitizer"
echo "done after $(( $(date +%s) - START )) s in all"
cat "$OUT/check/summary.md" "$OUT/cpu/summary.md"
