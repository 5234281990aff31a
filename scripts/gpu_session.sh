#!/usr/bin/env bash
# Issues 17 and 18 in one call of the device machine (under its 10-minute limit), for a session whose 15
# minutes of GPU time must hold both and a machine start:
#   1. bench/gpu_check.sh on a quiet GPU: the sm_90 build, the CUDA tests, the benchmark and Nsight Compute
#      on its headline case (EGAL_GPU_CHECK_SECONDS, default 300; EGAL_GPU_CHECK_STEPS, default "build tests
#      bench profile": the end-to-end `egal score --device cuda` check, "score", when the time allows);
#   2. then, with the time left (EGAL_GPU_TOTAL, default 565 s, counted from the start), the protocol run
#      (scripts/gpu_protocol.sh; extra arguments go to `egal simulate`), and beside it the compute-sanitizer
#      runs, which check correctness and time nothing, so sharing the GPU costs them nothing that matters, then
#      issue 11's CPU scorer benchmark on two of this machine's cores (its ratios are of two implementations in
#      one run; the protocol beside it shares the memory bus, which the figures must say).
# Should the CUDA tests fail, the protocol scores with the CUDA backend's earlier ROI pass
# (EGAL_CUDA_ROI_PASS=per-pixel, which the run before this one checked), and summary.md says so.
#
# On the device machine (carry build/data and .whl; timeout_s 598):
#   bash scripts/gpu_session.sh --strategies random,entropy,egal
# Rehearse here, on the CPU (GPU parts skip; the protocol at its tiny rehearsal size):
#   EGAL_GPU_REHEARSAL=1 OUT=/tmp/gpu-session bash scripts/gpu_session.sh
#
# $OUT gets check/ (log.txt, summary.md, bench_cuda.json, bench_cuda.md, bench_cpu.json, and score_cuda.json
# when it ran) and protocol/ (log.txt, results.tar.gz): 8 files at most, the most that come back.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${OUT:-/tmp/egal-gpu-session}
mkdir -p "$OUT/check" "$OUT/protocol"

EGAL_GPU_DEADLINE=${EGAL_GPU_CHECK_SECONDS:-300} EGAL_GPU_STEPS=${EGAL_GPU_CHECK_STEPS:-"build tests bench profile"} \
  OUT="$OUT/check" bash bench/gpu_check.sh > /dev/null
left=$(( ${EGAL_GPU_TOTAL:-565} - ($(date +%s) - START) ))  # leaves the 30 s of timeout's kill and the packing
echo "check done after $(( $(date +%s) - START )) s; the protocol gets $left s"
if grep -q -- "- cuda-tests: exit [1-9]" "$OUT/check/summary.md"; then
  export EGAL_CUDA_ROI_PASS=per-pixel
  echo "- the CUDA tests failed: the protocol scores with EGAL_CUDA_ROI_PASS=per-pixel" >> "$OUT/check/summary.md"
fi

EGAL_GPU_DEADLINE=$left OUT="$OUT/protocol" bash scripts/gpu_protocol.sh "$@" &
protocol=$!
if python3 -m egal.cli backends --require cuda > /dev/null 2>&1; then
  EGAL_GPU_DEADLINE=$(( left < 360 ? left : 360 )) EGAL_GPU_STEPS="sanitizer cpu" EGAL_GPU_APPEND=1 OUT="$OUT/check" \
    bash bench/gpu_check.sh > /dev/null
else  # the check's build failed: the protocol builds egal itself, and nothing should import it meanwhile
  echo "- sanitizer: not run (no CUDA build of egal after the check)" >> "$OUT/check/summary.md"
fi
wait "$protocol"
echo "protocol exit $? after $(( $(date +%s) - START )) s in all"
cat "$OUT/check/summary.md"
grep -E "round [0-9]+/|exit|stopped|Error|error" "$OUT/protocol/log.txt" | tail -n 40
