#!/usr/bin/env bash
# onnxruntime-gpu for the device machine, in parts. Its image has onnxruntime's CPU build only and no network,
# and the onnxruntime-gpu wheel (256 MB for 1.31.1, CUDA 13) is over the 64 MiB one device call carries. So
# it travels in parts of PART_MIB, one part a call, to one warm machine: files that a call does not carry stay
# there while the machine is held, and it is let go after 30 s idle, so the calls must follow each other.
#
#   here:    bash scripts/ort_gpu_parts.sh split
#            -> .ortgpu/part-1 ... part-N (git-ignored), each one piece of the wheel and its SHA256SUMS
#   device:  N calls in a row, call i with carry [".ortgpu/part-i"], command "ls .ortgpu"
#   device:  the last call's command begins with
#              bash scripts/ort_gpu_parts.sh install && export PYTHONPATH=/tmp/ort-site
#            (joins the parts, checks the wheel's SHA-256, installs it into /tmp/ort-site, without its
#            dependencies: numpy, protobuf and the rest are in the image, and the CUDA and cuDNN libraries come
#            from PyTorch's nvidia packages there, loaded by `import torch` before onnxruntime starts a session)
#   here:    bash scripts/ort_gpu_parts.sh rehearse    # split, join and a cross-install into a temporary folder
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${ORT_GPU_VERSION:-1.31.1}
PART_MIB=${PART_MIB:-45}  # beside the 5 MB of tracked files; a call that also carries build/data has no room
DIR=.ortgpu
TARGET=${ORT_SITE:-/tmp/ort-site}

split_wheel() {
  grep -qx "/$DIR/" .git/info/exclude 2>/dev/null || echo "/$DIR/" >> .git/info/exclude
  rm -rf "$DIR" && mkdir -p "$DIR/download"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 -d "$DIR/download" "onnxruntime-gpu==$VERSION"
  local wheel
  wheel=$(ls "$DIR"/download/onnxruntime_gpu-*.whl)
  (cd "$DIR/download" && sha256sum "$(basename "$wheel")" > SHA256SUMS)
  split -b "${PART_MIB}M" -d -a 2 "$wheel" "$DIR/download/piece-"
  local i=0
  for piece in "$DIR"/download/piece-*; do
    i=$((i + 1))
    mkdir -p "$DIR/part-$i"
    mv "$piece" "$DIR/part-$i/"
    cp "$DIR/download/SHA256SUMS" "$DIR/part-$i/"
  done
  rm -f "$wheel"
  echo "$(basename "$wheel"): $i parts of at most $PART_MIB MiB in $DIR/part-1 ... part-$i"
}

join_and_install() {
  local sums count wheel
  sums=$(ls "$DIR"/part-*/SHA256SUMS 2>/dev/null | head -1) || true
  [ -n "$sums" ] || { echo "no parts in $DIR: carry .ortgpu/part-1 ... in the calls before this one" >&2; exit 2; }
  wheel=$(awk '{print $2}' "$sums")
  count=$(ls -d "$DIR"/part-* | wc -l)
  mkdir -p "$DIR/joined"
  cat $(ls "$DIR"/part-*/piece-* | sort -t- -k2 -n) > "$DIR/joined/$wheel"
  (cd "$DIR/joined" && sha256sum --check --quiet "../$(dirname "${sums#"$DIR"/}")/SHA256SUMS") || {
    echo "the joined wheel's SHA-256 differs from the one split ($count parts here): a part is missing or broken" >&2
    exit 2
  }
  python3 -m pip install -q --no-deps --no-compile --no-cache-dir --upgrade --target "$TARGET" "$@" "$DIR/joined/$wheel"
  echo "installed $wheel into $TARGET ($count parts joined)"
}

case "${1:-}" in
  split) split_wheel ;;
  install) join_and_install ;;
  rehearse)
    split_wheel
    TARGET=$(mktemp -d)
    join_and_install --python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64
    ls "$TARGET/onnxruntime/capi" | grep -c providers_cuda | sed 's/^/CUDA provider libraries installed: /'
    rm -rf "$TARGET" "$DIR/joined"
    ;;
  *) echo "usage: bash scripts/ort_gpu_parts.sh split | install | rehearse" >&2; exit 2 ;;
esac
