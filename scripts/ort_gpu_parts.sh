#!/usr/bin/env bash
# onnxruntime-gpu for the device machine. Its image has onnxruntime's CPU build only and no network, and one
# device call carries at most 64 MiB with the working tree, where the onnxruntime-gpu wheel is 256 MB (1.31.1,
# CUDA 13). scripts/ort_gpu_slim.py cuts it to the H100/H200's own device code (sm_90) and drops files Python's
# onnxruntime never loads; xz (x86 filter, -9e) packs that into about 59 MB, which fits beside the working tree
# in one call where the working tree is small enough. A bigger archive is split into parts, one a call in a row to
# one warm machine (it goes back after 30 s idle). A call's copy of the working tree removes the ignored paths an
# earlier call carried (on the H200, 2026-11-28, .ortgpu/part-1 was gone in the next call), so each call but the
# last stashes its part outside the repository, in $STASH, where the machine keeps it while it is held.
#
#   here:    bash scripts/ort_gpu_parts.sh split
#            -> .ortgpu/part-1 [... part-N] (git-ignored): the archive's pieces and its SHA256SUMS; it prints
#               what each call carries. The archive stays in .ortgpu/cache, so splitting again (after the tree
#               grew, or with ORT_PART_BYTES=N should a call be refused as too large) takes a second.
#               ORT_GPU_SLIM=0 packs the whole wheel instead (five parts).
#   device:  calls 1 .. N-1 (where N > 1), call i with carry [".ortgpu/part-i"] and command
#            "bash scripts/ort_gpu_parts.sh stash"; the last call with carry [".ortgpu/part-N"] runs
#            scripts/gpu_session.sh, whose check installs it (bash scripts/ort_gpu_parts.sh install: takes the
#            stashed parts, joins them, checks the SHA-256, unpacks into /tmp/ort-site, runs a small graph on the
#            CUDA provider against numpy, exit 0 only if it ran)
#   here:    bash scripts/ort_gpu_parts.sh rehearse
#            (split, install into a temporary folder and, with a Python of the wheel's version at
#            ORT_CHECK_PYTHON or python3.12, the same graph on the CPU provider of the packed onnxruntime)
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(pack) stops the script too
cd "$(dirname "$0")/.."
VERSION=${ORT_GPU_VERSION:-1.31.1}
PYVER=3.12  # the device image's Python
DIR=.ortgpu
TARGET=${ORT_SITE:-/tmp/ort-site}
STASH=${ORT_STASH:-/tmp/ortgpu-parts}  # on the device machine, outside the repository: kept between calls
CALL_LIMIT=$((64 * 1024 * 1024))

tree_bytes() {  # what a device call sends besides its carried paths: tracked and untracked-not-ignored files
  git ls-files -z --cached --others --exclude-standard | { xargs -0 stat -c %s 2> /dev/null || true; } \
    | awk '{s += $1} END {print s + 0}'
}

pack() {  # the archive into $DIR/cache (kept: splitting again is instant), its path on stdout
  local wheel archive
  if [ "${ORT_GPU_SLIM:-1}" = 1 ]; then  # named by the slimming script's content: a changed script packs anew
    archive="$DIR/cache/onnxruntime-gpu-$VERSION-sm90-$(sha256sum scripts/ort_gpu_slim.py | cut -c1-8).tar.xz"
  else
    archive="$DIR/cache/onnxruntime_gpu-$VERSION-cp312-cp312-manylinux_2_28_x86_64.whl"
  fi
  if [ ! -s "$archive" ]; then
    rm -rf "$DIR/download" "$DIR/stage" && mkdir -p "$DIR/download" "$DIR/cache"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version $PYVER --implementation cp \
      --platform manylinux_2_28_x86_64 -d "$DIR/download" "onnxruntime-gpu==$VERSION" >&2
    wheel=$(ls "$DIR"/download/onnxruntime_gpu-*.whl)
    if [ "${ORT_GPU_SLIM:-1}" = 1 ]; then
      python3 -m pip install -q --no-deps --no-compile --target "$DIR/stage" --python-version $PYVER \
        --only-binary=:all: --platform manylinux_2_28_x86_64 "$wheel" >&2
      python3 scripts/ort_gpu_slim.py slim "$DIR/stage" >&2
      echo "packing (xz -9e, a few minutes)" >&2
      tar -C "$DIR/stage" -cf - . | xz -T1 --x86 --lzma2=preset=9e,dict=64MiB > "$archive.partial"
      xz -t "$archive.partial"
      rm -f "$DIR"/cache/onnxruntime-gpu-*-sm90-*.tar.xz  # packed by an earlier script or version
      mv "$archive.partial" "$archive"
    else
      mv "$wheel" "$archive"
    fi
    rm -rf "$DIR/download" "$DIR/stage"
  fi
  echo "$archive"
}

split_archive() {
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)
  grep -qx "/$DIR/" "$exclude" 2>/dev/null || echo "/$DIR/" >> "$exclude"
  local archive
  archive=$(pack)
  rm -rf "$DIR"/part-* "$DIR/pieces" "$DIR/joined" && mkdir -p "$DIR/pieces"
  # ORT_PART_BYTES: smaller parts, should a call that carries one be refused as over 64 MiB. 2 MiB to grow by and
  # for the tool's own count: a call of 66,845,000 bytes by tree_bytes was refused (2026-11-28)
  local part_bytes=${ORT_PART_BYTES:-$(( CALL_LIMIT - $(tree_bytes) - 2 * 1024 * 1024 ))}
  (cd "$DIR/cache" && sha256sum "$(basename "$archive")" > ../pieces/SHA256SUMS)
  split -b "$part_bytes" -d -a 2 "$archive" "$DIR/pieces/piece-"
  local i=0 count
  count=$(ls "$DIR"/pieces/piece-* | wc -l)
  echo "$count $part_bytes" > "$DIR/pieces/PARTS"  # the join takes part-1 ... part-$count of this split alone
  for piece in "$DIR"/pieces/piece-*; do
    i=$((i + 1))
    mkdir -p "$DIR/part-$i"
    mv "$piece" "$DIR/part-$i/"
    cp "$DIR/pieces/SHA256SUMS" "$DIR/pieces/PARTS" "$DIR/part-$i/"
  done
  rm -rf "$DIR/pieces"
  echo "$(basename "$archive"): $(stat -c %s "$archive") bytes in $i part(s) of at most $part_bytes bytes" \
    "(the working tree that travels with each is $(tree_bytes) bytes; a call carries 64 MiB in all)"
  if [ "$i" = 1 ]; then
    echo "device: one call, carry [\"$DIR/part-1\"], command \"bash scripts/gpu_session.sh\""
  else
    echo "device: $i calls back to back to one warm machine: call k < $i carries [\"$DIR/part-k\"] with command" \
      "\"bash scripts/ort_gpu_parts.sh stash\"; call $i carries [\"$DIR/part-$i\"] and runs" \
      "\"bash scripts/gpu_session.sh\""
  fi
}

complete() {  # complete PART_DIR: every part of PART_DIR's split is here (another split's may lie beside)
  local k
  [ -f "$1/PARTS" ] && [ -f "$1/SHA256SUMS" ] || return 1
  for k in $(seq 1 "$(awk '{print $1}' "$1/PARTS")"); do
    cmp -s "$DIR/part-$k/SHA256SUMS" "$1/SHA256SUMS" && cmp -s "$DIR/part-$k/PARTS" "$1/PARTS" || return 1
  done
}

stash() {  # the parts this call carried, into $STASH for a later call of the same machine
  local part
  mkdir -p "$STASH"
  for part in "$DIR"/part-*; do
    [ -d "$part" ] || continue
    rm -rf "$STASH/$(basename "$part")" && cp -r "$part" "$STASH/"
    echo "stashed $part in $STASH"
  done
}

join_and_unpack() {  # join_and_unpack [pip's cross-install flags]: the parts into $TARGET
  local dir found= name count k
  for dir in "$STASH"/part-*; do  # what earlier calls stashed, where this call did not carry it
    [ -d "$dir" ] && [ ! -e "$DIR/$(basename "$dir")" ] && mkdir -p "$DIR" && cp -r "$dir" "$DIR/"
  done
  for dir in $(ls -d "$DIR"/part-* 2>/dev/null | sort -t- -k2 -nr); do
    complete "$dir" && { found=$dir; break; }
  done
  [ -n "$found" ] || {
    echo "no complete set of parts in $DIR ($(ls "$DIR" 2>/dev/null | tr '\n' ' ')): each call carries one," \
      "back to back to one warm machine, .ortgpu/part-1 first, each but the last stashing it ($STASH)" >&2
    exit 2
  }
  name=$(awk '{print $2}' "$found/SHA256SUMS")
  count=$(awk '{print $1}' "$found/PARTS")
  rm -rf "$DIR/joined" && mkdir -p "$DIR/joined"
  : > "$DIR/joined/$name"
  for k in $(seq 1 "$count"); do
    cat "$DIR/part-$k"/piece-* >> "$DIR/joined/$name"
  done
  (cd "$DIR/joined" && sha256sum --check --quiet "../${found#"$DIR"/}/SHA256SUMS") || {
    echo "the joined archive's SHA-256 differs from the one split ($count parts): a part is broken" >&2
    exit 2
  }
  rm -rf "$TARGET" && mkdir -p "$TARGET"
  case "$name" in  # Python's tarfile, not tar -J: the device image may have no xz program
    *.tar.xz) python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='tar')" \
                "$DIR/joined/$name" "$TARGET" ;;
    *.whl) python3 -m pip install -q --no-deps --no-compile --no-cache-dir --upgrade --target "$TARGET" "$@" "$DIR/joined/$name" ;;
  esac
  rm -rf "$DIR/joined"
  echo "unpacked $name into $TARGET ($count parts joined)"
}

case "${1:-}" in
  split) split_archive ;;
  stash) stash ;;
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
  *) echo "usage: bash scripts/ort_gpu_parts.sh split | stash | install | rehearse" >&2; exit 2 ;;
esac
