"""What every importer's options share, and the checks they run when made.

Each importer has a frozen dataclass of options (BratsOptions, VindrOptions, ...) whose field
defaults are the defaults of its Python function and of its `egal pool from-...` command (the
command reads them with `default_of`). Options are checked when made: a bad value raises a
ValueError or TypeError naming the field, which the command renames to its flag.
"""
from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

from .._checks import bad_argument, check_bool, check_choice
from ..errors import EgalError
from .errors import SourceError

IMAGES_AS = ("bytes", "paths")


def default_of(options_class, name: str):
    """The default of one field of an options dataclass (what the command line shows and uses)."""
    for f in fields(options_class):
        if f.name == name:
            if f.default is MISSING:
                raise KeyError(f"{options_class.__name__}.{name} has no default")
            return f.default
    raise KeyError(f"{options_class.__name__} has no field {name!r}")


def check_common(options, images_as_choices=IMAGES_AS) -> None:
    """source and out given, images_as one of the choices, overwrite and progress booleans."""
    if not str(options.out or ""):
        raise bad_argument(EgalError, "out", "must name the Parquet file to write")
    check_choice(options.images_as, "images_as", images_as_choices)
    check_bool(options.overwrite, "overwrite")
    check_bool(options.progress, "progress")


def existing_folder(path, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise SourceError(f"{what} {str(folder)!r} {state}")
    return folder
