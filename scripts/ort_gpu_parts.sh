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
#               what each call carries. The archive stays in .ortgpu/cache, so splitting again (after the tree
#               grew, or with ORT_PART_BYTES=N should a call be refused as too large) takes a second.
#               ORT_GPU_SLIM=0 packs the whole wheel instead (six parts).
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

pack() {  # the archive into $DIR/cache (kept: splitting again is instant), its path on stdout
  local wheel archive
  if [ "${ORT_GPU_SLIM:-1}" = 1 ]; then
    archive="$DIR/cache/onnxruntime-gpu-$VERSION-sm90.tar.xz"
  else
    archive="$DIR/cache/onnxruntime_gpu-$VERSION-cp312-cp312-manylinux_2_28_x86_64.whl"
  fi
  if [ ! -s "$archive" ]; then
    rm -rf "$DIR/download" && mkdir -p "$DIR/download" "$DIR/cache"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version $PYVER --implementation cp \
      --platform manylinux_2_28_x86_64 -d "$DIR/download" "onnxruntime-gpu==$VERSION" >&2
    wheel=$(ls "$DIR"/download/onnxruntime_gpu-*.whl)
    if [ "${ORT_GPU_SLIM:-1}" = 1 ]; then
      python3 -m pip install -q --no-deps --no-compile --target "$DIR/stage" --python-version $PYVER \
        --only-binary=:all: --platform manylinux_2_28_x86_64 "$wheel" >&2
      python3 scripts/ort_gpu_slim.py slim "$DIR/stage" >&2
      echo "packing (xz -9e, a few minutes)" >&2
      tar -C "$DIR/stage" -cf - . | xz -T1 --x86 --lzma2=preset=9e,dict=64MiB > "$archive.partial"
      mv "$archive.partial" "$archive"
    else
      mv "$wheel" "$archive"
    fi
    rm -rf "$DIR/download" "$DIR/stage"
  fi
  echo "$archive"
}

split_archive() {
  grep -qx "/$DIR/" .git/info/exclude 2>/dev/null || echo "/$DIR/" >> .git/info/exclude
  local archive
  archive=$(pack)
  rm -rf "$DIR"/part-* "$DIR/pieces" && mkdir -p "$DIR/pieces"
  # ORT_PART_BYTES: smaller parts, should a call that carries one be refused as over 64 MiB
  local part_bytes=${ORT_PART_BYTES:-$(( CALL_LIMIT - $(tree_bytes) - 512 * 1024 ))}  # 512 KiB to grow by
  (cd "$DIR/cache" && sha256sum "$(basename "$archive")" > ../pieces/SHA256SUMS)
  split -b "$part_bytes" -d -a 2 "$archive" "$DIR/pieces/piece-"
  local i=0
  for piece in "$DIR"/pieces/piece-*; do
    i=$((i + 1))
    mkdir -p "$DIR/part-$i"
    mv "$piece" "$DIR/part-$i/"
    cp "$DIR/pieces/SHA256SUMS" "$DIR/part-$i/"
  done
  rm -rf "$DIR/pieces"
  echo "$(basename "$archive"): $(stat -c %s "$archive") bytes in $i part(s) of at most $part_bytes bytes" \
    "(the working tree that travels with each is $(tree_bytes) bytes; a call carries 64 MiB in all)"
  if [ "$i" = 1 ]; then
    echo "device: one call, carry [\"$DIR/part-1\"], command \"bash scripts/gpu_session.sh\""
  else
    echo "device: $i calls back to back to one warm machine: call k < $i carries [\"$DIR/part-k\"] with command" \
      "\"ls $DIR\"; call $i carries [\"$DIR/part-$i\"] and runs \"bash scripts/gpu_session.sh\""
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
