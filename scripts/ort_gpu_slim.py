"""Cut an installed onnxruntime-gpu down to what one GPU generation runs, so it travels in one device call.

    python scripts/ort_gpu_slim.py slim SITE [--keep-sm 90]   # here, after pip install --target SITE
    python3 scripts/ort_gpu_slim.py check SITE [--cuda]       # a small Conv/Gemm graph against numpy

SITE is a folder that `pip install --target SITE onnxruntime-gpu` filled. The wheel (256 MB for 1.31.1)
is four times what one call to the device machine carries (64 MiB with the working tree), and 95 % of
it is the CUDA provider's device code: one cubin per kernel file for each of sm_75, 80, 86, 89, 90 and
120, most of it already zstd-compressed. An H100 or H200 loads only the sm_90 ones. So:

- every fatbin entry built for another architecture keeps its header and has its payload overwritten
  with zeros (the library keeps its size and layout; the driver picks the sm_90 entry by its header and
  never reads the others), and the zeros compress away;
- files Python's onnxruntime never loads go: the C API library (libonnxruntime.so.*: the Python module
  links onnxruntime in), the TensorRT provider (the image has no TensorRT), and the transformers,
  quantization and tools subpackages (model-conversion utilities).

A kernel file with no entry for the kept architecture (sm_120-only kernels) had nothing an H100 could
run before either; such files are counted, not failed, unless they hold PTX the driver could compile for
it. That, or anything that does not parse as a fatbin, stops the script before a byte is written.

`check` imports the onnxruntime in SITE (a Python of the wheel's version) and runs a convolution, a matrix
product and a softmax on the CPU provider, or on the CUDA provider in full float32 with --cuda (PyTorch
imported first, as egal does, so that its CUDA and cuDNN libraries serve): on the device machine this
shows that the slimmed provider works before the session relies on it.
scripts/ort_gpu_parts.sh calls both; this is not part of egal.
"""
from __future__ import annotations

import argparse
import mmap
import shutil
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
FATBIN_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries that follow
ENTRY_SIZES = struct.Struct("<HHII")  # kind, version, header size, payload size (padded)
PTX = 1  # an entry's kind: 1 PTX (which the driver can compile for a newer GPU), 2 ELF (one GPU generation)
ENTRY_ARCH_OFFSET = 28  # the entry's sm version, a uint32 inside its header
PROVIDER = "onnxruntime/capi/libonnxruntime_providers_cuda.so"
UNUSED = ("onnxruntime/capi/libonnxruntime.so.*", "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
          "onnxruntime/transformers", "onnxruntime/quantization", "onnxruntime/tools")


class NotAFatbin(ValueError):
    """The bytes are not the fatbin layout this script knows: it writes nothing."""


@dataclass
class SlimReport:
    kept: Counter = field(default_factory=Counter)  # sm -> payload bytes kept
    zeroed: Counter = field(default_factory=Counter)  # sm -> payload bytes overwritten
    fatbins: int = 0
    without_kept_arch: int = 0  # fatbins with no entry for the kept architecture


def elf_section(image, name: str) -> tuple[int, int]:
    """(file offset, size) of a 64-bit little-endian ELF file's section NAME."""
    if image[:6] != b"\x7fELF\x02\x01":
        raise NotAFatbin("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)

    def header(i):  # (name offset, file offset, size) of section i
        base = shoff + i * shentsize
        return struct.unpack_from("<I", image, base)[0], *struct.unpack_from("<QQ", image, base + 0x18)

    _, strings, _ = header(shstrndx)
    for i in range(shnum):
        name_at, offset, size = header(i)
        end = image.find(b"\0", strings + name_at)
        if bytes(image[strings + name_at:end]) == name.encode():
            return offset, size
    raise NotAFatbin(f"no {name} section")


def fatbin_entries(image, offset: int, size: int):
    """Yields (fatbin index, kind, payload offset, payload size, sm) for every entry of a section's fatbins.

    Fatbins follow each other, 8-byte aligned with zeros between; each one's entries must end exactly
    where its header says, else the layout is not the one this script knows."""
    pos, end, index = offset, offset + size, 0
    while pos < end:
        if end - pos < FATBIN_HEADER.size:
            if any(image[pos:end]):
                raise NotAFatbin(f"{end - pos} stray bytes at the section's end")
            return
        magic, _, header_size, entries_size = FATBIN_HEADER.unpack_from(image, pos)
        if magic != FATBIN_MAGIC:
            if any(image[pos:pos + 8]):
                raise NotAFatbin(f"no fatbin header at byte {pos - offset} of the section")
            pos += 8
            continue
        entry, last = pos + header_size, pos + header_size + entries_size
        if last > end:
            raise NotAFatbin(f"fatbin {index} runs past the section's end")
        while entry < last:
            kind, _, entry_header, payload = ENTRY_SIZES.unpack_from(image, entry)
            if entry_header < ENTRY_ARCH_OFFSET + 4 or entry + entry_header + payload > last:
                raise NotAFatbin(f"fatbin {index}: an entry's sizes do not fit its fatbin")
            sm, = struct.unpack_from("<I", image, entry + ENTRY_ARCH_OFFSET)
            yield index, kind, entry + entry_header, payload, sm
            entry += entry_header + payload
        pos, index = last, index + 1


def zero_other_architectures(image, keep_sm: int) -> SlimReport:
    """Overwrites every fatbin entry's payload not built for keep_sm with zeros, in place (image: a
    writable buffer holding the whole ELF file). Parses everything first: a layout it does not know, no
    code for keep_sm at all, or PTX that a GPU of keep_sm would compile where its own code is missing,
    raises NotAFatbin with the image untouched."""
    offset, size = elf_section(image, ".nv_fatbin")
    entries = list(fatbin_entries(image, offset, size))
    report = SlimReport(fatbins=len({index for index, *_ in entries}))
    has_kept = {index for index, _, _, _, sm in entries if sm == keep_sm}
    if not has_kept:
        raise NotAFatbin(f"no sm_{keep_sm} code at all")
    for index, kind, _, _, sm in entries:
        if index not in has_kept and kind == PTX and sm <= keep_sm:
            raise NotAFatbin(f"fatbin {index} has no sm_{keep_sm} code but compute_{sm} PTX, "
                             f"which a GPU of sm_{keep_sm} would compile and run")
    report.without_kept_arch = report.fatbins - len(has_kept)
    for _, _, start, length, sm in entries:
        if sm == keep_sm:
            report.kept[sm] += length
        else:
            image[start:start + length] = bytes(length)
            report.zeroed[sm] += length
    return report


def slim(site: Path, keep_sm: int) -> SlimReport:
    """Slims the onnxruntime-gpu installed in SITE for GPUs of sm_{keep_sm} (see the module's text)."""
    provider = site / PROVIDER
    if not provider.is_file():
        raise FileNotFoundError(f"{provider}: not an onnxruntime-gpu installation (no CUDA provider)")
    with provider.open("r+b") as file, mmap.mmap(file.fileno(), 0) as image:
        report = zero_other_architectures(image, keep_sm)
        image.flush()
    for pattern in UNUSED:
        for path in site.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return report


def check(site: Path, cuda: bool) -> float:
    """The largest |onnxruntime - numpy| of a small graph run by the onnxruntime in SITE; raises if its
    provider did not run it, or if the difference is above 1e-4."""
    import numpy as np
    try:
        import torch  # noqa: F401  (loads the CUDA and cuDNN libraries that the CUDA provider links to)
    except ImportError:
        torch = None
    sys.path.insert(0, str(site.resolve()))
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if cuda and torch is None:
        ort.preload_dlls()

    if not Path(ort.__file__).is_relative_to(site.resolve()):
        raise RuntimeError(f"imported {ort.__file__}, not the onnxruntime in {site}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 16), dtype=np.float32)
    kernel = rng.standard_normal((8, 3, 3, 3), dtype=np.float32)
    dense = rng.standard_normal((8, 4), dtype=np.float32)
    nodes = [helper.make_node("Conv", ["x", "kernel"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("MatMul", ["flat", "dense"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "ort_gpu_check",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 4))],
                              [numpy_helper.from_array(kernel, "kernel"), numpy_helper.from_array(dense, "dense")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnx >= 1.23 writes IR 14 by default, which onnxruntime 1.31 refuses
    provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    # In full float32 (no TF32), as egal runs the CUDA provider: TF32's 10-bit mantissa could take this
    # graph near the bound without anything being wrong.
    options = {"use_tf32": "0"} if cuda else {}
    session = ort.InferenceSession(model.SerializeToString(), providers=[(provider, options)])
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"onnxruntime {ort.__version__} did not start {provider}: {session.get_providers()}")
    y = session.run(None, {"x": x})[0]

    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # [2, 3, 16, 16, 3, 3]
    conv = np.einsum("bcyxij,kcij->bkyx", windows, kernel)
    logits = np.maximum(conv, 0).mean(axis=(2, 3)) @ dense
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    difference = float(np.abs(y - expected).max())
    if not difference <= 1e-4:
        raise RuntimeError(f"{provider} of onnxruntime {ort.__version__} differs from numpy by {difference:.3g}")
    print(f"onnxruntime {ort.__version__} from {site}: {provider} ran a Conv/MatMul/Softmax graph, "
          f"{difference:.2g} from numpy")
    return difference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    slim_parser = commands.add_parser("slim", help="cut the onnxruntime-gpu in SITE down to one GPU generation")
    slim_parser.add_argument("site", type=Path, help="a folder that pip install --target filled with onnxruntime-gpu")
    slim_parser.add_argument("--keep-sm", type=int, default=90, help="the GPU architecture to keep (90: H100, H200)")
    check_parser = commands.add_parser("check", help="run a small graph with the onnxruntime in SITE")
    check_parser.add_argument("site", type=Path)
    check_parser.add_argument("--cuda", action="store_true", help="with the CUDA provider (else the CPU one)")
    args = parser.parse_args()
    if args.command == "check":
        try:
            check(args.site, args.cuda)
        except Exception as exc:  # noqa: BLE001  (the caller decides what a failed check means)
            print(f"ort_gpu_slim check: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        report = slim(args.site, args.keep_sm)
    except (OSError, NotAFatbin) as exc:
        print(f"ort_gpu_slim: {exc}", file=sys.stderr)
        return 2
    mb = 1e6
    print(f"{report.fatbins} fatbins: kept {report.kept[args.keep_sm] / mb:.1f} MB of sm_{args.keep_sm} code, zeroed "
          + ", ".join(f"sm_{sm} {n / mb:.1f} MB" for sm, n in sorted(report.zeroed.items()))
          + f"; {report.without_kept_arch} fatbins have no sm_{args.keep_sm} entry (nothing there ran on it before)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
