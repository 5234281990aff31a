"""The runs of one experiment shared out to worker processes (`egal simulate --workers N`).

On a CPU, N one-thread processes get more done than one N-thread process: the
trainable tail's small convolutions and BatchNorms scale poorly across threads
(on 2 cores, two one-thread processes made 1.35-1.65x the progress of one
two-thread process; docs/experiments.md). Each worker loads the data and the
frozen prefix's features from the disk caches the parent filled, then takes
(strategy, seed) runs one at a time from the shared list, claiming each with an
exclusive file so that no run is done twice. Round 0 of a seed is the same for
all its strategies: the first worker to need it trains it under a lock and
leaves it in OUT/round0/, the others load it (egal.loop.first_rounds.FirstRounds).

Runs are handed out seed by seed, every strategy of a seed before the next seed,
so that an experiment stopped early (a time limit, a lost machine) holds whole
seeds and with them the strategies' paired differences; within a seed, random
selection first, since it is the baseline of every paired difference. Each run
writes its own OUT/runs/ file atomically, as in one process, so a killed
experiment resumes with any number of workers, and the results do not depend
on which worker ran what (every worker runs `threads` torch threads; the thread
count, like in one process, only changes float rounding).
"""
from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import queue as queue_module
import secrets
import shutil
import tempfile
import time
import traceback
import warnings

from .._processes import start_spawned, watch_parent
from ..errors import EgalError
from ..progress import Progress
from .config import ExperimentConfig
from .folder import ROUND0_DIR, RUNS_DIR

# OUT/runs/.claims-<pid>-<random>/, owned by the simulate that holds an exclusive lock on the file beside it,
# OUT/runs/.claims-<pid>-<random>.lock, for as long as it runs.
CLAIMS_PREFIX = ".claims-"
OWNER_LOCK_SUFFIX = ".lock"
TAKING_STALE_SECONDS = 60  # a lock file still under its temporary name this long was left by a killed simulate


def run_in_workers(config: ExperimentConfig, out_dir: str, units: list, reporter: Progress, workers: int, *,
                   warn: bool = True) -> list:
    """Run the (strategy name, seed) `units` in `workers` processes; returns the units that ran, in finishing order.

    A worker's error stops the others (at once: finished runs are on disk) and is raised here with its
    traceback; so is Ctrl-C.
    """
    units = hand_out_order(units, [s.name for s in config.loop.strategy_objects()])
    threads = config.loop.threads or max(1, (os.cpu_count() or 1) // workers)
    runs_dir = os.path.join(out_dir, RUNS_DIR)
    _remove_stale_claims(runs_dir)
    owner, claims = _new_claims(runs_dir)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    messages = context.Queue()
    processes = [context.Process(target=_worker, name=f"egal-worker-{i}", daemon=True,
                                 args=(config.to_dict(), out_dir, units, claims, i, threads, messages, os.getpid(),
                                       warn and i == 0))
                 for i in range(workers)]
    reporter.log(f"{len(units)} run(s) in {workers} worker processes with {threads} torch thread(s) each")
    ran, failures, finished = [], [], set()
    try:
        for process in processes:
            start_spawned(process)
        while len(finished) < workers:
            try:
                kind, worker, payload = messages.get(timeout=2.0)
            except queue_module.Empty:
                for i, process in enumerate(processes):
                    if i not in finished and process.exitcode is not None:  # died without a word (killed, OOM)
                        finished.add(i)
                        failures.append((i, f"the process ended with exit code {process.exitcode}"))
                continue
            if kind == "log":
                reporter.log(f"[worker {worker}] {payload}")
            elif kind == "advance":
                reporter.advance(1, payload)
            elif kind == "warning":  # egal's own, from the one worker that forwards them: warned here, once
                warnings.warn(payload, WorkerWarning, stacklevel=2)
            elif kind == "ran":
                ran.append(tuple(payload))
            elif kind == "error":
                failures.append((worker, payload))
                _stop(processes)
            elif kind == "done":
                finished.add(worker)
    except BaseException:
        _stop(processes)
        raise
    finally:
        for process in processes:
            process.join(timeout=30)
        shutil.rmtree(claims, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(claims + OWNER_LOCK_SUFFIX)
        owner.close()
    if failures:
        worker, (user_error, text) = failures[0]
        kept = f"{len(ran)} run(s) finished and kept; rerun to resume"
        if user_error:  # the setting or the data is wrong, whichever process found it: its one line, as without workers
            raise EgalError(text + (f" ({kept})" if ran else ""))
        raise EgalError(f"worker {worker} failed ({kept}):\n{text}")
    return ran


def hand_out_order(units: list, strategy_names: list) -> list:
    """The (strategy name, seed) units in the order workers take them: seed by seed, random first in a seed."""
    order = {name: i for i, name in enumerate(strategy_names)}
    return sorted(units, key=lambda u: (u[1], u[0] != "random", order[u[0]]))


def _stop(processes) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()


class _QueueProgress:
    """Progress's interface, forwarded to the parent process."""

    def __init__(self, messages, worker: int):
        self.messages, self.worker = messages, worker

    def log(self, message: str) -> None:
        self.messages.put(("log", self.worker, message))

    def advance(self, n: int = 1, status: str = "") -> None:
        for _ in range(n):
            self.messages.put(("advance", self.worker, status))

    def close(self) -> None:
        pass


def _new_claims(runs_dir: str):
    """(open owner lock, claims folder): the lock taken under a temporary name and then renamed beside the
    folder-to-be, so that no other simulate ever sees this claim's lock free while this one runs."""
    fd, taking = tempfile.mkstemp(prefix=".taking-", suffix=OWNER_LOCK_SUFFIX, dir=runs_dir)
    owner = os.fdopen(fd, "w")
    fcntl.flock(owner, fcntl.LOCK_EX)
    claims = os.path.join(runs_dir, f"{CLAIMS_PREFIX}{os.getpid()}-{secrets.token_hex(8)}")
    os.rename(taking, claims + OWNER_LOCK_SUFFIX)  # (64 random bits: no other simulate picks this name)
    os.mkdir(claims)
    return owner, claims


def _remove_stale_claims(runs_dir: str) -> None:
    """Claims left by a simulate that was killed (SIGKILL: no `finally`): those whose owner lock is free. Those of a
    simulate still running (other seeds into the same folder) stay, wherever it runs: a lock, unlike a process id,
    holds across PID namespaces (containers) and hosts sharing the folder (NFS). A claims folder of an older
    egal, with no lock beside it, is judged by its process id as before."""
    for name in os.listdir(runs_dir):
        path = os.path.join(runs_dir, name)
        if name.startswith(".taking-") and name.endswith(OWNER_LOCK_SUFFIX):
            # A simulate killed between creating its lock and naming it; a young one may be another simulate's,
            # created but not locked yet.
            if _age_seconds(path) > TAKING_STALE_SECONDS and _lock_is_free(path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            continue
        if not name.startswith(CLAIMS_PREFIX) or name.endswith(OWNER_LOCK_SUFFIX):
            continue
        lock = path + OWNER_LOCK_SUFFIX
        if os.path.exists(lock):
            if _lock_is_free(lock):
                shutil.rmtree(path, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.unlink(lock)
            continue
        pid = name[len(CLAIMS_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    for name in os.listdir(runs_dir):  # locks whose folder is gone (removed above, or killed before its mkdir)
        path = os.path.join(runs_dir, name)
        if name.startswith(CLAIMS_PREFIX) and name.endswith(OWNER_LOCK_SUFFIX) and \
                not os.path.isdir(path[:-len(OWNER_LOCK_SUFFIX)]) and _lock_is_free(path):
            with contextlib.suppress(OSError):
                os.unlink(path)


def _age_seconds(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0


def _lock_is_free(path: str) -> bool:
    try:
        with open(path, "a") as probe:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except BlockingIOError:
        return False
    except OSError:  # gone meanwhile (its owner finished): nothing to remove
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _claim(claims: str, name: str, seed: int) -> bool:
    try:
        os.close(os.open(os.path.join(claims, f"{name}__seed{seed}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise EgalError(f"this simulate's claims folder {claims!r} was removed while it ran (by hand, or by an "
                        "older egal simulate in the same folder): rerun to resume") from None


class WorkerWarning(UserWarning):
    """One of egal's warnings, raised in a worker process and said again in the parent (by its text: a warning
    class may need more than a message to be built, as egal.pool.UndecodedRows does)."""


def _worker(config_dict: dict, out_dir: str, units: list, claims: str, index: int, threads: int, messages,
            parent_pid: int, warn: bool) -> None:
    """warn: this worker forwards the data's and the settings' warnings to the parent (one worker does, where the
    parent did not prepare the experiment itself)."""
    # A parent killed outright (SIGKILL) must not leave workers writing runs into a folder it no longer owns.
    watch_parent(parent_pid)
    try:
        import torch

        from .first_rounds import FirstRounds
        from .folder import run_path
        from .simulation import prepare_experiment, run_unit

        torch.set_num_threads(threads)
        config = ExperimentConfig.from_dict(config_dict)
        reporter = _QueueProgress(messages, index)
        with warnings.catch_warnings(record=True) as caught:  # the data's warnings, said once by the parent
            warnings.simplefilter("always")
            experiment = prepare_experiment(config, out_dir, None, reporter, announce=False, warn=warn)
        for w in caught:
            if warn and w.category.__module__.split(".")[0] == "egal":
                messages.put(("warning", index, str(w.message)))
            elif w.category.__module__.split(".")[0] != "egal":
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        first_rounds = FirstRounds(os.path.join(out_dir, ROUND0_DIR), device=config.train.device)
        strategies = {s.name: s for s in config.loop.strategy_objects()}
        for name, seed in units:
            if os.path.isfile(run_path(out_dir, name, seed)) or not _claim(claims, name, seed):
                continue
            run_unit(experiment, strategies[name], seed, run_path(out_dir, name, seed), first_rounds, reporter)
            messages.put(("ran", index, (name, seed)))
            first_rounds.keep_only(seed)  # units come seed by seed: an earlier seed's round 0 is not needed again
    except EgalError as exc:  # a user error: its one line, as the command prints it without workers
        messages.put(("error", index, (True, str(exc))))
    except BaseException:  # noqa: B036 - Ctrl-C included: the parent reports it and stops the others
        messages.put(("error", index, (False, traceback.format_exc())))
    finally:
        messages.put(("done", index, None))
