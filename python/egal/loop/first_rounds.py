"""Round 0 of a seed, trained once and shared by its strategies (in one process, or across worker processes
through a folder)."""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass

from .. import _json as strict_json
from .._atomic import replaced_atomically
from .folder import file_lock, write_json_atomic


class FirstRounds:
    """Round 0 of each seed, shared by its strategies: (model, TrainHistory, test metrics, pool scores by alpha).

    In memory by default. With `folder`, also kept there (the model file and a JSON record per seed, written
    under a per-seed lock), so that worker processes train each seed's round 0 once between them: whoever
    holds the lock first trains it, the others wait and load it.
    """

    def __init__(self, folder: str | None = None, device: str = "cpu"):
        self.folder, self.device = folder, device
        self._memory: dict = {}

    @contextlib.contextmanager
    def hold(self, seed: int):
        """A slot whose .value is the seed's round 0 or None; set it to share a round 0 just trained."""
        lock = contextlib.nullcontext() if self.folder is None else file_lock(self._path(seed, ".lock"))
        with lock:
            value = self._memory.get(seed)
            if value is None and self.folder is not None:
                value = self._load(seed)
            slot = _Slot(value)
            yield slot
            if slot.value is not None:
                if value is None and self.folder is not None:
                    self._save(seed, slot.value)
                self._memory[seed] = slot.value

    def keep_only(self, seed: int) -> None:
        self._memory = {k: v for k, v in self._memory.items() if k == seed}

    def _path(self, seed: int, suffix: str) -> str:
        return os.path.join(self.folder, f"seed{int(seed)}{suffix}")

    def _save(self, seed: int, value) -> None:
        from ..models import save_model

        model, history, metrics, _ = value
        with replaced_atomically(self._path(seed, ".pt")) as tmp:
            save_model(model, tmp)
        write_json_atomic(self._path(seed, ".json"), {"history": asdict(history), "metrics": metrics})

    def _load(self, seed: int):
        from ..models import load_model
        from ..train import TrainHistory

        if not (os.path.isfile(self._path(seed, ".pt")) and os.path.isfile(self._path(seed, ".json"))):
            return None
        try:
            with open(self._path(seed, ".json")) as f:
                record = json.load(f)
            record = strict_json.nan_for_null(record)  # a NaN metric (a Dice without ROIs) was written as null
            return (load_model(self._path(seed, ".pt"), map_location=self.device),
                    TrainHistory(**record["history"]), record["metrics"], {})
        except (OSError, ValueError, KeyError, TypeError):  # damaged (a copy cut short): trained again, replaced
            return None


@dataclass
class _Slot:
    value: object

