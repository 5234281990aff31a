"""An experiment folder (egal simulate --out): the names of its files, its locks, and the rules that keep one
experiment's results in it and nothing else."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from .. import _json as strict_json
from .._atomic import replaced_atomically
from ..errors import EgalError
from ..pool.decode import DECODE_RULES

try:
    import fcntl
except ImportError:  # Windows: no report lock, so run seeds in parallel into separate folders there
    fcntl = None
from ..pool.digest import content_digest
from .config import ExperimentConfig, comparable_identity

RUNS_DIR = "runs"
ROUND0_DIR = "round0"  # the shared round 0 of worker processes (egal.loop.first_rounds)
CONFIG_FILE = "config.json"
# The report's files (egal.loop.report), listed on the experiment page.
ROUNDS_CSV = "rounds.csv"
ROUNDS_JSON = "rounds.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
PAIRED_CSV = "paired.csv"
CURVES_PNG = "learning_curves.png"
SHORTCUT_PNG = "shortcut.png"
CONFIG_LOCK = ".config.lock"  # held while config.json is checked or written
ACTIVE_LOCK = ".active.lock"  # held (shared) by every simulate running in the folder
REPORT_LOCK = ".report.lock"  # held while the report is written
LOCK_FILES = (CONFIG_LOCK, ACTIVE_LOCK, REPORT_LOCK)


def check_folder_path(name: str, folder: str) -> None:
    """EgalError, before anything is written, when `folder` or a folder on the way to it is a file or a dangling
    symbolic link (the folder could not be made: an OS error after the output folder was begun). Component by
    component, as the OS walks it: "afile/../x" goes through afile."""
    parts = Path(folder).parts
    for end in range(1, len(parts) + 1):
        prefix = os.path.join(*parts[:end])
        if os.path.lexists(prefix) and not os.path.exists(prefix):
            raise EgalError(f"{name} {folder!r}: {prefix!r} is a symbolic link to nothing; choose a folder")
        if os.path.exists(prefix) and not os.path.isdir(prefix):
            where = "is a file" if end == len(parts) else f"goes through {prefix!r}, a file"
            raise EgalError(f"{name} {folder!r} {where}, not a folder: it is left as it is; choose a folder")


def run_path(out_dir, strategy_name: str, seed: int) -> str:
    return os.path.join(out_dir, RUNS_DIR, f"{strategy_name}__seed{seed}.json")


@contextlib.contextmanager
def report_lock(out_dir: str):
    """Held while the report is written. Seeds can run in parallel as processes with disjoint --seeds
    and one --out: each writes its own run files, and the report of whichever ends last holds them all."""
    if fcntl is None:
        yield
        return
    with file_lock(os.path.join(out_dir, REPORT_LOCK)):
        yield


def _differences(before: dict, now: dict, prefix: str = "") -> list[str]:
    """What differs between two configuration identities, key by key ("loop.budget: 5 there, 6 here")."""
    out = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key, "(absent)"), now.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} there, {b!r} here")
    return out


def _holds_results(out_dir: str) -> bool:
    """Whether a run or a shared round 0 has been written into out_dir."""
    for folder, suffix in ((RUNS_DIR, ".json"), (ROUND0_DIR, ".json")):
        path = os.path.join(out_dir, folder)
        if os.path.isdir(path) and any(n.endswith(suffix) and ".tmp-" not in n for n in os.listdir(path)):
            return True
    return False


@contextlib.contextmanager
def experiment_folder(config: ExperimentConfig, out_dir: str):
    """Held while a simulate uses out_dir: its configuration checked (or written) under a lock, then a shared
    lock on ACTIVE_LOCK for as long as it runs, so that another simulate can tell a running experiment from
    one whose first start failed (the only kind whose folder takes a new configuration)."""
    if fcntl is None:  # no locks: the check alone
        yield _check_or_write_config(config, out_dir, folder_idle=lambda: True)
        return
    # Two simulates started at one instant with different configurations would otherwise both find the folder
    # free, both pass, and write their runs into one table.
    with file_lock(os.path.join(out_dir, CONFIG_LOCK)):
        warning = _check_or_write_config(config, out_dir, folder_idle=lambda: _no_other_simulate(out_dir))
        active = open(os.path.join(out_dir, ACTIVE_LOCK), "a")
        fcntl.flock(active, fcntl.LOCK_SH)
    try:
        yield warning
    finally:
        active.close()  # releases the lock


def _no_other_simulate(out_dir: str) -> bool:
    """Whether no other simulate holds out_dir's ACTIVE_LOCK (called under CONFIG_LOCK, before this one takes it)."""
    with open(os.path.join(out_dir, ACTIVE_LOCK), "a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(probe, fcntl.LOCK_UN)
    return True


def _check_or_write_config(config: ExperimentConfig, out_dir: str, folder_idle) -> str | None:
    """The folder holds this experiment's results or none: the same configuration and the same pool content
    (a pool edited in place would mix two experiments in one table), and no files of anything else.
    folder_idle(): whether no other simulate is using the folder now. Returns a warning when the folder's runs
    were made by an egal that decoded images by other rules (egal.pool.decode.DECODE_RULES)."""
    path = os.path.join(out_dir, CONFIG_FILE)
    pool = config.data.path
    digest = content_digest(pool) if pool and os.path.exists(pool) else None
    rules, warning = DECODE_RULES, None
    if os.path.isfile(path):
        try:
            with open(path) as f:
                stored = json.load(f)
            if not isinstance(stored, dict):
                raise ValueError(f"a JSON {type(stored).__name__}, not an object")
            identity = stored.get("identity")
            if not (identity is None or (isinstance(identity, dict)
                                         and all(isinstance(v, dict) for v in identity.values()))):
                raise ValueError("its identity is not a table of sections")
        except (OSError, ValueError) as exc:
            raise EgalError(f"{path!r} is damaged ({exc}): use another --out folder") from None
        before = comparable_identity(stored.get("identity") or {})
        now = json.loads(json.dumps(config.identity()))
        older = content_digest(pool, with_files=False) if digest else None  # how an egal before 2026-11-27 had it
        if digest and stored.get("pool_digest") in (digest, older):  # the same pool content, wherever the file is now
            for identity in (before, now):
                identity.get("data", {}).pop("path", None)
        changed = _differences(before, now)
        listed = f"{'; '.join(changed[:4])}{'; ...' if len(changed) > 4 else ''}"
        if changed and _holds_results(out_dir):
            raise EgalError(
                f"{out_dir!r} holds results of a different experiment configuration ({listed}; see {path}): use "
                "another --out folder, or the same settings to resume")
        if changed and not folder_idle():
            raise EgalError(
                f"another egal simulate is running in {out_dir!r} with a different experiment configuration "
                f"({listed}): use another --out folder, or the same settings to run other seeds beside it")
        if not changed:  # (else a folder whose first start failed before any result: it takes this configuration)
            # An egal before 2026-11-27 recorded a pool of image files by its Parquet bytes alone: the same pool.
            if digest and stored.get("pool_digest") not in (None, digest, older):
                raise EgalError(f"the pool {pool!r} has changed since the runs in {out_dir!r} were made (its "
                                "content differs): use another --out folder, or the pool those runs were made with")
            digest = digest or stored.get("pool_digest")
            if _holds_results(out_dir):  # the rules its runs were made by stay recorded (None: before the record)
                rules = stored.get("decode_rules")
                if rules != DECODE_RULES:
                    warning = (f"the runs in {out_dir!r} were made by an egal that decoded images by other rules "
                               f"({'not recorded' if rules is None else f'version {rules}'}; now version "
                               f"{DECODE_RULES}, egal.pool.decode says what changed): new runs may see some images "
                               "otherwise than the old ones did. A pool of 8-bit images without EXIF orientation "
                               "decodes the same; for others, start a new --out folder")
    else:
        refuse_foreign_folder(out_dir)  # again under the lock: files may have come since
    settings = config.to_dict()
    if os.path.isfile(path) and not changed:
        _add_earlier_runs(settings["loop"], stored.get("config"))
    write_json_atomic(path, {"identity": config.identity(), "config": settings, "pool_digest": digest,
                              "decode_rules": rules})
    return warning


def _add_earlier_runs(loop: dict, earlier) -> None:
    """The seeds and strategies of the folder's earlier simulates (other --seeds or --strategies with the same
    settings) kept in the config written now, so that config.json names every run the folder was asked for."""
    before = earlier.get("loop") if isinstance(earlier, dict) else None
    if not isinstance(before, dict):
        return
    seeds, strategies = before.get("seeds"), before.get("strategies")
    if isinstance(seeds, list) and all(isinstance(s, int) for s in seeds):
        loop["seeds"] = sorted(set(seeds) | set(loop["seeds"]))
    if isinstance(strategies, list) and all(isinstance(s, str) for s in strategies):
        loop["strategies"] = list(dict.fromkeys([*strategies, *loop["strategies"]]))


def refuse_foreign_folder(out_dir: str) -> None:
    """EgalError when out_dir exists and holds files of something else than an egal simulate (it has no
    config.json and files other than egal's own: the lock files, an empty runs/, config.json's temporary name,
    which another simulate may be writing at this moment where there are no locks)."""
    if not os.path.isdir(out_dir) or os.path.isfile(os.path.join(out_dir, CONFIG_FILE)):
        return
    runs, own = os.path.join(out_dir, RUNS_DIR), (CONFIG_FILE,) + LOCK_FILES
    foreign = [n for n in os.listdir(out_dir)
               if not ((n == RUNS_DIR and os.path.isdir(runs) and not os.listdir(runs)) or n in own or ".tmp-" in n)]
    if foreign:
        raise EgalError(f"--out {out_dir!r} holds files ({', '.join(sorted(foreign)[:5])}) but no egal simulate "
                        "config.json: choose a new or empty folder, which simulate never overwrites")


@contextlib.contextmanager
def file_lock(path: str):
    if fcntl is None:
        raise EgalError("worker processes need file locks (fcntl), which this platform lacks: use workers = 1")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json_atomic(path: str, payload) -> None:
    with replaced_atomically(path) as tmp, open(tmp, "w") as f:
        strict_json.dump(payload, f, indent=1)
