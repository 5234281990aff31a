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


def _all_parsers():
    """Every command's parser and every `egal pool` subcommand's, by name."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in commands.choices.items():
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from ((f"{name} {sub}", p) for sub, p in action.choices.items())


def test_every_option_says_what_it_is_not_only_its_default():
    for name, parser in _all_parsers():
        for action in parser._actions:
            if action.option_strings and action.help not in (None, argparse.SUPPRESS):
                said = re.sub(r"\(default: .*\)$", "", action.help).strip()
                assert said, f"egal {name} {action.option_strings[0]}: its help is its default alone"


def test_the_help_shows_default_numbers_and_every_images_as_mode():
    from egal.onnx.graph import IR_VERSION, OPSET

    export_help = " ".join(subcommand("export").format_help().split())
    assert f"ONNX opset (default: {OPSET})" in export_help and f"(default: {IR_VERSION})" in export_help
    assert "egal.onnx." not in export_help
    pool = dict(_all_parsers())
    for name in ("pool from-vindr-cxr", "pool from-siim-covid"):
        images_as = next(a for a in pool[name]._actions if "--images-as" in a.option_strings)
        assert images_as.default == "png" and "png: each DICOM decoded" in images_as.help, name
    images_as = next(a for a in pool["pool from-folders"]._actions if "--images-as" in a.option_strings)
    assert "png:" not in images_as.help  # a mode it does not have is not described
