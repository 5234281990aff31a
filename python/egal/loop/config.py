"""An experiment, fully described: data and split, training, and the active-learning loop.

Read from TOML (or YAML) with sections [data], [train] (with an optional
[train.augment_settings]), [loop] and, for the shortcut benchmark, [shortcut];
see configs/*.toml. Together with a seed
it determines a run completely.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .._checks import check_int, check_threads, is_finite_real, is_int, is_real
from ..combine import DEFAULT_ALPHA
from ..errors import EgalError
from ..pool.labels import LABEL_COLUMN
from ..train.config import TrainConfig, check_known_settings
from .scoring import INFERENCE_BATCH
from .shortcut import ShortcutConfig
from .strategies import parse_strategies

# A run's torch seed is seed * 1000 + round (egal.loop.rounds): it must fit in 64 bits.
MAX_SEED = 2**32
MAX_SEED_COUNT = 10_000


@dataclass(frozen=True)
class DataConfig:
    path: str = ""
    label_column: str = LABEL_COLUMN
    group_column: str | None = None  # patient id / patient-wise fold; None: split by rows
    test_groups: tuple[str, ...] = ()  # groups that form the test set; empty: draw test_fraction of groups
    test_fraction: float = 0.2
    split_seed: int = 0  # the test set is fixed across seeds
    cache_dir: str | None = None  # decoded arrays are kept here (.npz) between runs

    def __post_init__(self):
        groups = self.test_groups
        if isinstance(groups, np.ndarray):
            groups = groups.tolist()  # (a 0-d array: one group)
        if groups is None or isinstance(groups, str) or not isinstance(groups, (list, tuple, set, frozenset)):
            groups = () if groups is None else (groups,)  # one group (a name, a number, a date), not its characters
        if any(isinstance(g, (bool, np.bool_, bytes, Mapping, list, tuple, set)) or g is None for g in groups):
            shown = " ".join(repr(self.test_groups).split())  # (an array's repr spans lines)
            raise EgalError(f"test_groups must be group names (strings, numbers), got {shown}")
        object.__setattr__(self, "test_groups", tuple(str(g) for g in groups))
        for name in ("path", "label_column"):
            if not isinstance(getattr(self, name), str):
                raise EgalError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("group_column", "cache_dir"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise EgalError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not is_real(self.test_fraction) or not 0 < self.test_fraction < 1:
            raise EgalError(f"test_fraction must lie in (0, 1), got {self.test_fraction!r}")
        check_int(self.split_seed, "split_seed", minimum=0)


@dataclass(frozen=True)
class LoopConfig:
    strategies: tuple[str, ...] = ("random", "entropy", "egal")
    alpha: float = DEFAULT_ALPHA  # the alpha of plain "egal"
    alpha_grid: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    init: int = 150  # class-balanced seed set
    rounds: int = 7
    budget: int = 60  # rows annotated per round
    score_batch_size: int = INFERENCE_BATCH  # rows per forward pass when scoring the pool and the test set
    threads: int | None = None  # torch CPU threads (per worker); None: torch's default, or cores / workers
    workers: int = 1  # processes sharing out the (strategy, seed) runs (egal.loop.workers)

    def __post_init__(self):
        strategies = self.strategies.split(",") if isinstance(self.strategies, str) else self.strategies
        if not isinstance(strategies, (list, tuple)) or not all(isinstance(s, str) for s in strategies):
            raise EgalError("strategies must be names (a list, or one comma-separated string), got "
                            f"{self.strategies!r}")
        object.__setattr__(self, "strategies", tuple(s.strip() for s in strategies if s.strip()))
        grid = (self.alpha_grid,) if is_real(self.alpha_grid) else self.alpha_grid
        if not isinstance(grid, (list, tuple)) or not all(is_finite_real(a) for a in grid):
            raise EgalError(f"alpha_grid must be a list of numbers in [0, 1], got {self.alpha_grid!r}")
        object.__setattr__(self, "alpha_grid", tuple(float(a) for a in grid))
        seeds = self.seeds
        if is_int(seeds) and 0 <= seeds <= MAX_SEED_COUNT:
            seeds = tuple(range(seeds))
        elif isinstance(seeds, (list, tuple)) and all(is_int(s) and 0 <= s < MAX_SEED for s in seeds):
            seeds = tuple(int(s) for s in seeds)
        else:
            raise EgalError(f"seeds must be a count (5: seeds 0-4) or a list of integer seeds from 0 to "
                            f"{MAX_SEED - 1}, got {self.seeds!r}")
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:  # a seed's runs would be done twice and counted twice in the mean over seeds
            raise EgalError(f"seeds lists {', '.join(map(str, repeated))} more than once: {list(seeds)}")
        object.__setattr__(self, "seeds", seeds)
        parse_strategies(self.strategies, alpha=self.alpha, alpha_grid=self.alpha_grid)  # validates
        for name in ("init", "budget", "workers", "score_batch_size"):
            check_int(getattr(self, name), name)
        if self.threads is not None:
            check_threads(self.threads)
        check_int(self.rounds, "rounds", minimum=0)
        if not seeds:
            raise EgalError("at least one seed is needed")

    def strategy_objects(self):
        return parse_strategies(self.strategies, alpha=self.alpha, alpha_grid=self.alpha_grid)


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    shortcut: ShortcutConfig = field(default_factory=ShortcutConfig)

    def to_dict(self) -> dict:
        d = {"data": asdict(self.data), "train": self.train.to_dict(), "loop": asdict(self.loop),
             "shortcut": asdict(self.shortcut)}
        d["data"]["test_groups"] = list(self.data.test_groups)
        for key in ("strategies", "alpha_grid", "seeds"):
            d["loop"][key] = list(d["loop"][key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ExperimentConfig:
        unknown = sorted(str(k) for k in set(d) - {"data", "train", "loop", "shortcut"})
        if unknown:
            raise EgalError(f"unknown config section(s) {unknown}; expected data, train, loop, shortcut")
        return cls(_build(DataConfig, d.get("data", {}), "data"), TrainConfig.from_dict(dict(d.get("train", {}))),
                   _build(LoopConfig, d.get("loop", {}), "loop"),
                   _build(ShortcutConfig, d.get("shortcut", {}), "shortcut"))

    def identity(self) -> dict:
        """What must match for results in one output folder to be comparable: everything but
        which strategies and seeds are run, and how they run (threads, workers, batch size for scoring)."""
        d = self.to_dict()
        if not self.shortcut.enabled:
            d.pop("shortcut")  # folders written before the benchmark existed stay resumable
        for key in ("strategies", "alpha", "alpha_grid", "seeds", "threads", "workers", "score_batch_size"):
            d["loop"].pop(key)
        d["data"].pop("cache_dir")
        d["train"].pop("device")
        return comparable_identity(d)

    def with_overrides(self, data=None, train=None, loop=None, shortcut=None) -> ExperimentConfig:
        for section, values in (("data", data), ("train", train), ("loop", loop), ("shortcut", shortcut)):
            check_known_settings(type(getattr(self, section)), values or {}, f"the {section} overrides")
        return ExperimentConfig(replace(self.data, **(data or {})), replace(self.train, **(train or {})),
                                replace(self.loop, **(loop or {})), replace(self.shortcut, **(shortcut or {})))


# Train settings added after folders were written with results: at their default they are left out of an
# identity, so that such folders (whose recorded identity lacks them) stay resumable.
LATER_TRAIN_DEFAULTS = (("precision", "fp32"), ("channels_last", False), ("trainable_from", None))


def comparable_identity(identity: dict) -> dict:
    """An identity (ExperimentConfig.identity, or one a folder recorded) in the form two are compared in: the
    later train settings at their defaults left out, and train.seed, which egal simulate does not use (each run
    trains with 1000 x seed + round), left out too. Changes `identity` in place, and returns it."""
    train = identity.get("train", {})
    for key, default in LATER_TRAIN_DEFAULTS:
        if key in train and train[key] == default:
            train.pop(key)
    train.pop("seed", None)
    return identity


def load_config(path) -> ExperimentConfig:
    """Read a TOML (.toml) or YAML (.yaml/.yml) experiment config; relative data paths are
    taken relative to the config file's folder."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    raw = _parse(path)
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise EgalError(f"config {path!r}: expected sections ([data], [train], [loop], [shortcut]) of settings, "
                        f"got {type(raw).__name__ if not isinstance(raw, dict) else 'a setting outside a section'}")
    data = raw.get("data", {})
    for key in ("path", "cache_dir"):
        if data.get(key) and not os.path.isabs(data[key]):
            data[key] = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), data[key]))
    try:
        return ExperimentConfig.from_dict(raw)
    except TypeError as exc:
        raise EgalError(f"config {path!r}: {exc}") from exc


def _parse(path: str):
    """The config file's contents; EgalError naming the file and the parser's reason (with its line) when it
    is not valid TOML, YAML or JSON, or not text."""
    try:
        if path.endswith(".toml"):
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (a dependency there)
                import tomli as tomllib

            with open(path, "rb") as f:
                return tomllib.load(f)
        if path.endswith((".yaml", ".yml")):
            import yaml

            with open(path, encoding="utf-8") as f:
                try:
                    return yaml.safe_load(f) or {}
                except yaml.YAMLError as exc:
                    raise ValueError(str(exc).replace("\n", " ")) from None
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise EgalError(f"config {path!r} cannot be read: {exc}") from None
    raise EgalError(f"config {path!r}: use a .toml, .yaml/.yml or .json file")


def _build(cls, values: dict, section: str):
    check_known_settings(cls, values, f"[{section}]")
    return cls(**values)
