"""Names of a package imported on first use (PEP 562), so that `import egal` and `egal --help` stay light."""
from __future__ import annotations

import importlib
import importlib.util


def lazy_exports(package: str, exports: dict[str, str]):
    """(__getattr__, __dir__) for `package`, whose names in `exports` ({name: submodule}) load on first use."""

    def __getattr__(name):
        module = exports.get(name)
        if module is not None:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        # A submodule, as `import egal; egal.reference` found it when the package imported it eagerly.
        if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return __getattr__, __dir__
