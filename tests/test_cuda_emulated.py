"""The CUDA backend's kernels on the CPU: cpp/src/*.cu (and the *.cuh they include) compiled as C++ against
tests/cuda_emulation/cuda_runtime.h (one OS thread per CUDA thread, barriers for __syncthreads and warp shuffles) and
run against the CPU backend by tests/cuda_emulation/score_against_cpu.cpp, with every pass of the backend.

This checks the kernels' logic where no GPU is: their index arithmetic, tiles, reductions and barriers, values read
before they are written (memory starts as NaN), and vector loads that are not aligned (UBSan). It cannot see the
rest of what hardware shows (the memory model, resources, speed): tests/test_scorer_cuda.py on a GPU
(bench/gpu_check.sh) is the test of record.
"""
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "cpp" / "src"
EMULATION = Path(__file__).resolve().parent / "cuda_emulation"
COMPILER = shutil.which("g++")

pytestmark = pytest.mark.skipif(COMPILER is None, reason="needs g++ (C++20) to compile the emulated kernels")

# The two pieces of CUDA syntax plain C++ cannot take: kernel<<<grid, block, shared, stream>>>(args) and
# extern __shared__ T name[].
LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[\w, ]*>)?)<<<(.*)>>>\(")
DYNAMIC_SHARED = re.compile(r"extern __shared__ (\w+) (\w+)\[\];")
ALIGNMENT_CHECK = ["-fsanitize=alignment", "-fno-sanitize-recover=alignment"]


def as_cpp(cuda_source: str) -> str:
    text = LAUNCH.sub(r"emu::launch(\1, \2)(", cuda_source)
    text = DYNAMIC_SHARED.sub(r"\1* \2 = emu::dynamic_shared<\1>();", text)
    assert "<<<" not in text and "extern __shared__" not in text, "CUDA syntax the emulation does not translate"
    return text


def test_the_translation_takes_each_launch_and_dynamic_shared_array():
    assert as_cpp("  kernel<T><<<blocks, kThreads, static_cast<size_t>(n), stream>>>(args, x);") == \
        "  emu::launch(kernel<T>, blocks, kThreads, static_cast<size_t>(n), stream)(args, x);"
    assert as_cpp("extern __shared__ int32_t ranges[];  // [N, 4]") == \
        "int32_t* ranges = emu::dynamic_shared<int32_t>();  // [N, 4]"


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    build = tmp_path_factory.mktemp("cuda_emulated")
    units = []
    for cu in sorted(SOURCES.glob("*.cu")):
        unit = build / f"{cu.stem}_emulated.cpp"
        unit.write_text(as_cpp(cu.read_text()))
        units.append(unit)
    # Their headers too, beside them, where the translated sources' #include "..." finds them first.
    for cuh in sorted(SOURCES.glob("*.cuh")):
        (build / cuh.name).write_text(as_cpp(cuh.read_text()))
    units += [p for p in sorted(SOURCES.glob("*.cpp")) if p.name != "cuda_unavailable.cpp"]
    units.append(EMULATION / "score_against_cpu.cpp")
    # The emulation's cuda_runtime.h comes first, so that the kernels include it, not the toolkit's.
    flags = ["-std=c++20", "-O1", "-pthread", f"-I{EMULATION}", f"-I{ROOT / 'cpp' / 'include'}", f"-I{SOURCES}"]

    def compile_unit(unit):
        obj = build / f"{unit.stem}.o"
        # The kernels with UBSan's alignment check: a vector load from an address it does not fit stops the run,
        # as it would fault on a GPU.
        checks = ALIGNMENT_CHECK if unit.name.endswith("_emulated.cpp") else []
        done = subprocess.run([COMPILER, *flags, *checks, "-c", str(unit), "-o", str(obj)], capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{unit.name} does not compile against the emulation:\n{done.stderr[-4000:]}"
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        objects = list(pool.map(compile_unit, units))
    program = build / "score_against_cpu"
    done = subprocess.run([COMPILER, "-pthread", *ALIGNMENT_CHECK, *map(str, objects), "-o", str(program)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return program


def test_every_cuda_pass_matches_the_cpu_backend(emulated):
    done = subprocess.run([str(emulated)], capture_output=True, text=True, timeout=900)
    lines = done.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL") or line.startswith("    ")]
    assert done.returncode == 0 and lines and lines[-1] == "0 failure(s)", "\n".join(failed or lines[-20:]) + \
        done.stderr[-2000:]
    # Every case ran with every pass: four pairs of passes, the same cases.
    checked = [line for line in lines if line.startswith("ok")]
    assert len(checked) == 4 * sum(" projection + channel-warps" in line for line in checked) > 0
