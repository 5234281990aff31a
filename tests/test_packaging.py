"""The conventions users and tools rely on: one version, typed package markers, a stub that matches
the compiled module, the license in the metadata."""
import ast
import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pytest

import egal
from egal import _core
from egal.cli import main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(egal.__file__).resolve().parent


def test_the_version_is_written_once_and_agrees_everywhere(capsys):
    pyproject = (ROOT / "pyproject.toml").read_text()
    # No static version in [project]: scikit-build-core reads it from egal/_version.py at build time.
    assert re.search(r'^dynamic = \["version"\]$', pyproject, re.MULTILINE)
    assert not re.search(r"^version\s*=", pyproject, re.MULTILINE)
    assert re.search(r'^input = "python/egal/_version.py"$', pyproject, re.MULTILINE)
    assert egal.__version__ == importlib.metadata.version("egal-al")
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"egal {egal.__version__}"


def test_the_license_is_in_the_metadata():
    metadata = importlib.metadata.metadata("egal-al")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_the_package_is_marked_typed_and_ships_a_stub_of_the_compiled_module():
    assert (PACKAGE / "py.typed").is_file()
    assert (PACKAGE / "_core.pyi").is_file()


def _stub_functions() -> dict:
    tree = ast.parse((PACKAGE / "_core.pyi").read_text())
    return {node.name: [a.arg for a in node.args.args] for node in tree.body if isinstance(node, ast.FunctionDef)}


def _compiled_functions() -> dict:
    functions = {}
    for name in dir(_core):
        if name.startswith("_") or not callable(getattr(_core, name)):
            continue
        # pybind11 writes the signature as the docstring's first line: name(arg: type, ...) -> type
        signature = getattr(_core, name).__doc__.splitlines()[0]
        arguments = signature[signature.index("(") + 1:signature.rindex(") ->")]
        functions[name] = re.findall(r"(?:^|, )(\w+):", arguments)
    return functions


def test_the_stub_names_every_function_and_argument_of_the_compiled_module():
    assert _stub_functions() == _compiled_functions()


def test_the_stub_names_every_constant_of_the_compiled_module():
    tree = ast.parse((PACKAGE / "_core.pyi").read_text())
    stub = {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign)}
    compiled = {name for name in dir(_core) if not name.startswith("_") and isinstance(getattr(_core, name), int)}
    assert stub == compiled == {"STATUS_NON_FINITE", "STATUS_BAD_MASK"}


def test_the_compiled_scorer_refuses_a_roi_kind_it_does_not_know():
    # Before, any other string was read as "projected": a typo scored masks as ROI weights.
    maps = np.zeros((1, 1, 2, 2), np.float32)
    logits, masks = np.zeros((1, 2), np.float32), np.zeros((1, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="roi_kind must be 'masks', 'boxes' or 'projected', got 'mask'"):
        _core.score(maps.__dlpack__(), maps.__dlpack__(), None, logits.__dlpack__(), "mask", masks.__dlpack__(),
                    None, None, None, 2, 2, 0.5, False)


def test_import_egal_is_light_and_every_name_and_submodule_is_still_there():
    # `import egal` loads its names on first use (so that a Ctrl-C while numpy loads reaches egal.cli's handler);
    # what it exported, and its submodules as attributes, are there as when it imported them at once.
    import subprocess
    import sys

    code = (
        "import sys, egal\n"
        "heavy = sorted(m for m in ('numpy', 'pyarrow', 'egal._core', 'torch') if m in sys.modules)\n"
        "assert heavy == [], heavy\n"
        "assert all(getattr(egal, name) is not None for name in egal.__all__)\n"
        "assert egal._core.cpu_isa() and egal.reference.rasterise_boxes and egal.pipeline.score_pool\n"
        "assert set(egal.__all__) <= set(dir(egal))\n"
        "try:\n"
        "    egal.no_such_name\n"
        "except AttributeError as exc:\n"
        "    assert str(exc) == \"module 'egal' has no attribute 'no_such_name'\"\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
