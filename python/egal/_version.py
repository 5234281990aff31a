"""The package version, written here only: pyproject.toml reads it at build time (scikit-build-core's
regex provider), and `egal.__version__` and `egal --version` import it."""

__version__ = "0.1.0"
