#!/usr/bin/env bash
# onnxruntime-gpu for the device machine. Its image has onnxruntime's CPU build only and no network, and one
# device call carries at most 64 MiB with the working tree, where the onnxruntime-gpu wheel is 256 MB (1.31.1,
# CUDA 13). scripts/ort_gpu_slim.py cuts it to the H100/H200's own device code (sm_90) and drops files Python's
# onnxruntime never loads; xz (x86 filter, -9e) packs that into about 59 MB, which fits beside the working tree
# in one call. A bigger archive is split into parts, one a call in a row to one warm machine (files a call does
# not carry stay there while it is held, and it goes back after 30 s idle).
#
#   here:    bash scripts/ort_gpu_parts.sh split
#            -> .ortgpu/part-1 [... part-N] (git-ignored): the archive's pieces and its SHA256SUMS; it prints
#               what each call carries. ORT_GPU_SLIM=0 packs the whole wheel instead (six parts).
#   device:  calls 1 .. N-1 (where N > 1), call i with carry [".ortgpu/part-i"] and command "ls .ortgpu";
#            the last call with carry [".ortgpu/part-N"] runs scripts/gpu_session.sh, whose check installs it
#            (bash scripts/ort_gpu_parts.sh install: joins the parts, checks the SHA-256, unpacks into
#            /tmp/ort-site, runs a small graph on the CUDA provider against numpy, exit 0 only if it ran)
#   here:    bash scripts/ort_gpu_parts.sh rehearse
#            (split, install into a temporary folder and, with a Python of the wheel's version at
#            ORT_CHECK_PYTHON or python3.12, the same graph on the CPU provider of the packed onnxruntime)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${ORT_GPU_VERSION:-1.31.1}
PYVER=3.12  # the device image's Python
DIR=.ortgpu
TARGET=${ORT_SITE:-/tmp/ort-site}
CALL_LIMIT=$((64 * 1024 * 1024))

tree_bytes() {  # what a device call sends besides its carried paths: tracked and untracked-not-ignored files
  git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

split_archive() {
  grep -qx "/$DIR/" .git/info/exclude 2>/dev/null || echo "/$DIR/" >> .git/info/exclude
  rm -rf "$DIR" && mkdir -p "$DIR/download"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version $PYVER --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 -d "$DIR/download" "onnxruntime-gpu==$VERSION"
  local wheel archive
  wheel=$(ls "$DIR"/download/onnxruntime_gpu-*.whl)
  if [ "${ORT_GPU_SLIM:-1}" = 1 ]; then
    archive="$DIR/download/onnxruntime-gpu-$VERSION-sm90.tar.xz"
    python3 -m pip install -q --no-deps --no-compile --target "$DIR/stage" --python-version $PYVER \
      --only-binary=:all: --platform manylinux_2_28_x86_64 "$wheel"
    python3 scripts/ort_gpu_slim.py slim "$DIR/stage"
    echo "packing (xz -9e, a few minutes)"
    tar -C "$DIR/stage" -cf - . | xz -T1 --x86 --lzma2=preset=9e,dict=64MiB > "$archive"
    rm -rf "$DIR/stage" "$wheel"
  else
    archive=$wheel
  fi
  (cd "$DIR/download" && sha256sum "$(basename "$archive")" > SHA256SUMS)
  local part_bytes=$(( CALL_LIMIT - $(tree_bytes) - 512 * 1024 ))  # 512 KiB for the tree to grow by
  split -b "$part_bytes" -d -a 2 "$archive" "$DIR/download/piece-"
  local i=0
  for piece in "$DIR"/download/piece-*; do
    i=$((i + 1))
    mkdir -p "$DIR/part-$i"
    mv "$piece" "$DIR/part-$i/"
    cp "$DIR/download/SHA256SUMS" "$DIR/part-$i/"
  done
  echo "$(basename "$archive"): $(stat -c %s "$archive") bytes in $i part(s) of at most $part_bytes bytes" \
    "(64 MiB less the working tree's $(tree_bytes) bytes and a 512 KiB margin)"
  rm -f "$archive"
  if [ "$i" = 1 ]; then
    echo "device: one call, carry [\"$DIR/part-1\"], command \"bash scripts/gpu_session.sh\""
  else
    echo "device: calls 1-$((i - 1)) carry $DIR/part-1 ... part-$((i - 1)) (command \"ls $DIR\"), back to back;" \
      "the last carries $DIR/part-$i and runs bash scripts/gpu_session.sh"
  fi
}

join_and_unpack() {  # join_and_unpack [pip's cross-install flags]: the parts into $TARGET
  local sums name count
  sums=$(ls "$DIR"/part-*/SHA256SUMS 2>/dev/null | head -1) || true
  [ -n "$sums" ] || { echo "no parts in $DIR: carry .ortgpu/part-1 ... in the calls before this one" >&2; exit 2; }
  name=$(awk '{print $2}' "$sums")
  count=$(ls -d "$DIR"/part-* | wc -l)
  mkdir -p "$DIR/joined"
  cat $(ls "$DIR"/part-*/piece-* | sort -t- -k2 -n) > "$DIR/joined/$name"
  (cd "$DIR/joined" && sha256sum --check --quiet "../$(dirname "${sums#"$DIR"/}")/SHA256SUMS") || {
    echo "the joined archive's SHA-256 differs from the one split ($count parts here): a part is missing or broken" >&2
    exit 2
  }
  rm -rf "$TARGET" && mkdir -p "$TARGET"
  case "$name" in
    *.tar.xz) tar -C "$TARGET" -xJf "$DIR/joined/$name" ;;
    *.whl) python3 -m pip install -q --no-deps --no-compile --no-cache-dir --upgrade --target "$TARGET" "$@" "$DIR/joined/$name" ;;
  esac
  rm -rf "$DIR/joined"
  echo "unpacked $name into $TARGET ($count parts joined)"
}

case "${1:-}" in
  split) split_archive ;;
  install)  # on the device machine: exit 0 only where the CUDA provider ran the check's graph
    join_and_unpack
    python3 scripts/ort_gpu_slim.py check "$TARGET" --cuda
    ;;
  rehearse)
    split_archive
    TARGET=$(mktemp -d)
    join_and_unpack --python-version $PYVER --only-binary=:all: --platform manylinux_2_28_x86_64
    ls "$TARGET/onnxruntime/capi" | grep -c providers_cuda | sed 's/^/CUDA provider libraries unpacked: /'
    CHECK_PYTHON=${ORT_CHECK_PYTHON:-$(command -v python$PYVER || true)}
    if [ -n "$CHECK_PYTHON" ] && "$CHECK_PYTHON" -c "import numpy, onnx" 2> /dev/null; then
      "$CHECK_PYTHON" scripts/ort_gpu_slim.py check "$TARGET"
    else
      echo "no Python $PYVER with numpy and onnx here (ORT_CHECK_PYTHON): the packed onnxruntime was not run"
    fi
    rm -rf "$TARGET"
    ;;
  *) echo "usage: bash scripts/ort_gpu_parts.sh split | install | rehearse" >&2; exit 2 ;;
esac
