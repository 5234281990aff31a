"""An `egal` command line run in a child process with a hook at a chosen point of its work: it pauses there (until the
test lets it go on), or is SIGKILLed there, as a second run or a kill would catch it. The tests of the writers' rules
(egal._atomic) use it to reproduce races and kills at the exact moment that matters, not by timing.

The hook wraps a function or method named "module:attribute.path", once (its first call that `match` selects):
  kill   the process SIGKILLs itself (no `finally`, no `atexit`: what a kill -9 or the OOM killer leaves)
  pause  it writes STATE/ready and waits for STATE/go
  none   nothing (the run goes on: for a run that only needs `setup`)
setup: Python code the child runs first (a system without some call, say).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

DRIVER = r"""
import importlib, os, signal, sys, time
from pathlib import Path

target, when, action, match, state, setup = sys.argv[1:7]
exec(setup)
module_name, _, attribute = target.partition(":")
owner = importlib.import_module(module_name)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, name)
fired = []

def act(args):
    if fired or (match and not any(match in str(a) for a in args)):
        return
    fired.append(True)
    if action == "none":
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    Path(state, "ready").touch()
    deadline = time.monotonic() + 120
    while not Path(state, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)

def hooked(*args, **kwargs):
    if when == "before":
        act(args)
    result = original(*args, **kwargs)
    if when == "after":
        act(args)
    return result

setattr(owner, name, hooked)
from egal.cli import main
sys.exit(main(sys.argv[7:]))
"""


def start(argv, target: str, action: str, state: Path, *, when: str = "after", match: str = "", setup: str = "",
          cwd=None) -> subprocess.Popen:
    """`egal ARGV` in a child process, with the hook (see the module's docstring); state: a folder for its
    ready/go files."""
    state.mkdir(parents=True, exist_ok=True)
    python = [sys.executable, *(["-S"] if sys.flags.no_site else [])]  # the child imports egal as this process does
    return subprocess.Popen([*python, "-c", DRIVER, target, when, action, match, str(state), setup,
                             *map(str, argv)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_paused(process: subprocess.Popen, state: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (state / "ready").exists():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before its hook: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the run never reached its hook")
        time.sleep(0.02)


def let_go(process: subprocess.Popen, state: Path, timeout: float = 120) -> tuple[int, str, str]:
    (state / "go").touch()
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def killed(argv, target: str, state: Path, *, must_fire: bool = True, **options) -> subprocess.CompletedProcess:
    """`egal ARGV`, SIGKILLed at the hook; the process has ended when this returns. must_fire: a run that ends
    without reaching the hook (one that another version of egal has) fails the test."""
    process = start(argv, target, "kill", state, **options)
    out, err = process.communicate(timeout=300)
    if must_fire:
        assert process.returncode == -9, f"the run was not killed at its hook (status {process.returncode}): {err}"
    return subprocess.CompletedProcess(argv, process.returncode, out, err)
