"""The help of egal train / simulate shows the defaults of the config dataclasses, never hand-written copies."""
import argparse
import re

import pytest

from egal.cli import build_parser
from egal.commands._config_defaults import PLACEHOLDER, fill_defaults

torch = pytest.importorskip("torch")

from egal.loop.config import ExperimentConfig  # noqa: E402

# Options whose default is a behaviour, not a value of the config (None there).
DESCRIBED = {"--trainable-from": "train the whole backbone", "--threads": "torch's choice",
             "--pool": "the --config file's [data] path"}


def subcommand(name: str) -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


@pytest.mark.parametrize("command", ["train", "simulate"])
def test_every_default_in_the_help_is_read_from_the_config(command):
    for action in subcommand(command)._actions:
        if action.help and "default:" in action.help and "%(default)s" not in action.help:
            option = action.option_strings[0]
            assert action.default is None, f"{option} would override the config file"
            assert re.search(r"\{\w+\.\w+(:\w+)?\}", action.help) or DESCRIBED.get(option) in action.help, \
                f"{option}: a default written by hand: {action.help!r}"


def test_the_help_shows_the_values_of_the_config_dataclasses():
    config = ExperimentConfig()
    train_help, simulate_help = subcommand("train").format_help(), subcommand("simulate").format_help()
    flat = " ".join(simulate_help.split())  # argparse wraps lines
    assert f"training epochs (default: {config.train.epochs})" in " ".join(train_help.split())
    assert f"(default: {config.train.input_size[0]}x{config.train.input_size[1]})" in flat
    assert f"rows annotated per round (default: {config.loop.budget})" in flat
    assert f"(default: {','.join(config.loop.strategies)})" in flat
    assert f"(default: {len(config.loop.seeds)})" in flat and tuple(config.loop.seeds) == tuple(range(5))
    assert f"(default: {config.shortcut.marker})" in flat and f"(default: {config.data.test_fraction})" in flat
    assert not PLACEHOLDER.search(train_help) and not PLACEHOLDER.search(simulate_help)  # every one filled in


def test_placeholders_follow_the_config(monkeypatch):
    import egal.commands._config_defaults as defaults

    monkeypatch.setattr(defaults, "config_default", lambda section, name: {"epochs": 7, "seeds": (3, 9)}[name])
    assert fill_defaults("(default: {train.epochs})") == "(default: 7)"
    assert fill_defaults("(default: {loop.seeds:seeds})") == "(default: 3,9)"
