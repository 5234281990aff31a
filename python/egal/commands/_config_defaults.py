"""Help texts that show the defaults of the experiment config dataclasses (egal.loop.config's DataConfig,
LoopConfig, ShortcutConfig and egal.train.TrainConfig), so that no default is written twice.

An option of `egal train` / `egal simulate` defaults to None (only options given on the command line
override a config file), so argparse's %(default)s cannot show the value that applies. A help text
writes {SECTION.FIELD} instead, or {SECTION.FIELD:FORMAT} with a FORMAT of `FORMATS`, and
`ConfigDefaultsFormatter` fills it in when the help is printed. Not earlier: the config modules
import PyTorch, which building the parser (for `egal score` too) must not need.
"""
from __future__ import annotations

import argparse
import re

PLACEHOLDER = re.compile(r"\{(data|train|loop|shortcut)\.(\w+)(?::(\w+))?\}")


def _seeds(value) -> str:
    """5 for seeds (0, 1, 2, 3, 4), as --seeds takes a count; the list otherwise."""
    return str(len(value)) if tuple(value) == tuple(range(len(value))) else ",".join(map(str, value))


FORMATS = {
    "hw": lambda value: f"{value[0]}x{value[1]}",  # (128, 128) -> 128x128, as --input-size takes it
    "list": lambda value: ",".join(map(str, value)),  # ("random", "entropy") -> random,entropy
    "seeds": _seeds,
}


def config_default(section: str, name: str):
    """The default of one field of ExperimentConfig's `section` (data, train, loop or shortcut)."""
    from ..loop.config import ExperimentConfig

    return getattr(getattr(ExperimentConfig(), section), name)


def fill_defaults(text: str) -> str:
    """`text` with each {section.field[:format]} replaced by that default (None shows as none)."""
    def value(match) -> str:
        section, name, fmt = match.groups()
        try:
            default = config_default(section, name)
        except ImportError:  # no PyTorch here: egal train / simulate cannot run anyway
            return f"{section}.{name} of the config"
        shown = "none" if default is None else FORMATS[fmt](default) if fmt else str(default)
        return shown.replace("%", "%%")  # argparse %-formats the help text next

    return PLACEHOLDER.sub(value, text)


class ConfigDefaultsFormatter(argparse.HelpFormatter):
    """Fills in {section.field} in help texts when the help is printed (see the module docstring)."""

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        return fill_defaults(text) if text else text
