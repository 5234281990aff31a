"""scripts/ort_gpu_slim.py: the fatbin walk that keeps one GPU generation's code in onnxruntime's CUDA provider.

The real provider is 284 MB and comes from PyPI, so these tests build small ELF files with the same layout: a
.nv_fatbin section of fatbins (16-byte header, then entries whose 64-byte headers carry the sm version at
byte 28), 8-byte aligned with zeros between them.
"""
from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ort_gpu_slim.py"
spec = importlib.util.spec_from_file_location("ort_gpu_slim", SCRIPT)
slim_module = importlib.util.module_from_spec(spec)
sys.modules.setdefault("ort_gpu_slim", slim_module)  # its dataclass looks its module up there
spec.loader.exec_module(slim_module)


def entry(sm: int, payload: bytes, kind: int = 2, header_size: int = 64) -> bytes:
    """An entry: ELF (kind 2) or PTX (1); sm_100 and newer ELF entries have 112-byte headers."""
    header = bytearray(header_size)
    struct.pack_into("<HHII", header, 0, kind, 0x101, header_size, len(payload))
    struct.pack_into("<I", header, 28, sm)
    return bytes(header) + payload


def fatbin(*entries: bytes, header_size: int = 16) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", slim_module.FATBIN_MAGIC, 1, header_size, len(body)) + bytes(header_size - 16) + body


def elf_with(sections: dict[str, bytes]) -> bytes:
    """A 64-bit little-endian ELF file holding these sections (and its section-name table), nothing else."""
    names = b"\0" + b"".join(name.encode() + b"\0" for name in sections) + b".shstrtab\0"
    blobs = [*sections.values(), names]
    data = bytearray(64)
    offsets = []
    for blob in blobs:
        data += bytes(-len(data) % 8)
        offsets.append(len(data))
        data += blob
    data += bytes(-len(data) % 8)
    shoff = len(data)
    data += bytes(64)  # section 0, the null section
    name_at = 1
    for i, blob in enumerate(blobs):
        header = bytearray(64)
        struct.pack_into("<I", header, 0, name_at)
        struct.pack_into("<QQ", header, 0x18, offsets[i], len(blob))
        name_at += len((list(sections) + [".shstrtab"])[i]) + 1
        data += header
    data[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<Q", data, 0x28, shoff)
    struct.pack_into("<HHH", data, 0x3A, 64, len(blobs) + 1, len(blobs))
    return bytes(data)


def payload(tag: int, size: int) -> bytes:
    return bytes([tag]) * size


def provider_image() -> tuple[bytearray, dict[int, bytes]]:
    kept = {0: payload(0x90, 40), 1: payload(0x91, 24)}
    section = (fatbin(entry(80, payload(0x80, 32)), entry(90, kept[0]), entry(120, payload(0x12, 16), header_size=112))
               + bytes(8)  # alignment between fatbins
               + fatbin(entry(90, kept[1]), header_size=24)
               + fatbin(entry(120, payload(0x13, 8))))  # Blackwell only: nothing an H100 runs
    decoy = fatbin(entry(80, payload(0x81, 16)))  # a section whose name only begins like the fatbins'
    image = bytearray(elf_with({".nv_fatbin.decoy": decoy, ".text": b"\xc3" * 24, ".nv_fatbin": section,
                                ".data": b"data"}))
    return image, kept


def test_other_architectures_are_zeroed_and_the_kept_code_and_every_header_stay():
    image, kept = provider_image()
    before = bytes(image)
    report = slim_module.zero_other_architectures(image, keep_sm=90)
    assert report.fatbins == 3 and report.without_kept_arch == 1
    assert report.kept == {90: 64} and report.zeroed == {80: 32, 120: 24}
    assert len(image) == len(before)
    for tag in (0x80, 0x12, 0x13):  # every byte of another generation's code is gone
        assert bytes([tag]) * 8 not in image
    for code in (*kept.values(), payload(0x81, 16)):  # the kept code, and the decoy section untouched
        assert code in image
    changed = [i for i in range(len(image)) if image[i] != before[i]]
    assert len(changed) == 32 + 24  # the zeroed payloads, not a header or another section
    offset, size = slim_module.elf_section(image, ".nv_fatbin")
    walked = [(sm, length) for _, _, _, length, sm in slim_module.fatbin_entries(image, offset, size)]
    assert walked == [(80, 32), (90, 40), (120, 16), (90, 24), (120, 8)]


@pytest.mark.parametrize("damage, message", [
    (lambda section: section[:20] + b"\x01" * 8 + section[28:], "an entry's sizes do not fit"),
    (lambda section: section + b"\x07" * 16, "no fatbin header"),
    (lambda section: section + b"\x07" * 4, "stray bytes"),
    (lambda section: section[:8] + struct.pack("<Q", len(section)) + section[16:], "runs past the section's end"),
    (lambda section: section[:20] + struct.pack("<I", 16) + section[24:], "an entry's sizes do not fit"),
    (lambda section: section + fatbin(entry(80, payload(0x82, 8), kind=1)), "compute_80 PTX"),
])
def test_a_layout_it_does_not_know_is_refused_before_a_byte_is_written(damage, message):
    section = fatbin(entry(80, payload(0x80, 32)), entry(90, payload(0x90, 8)))
    image = bytearray(elf_with({".nv_fatbin": damage(section)}))
    before = bytes(image)
    with pytest.raises(slim_module.NotAFatbin, match=message):
        slim_module.zero_other_architectures(image, keep_sm=90)
    assert bytes(image) == before


def test_a_file_without_fatbins_is_refused():
    with pytest.raises(slim_module.NotAFatbin, match="no .nv_fatbin section"):
        slim_module.zero_other_architectures(bytearray(elf_with({".text": b"\xc3"})), keep_sm=90)
    with pytest.raises(slim_module.NotAFatbin, match="not a 64-bit"):
        slim_module.zero_other_architectures(bytearray(b"MZ" + bytes(100)), keep_sm=90)


def test_slim_drops_what_python_never_loads_and_keeps_the_rest(tmp_path):
    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    image, _ = provider_image()
    (capi / "libonnxruntime_providers_cuda.so").write_bytes(image)
    for name in ("libonnxruntime.so.1.31.1", "libonnxruntime_providers_tensorrt.so",
                 "libonnxruntime_providers_shared.so", "onnxruntime_pybind11_state.so", "_pybind_state.py"):
        (capi / name).write_bytes(b"x")
    (tmp_path / "onnxruntime" / "transformers").mkdir()
    (tmp_path / "onnxruntime" / "transformers" / "convert.py").write_text("")
    report = slim_module.slim(tmp_path, keep_sm=90)
    assert report.zeroed == {80: 32, 120: 24}
    assert sorted(p.name for p in capi.iterdir()) == [
        "_pybind_state.py", "libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so",
        "onnxruntime_pybind11_state.so"]
    assert not (tmp_path / "onnxruntime" / "transformers").exists()
    for site in (tmp_path, fresh := tmp_path / "fresh"):  # a refusal leaves every file as it was
        if site is fresh:
            (fresh / "onnxruntime" / "capi").mkdir(parents=True)
            (fresh / "onnxruntime" / "capi" / "libonnxruntime_providers_cuda.so").write_bytes(provider_image()[0])
            (fresh / "onnxruntime" / "capi" / "libonnxruntime.so.1.31.1").write_bytes(b"x")
        before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
        with pytest.raises(slim_module.NotAFatbin, match="no sm_75 code"):
            slim_module.slim(site, keep_sm=75)
        assert {p: p.read_bytes() for p in site.rglob("*") if p.is_file()} == before
    with pytest.raises(FileNotFoundError, match="no CUDA provider"):
        slim_module.slim(tmp_path / "elsewhere", keep_sm=90)
