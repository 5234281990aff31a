"""Soak test of `egal score`'s crash safety: random kills during scoring, then --resume.

    python scripts/soak_score.py --kills 24            # about 5 minutes on 2 cores
    python scripts/soak_score.py --kills 100 --rows 20000 --out soak/ --keep

Writes a synthetic pool (egal.demo_data.make_synthetic_pool, --rows rows of --image-size
pixels) and a random tiny model, scores the pool once uninterrupted (the reference),
then again while killing it --kills times. Each kill lands after the run under test
has written a random number (1 to --max-shards) of new shards, and is, in turn:

    SIGKILL to the main process     SIGTERM to the main process
    SIGKILL to a decoder worker     SIGTERM to a decoder worker
    SIGKILL to the main process     SIGTERM to the main process
      while it finishes               while it finishes

"While it finishes": once the run has written its last shard, after a random 0 to
--finish-window seconds, so that the kill lands while the shards are merged, ranked,
written out, deleted, or the selection CSV written. A signal that comes after the command's
work (exit 0, or SIGTERM's default action once egal's handler has gone as the command
returns: exit -15, nothing said) is no kill: that run's output is checked as a finished one.
Nor is the resume of an output that a kill past it left complete (it only writes the
selection CSV again): it runs to its end and is checked.

after each, the killed run is restarted with --resume (all runs use --workers
--workers and --resume). When a run finishes before its kill, its output is
compared with the reference and the soak goes on with a fresh output. At the end
a last --resume finishes the run. Reported:

    rows lost / duplicated   pool ids missing from, or repeated in, each output
    identical                each finished output (and selection CSV) byte for byte
                             equal to the reference
    processes left           processes of a killed run (the run's environment carries
                             a tag) still alive 10 s after the run ended
    exit statuses            per kind of kill; stderr checked for tracebacks and
                             multiprocessing's leaked-semaphore warning (after SIGTERM)
    hangs                    killed runs that did not end within 60 s

Exit status 0 when nothing was lost, duplicated, different, left running or hung.
Needs PyTorch and psutil.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

KINDS = ("SIGKILL main", "SIGTERM main", "SIGKILL worker", "SIGTERM worker", "SIGKILL finish", "SIGTERM finish")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=24, help="kills in all, the six kinds in turn (default: 24)")
    parser.add_argument("--rows", type=int, default=10_000, help="pool rows (default: 10000)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (default: 64)")
    parser.add_argument("--workers", type=int, default=2, help="egal score --workers (default: 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="egal score --batch-size (default: 32)")
    parser.add_argument("--max-shards", type=int, default=8,
                        help="a kill lands after 1 to this many new shards of the run (default: 8)")
    parser.add_argument("--finish-window", type=float, default=0.25,
                        help="a kill while the run finishes lands 0 to this many seconds after its last shard "
                             "(default: 0.25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="work folder (default: a temporary folder, removed unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    import psutil  # noqa: F401  (fail early: needed to find workers and leftovers)

    work = args.out or tempfile.mkdtemp(prefix="egal-soak-")
    os.makedirs(work, exist_ok=True)
    try:
        report = soak(args, work)
    finally:
        if not args.keep and not args.out:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    bad = (report["rows_lost"] or report["rows_duplicated"] or report["outputs_different"]
           or report["processes_left"] or report["hangs"] or report["unexpected_messages"])
    return 1 if bad else 0


def soak(args, work: str) -> dict:
    import pyarrow.parquet as pq

    rng = random.Random(args.seed)
    pool, model = make_inputs(args, work)
    ids = pq.read_table(pool, columns=["id"]).column("id").to_pylist()
    batches = -(-len(ids) // args.batch_size)  # the shards of a whole run
    reference = os.path.join(work, "reference.parquet")
    start = time.perf_counter()
    run([*command(args, pool, model, reference)], check=True)
    reference_s = time.perf_counter() - start
    log(f"reference run: {len(ids)} rows in {reference_s:.1f} s")

    out = os.path.join(work, "soaked.parquet")
    outcomes = collections.defaultdict(collections.Counter)  # kind -> exit status -> count
    phases = collections.defaultdict(collections.Counter)  # kind -> where the run was when the signal went -> count
    totals = collections.Counter()
    unexpected, hangs, processes_left, checked = [], 0, 0, []
    kills = 0
    soak_start = time.perf_counter()
    while kills < args.kills:
        kind = KINDS[kills % len(KINDS)]
        finishing = kind.endswith("finish")
        complete = finished(out)  # a kill past the output left it complete: the resume only writes the CSV again
        tag = uuid.uuid4().hex
        proc = subprocess.Popen(command(args, pool, model, out, "--resume"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "EGAL_SOAK_TAG": tag})
        if finishing and complete:  # nothing left to finish: a kill could land only in its start-up
            proc.communicate()
            checked.append(compare(out, reference, ids))
            totals["resumed_complete_output"] += 1
            remove_output(out)
            continue
        target = batches if finishing else shards(out) + rng.randint(1, args.max_shards)
        while proc.poll() is None and shards(out) < target and not finished(out):
            time.sleep(0.002)
        if finishing:
            # A run that found every shard written scores nothing: wait for its start-up to end (it holds its parts
            # folder's lock once its checks are done), or the kill would land in the imports rather than the finish.
            while proc.poll() is None and not holds_parts_lock(proc.pid, out):
                time.sleep(0.002)
            if proc.poll() is None:
                time.sleep(rng.uniform(0, args.finish_window))
        # The run finished first: check it, start afresh. (A finish kill still lands while the output is in place
        # and the selection CSV is being written.)
        if proc.poll() is not None or (finished(out) and not finishing):
            proc.wait()
            checked.append(compare(out, reference, ids))
            totals["finished_before_kill"] += 1
            remove_output(out)
            continue
        victim = pick_victim(proc.pid, kind)
        if victim is None:  # no worker alive at this instant: try again
            proc.kill()
            proc.wait()
            totals["no_worker_to_kill"] += 1
            continue
        phase = phase_of(out, batches)
        os.kill(victim, signal.SIGKILL if kind.startswith("SIGKILL") else signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            hangs += 1
            proc.kill()
            _, err = proc.communicate()
        if finishing and ended_its_work(kind, proc.returncode, err) and finished(out):
            checked.append(compare(out, reference, ids))
            totals["signal_after_the_work"] += 1
            remove_output(out)
            continue
        kills += 1
        phases[kind][phase] += 1
        outcomes[kind][proc.returncode] += 1
        unexpected += expect_messages(kind, proc.returncode, err)
        time.sleep(0.2)
        left = wait_for_exit(tag, 10.0)
        processes_left += len(left)
        for p in left:
            p.kill()
    run([*command(args, pool, model, out, "--resume")], check=True)
    checked.append(compare(out, reference, ids))
    soak_s = time.perf_counter() - soak_start
    cpu = cpu_model()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "rows": len(ids), "batch_size": args.batch_size, "workers": args.workers,
        "kills": kills, "kills_by_kind": {k: dict(sorted(v.items())) for k, v in outcomes.items()},
        "kills_by_phase": {k: dict(sorted(v.items())) for k, v in phases.items()},
        "runs_finished_before_their_kill": totals["finished_before_kill"],
        "finish_signals_after_the_work": totals["signal_after_the_work"],
        "complete_outputs_resumed_unkilled": totals["resumed_complete_output"],
        "finished_outputs_checked": len(checked),
        "rows_lost": sum(c["lost"] for c in checked),
        "rows_duplicated": sum(c["duplicated"] for c in checked),
        "outputs_different": sum(not c["identical"] for c in checked),
        "processes_left": processes_left,
        "hangs": hangs,
        "unexpected_messages": unexpected[:10],
        "reference_run_s": round(reference_s, 1), "soak_s": round(soak_s, 1),
    }


def make_inputs(args, work: str):
    import torch

    from egal.demo_data import make_synthetic_pool
    from egal.models import build_model, save_model

    pool = str(make_synthetic_pool(work, n=args.rows, seed=args.seed, image_size=args.image_size, roi="boxes"))
    torch.manual_seed(args.seed)
    model = os.path.join(work, "model.pt")
    save_model(build_model("tiny_cnn", "linear", ("benign", "malignant", "normal"),
                           input_size=(args.image_size, args.image_size), in_channels=1), model)
    return pool, model


def command(args, pool, model, out, *extra):
    return [sys.executable, "-m", "egal.cli", "score", "--pool", pool, "--model", model, "--out", out,
            "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--select", "50", "--quiet", *extra]


def run(cmd, check):
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def shards(out) -> int:
    try:
        return sum(n.startswith("part-") and n.endswith(".parquet") for n in os.listdir(f"{out}.parts"))
    except OSError:
        return 0


def finished(out) -> bool:
    return os.path.exists(out) and not os.path.isdir(f"{out}.parts")


def holds_parts_lock(pid: int, out) -> bool:
    """Whether process `pid` holds the lock egal score takes on its parts folder (Linux: /proc/locks), or the folder
    is gone (renamed away as the run finishes)."""
    try:
        inode = os.stat(f"{out}.parts").st_ino
    except OSError:
        return True
    with open("/proc/locks") as f:
        for line in f:  # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (a waiter's line has "->" after the 1:)
            fields = line.split()
            if fields[1] == "FLOCK" and fields[4] == str(pid) and fields[5].rsplit(":", 1)[-1] == str(inode):
                return True
    return False


def phase_of(out, batches: int) -> str:
    """Where the run under test is, as its files show: scoring (shards missing), merging (every shard written; the
    merge, ranking and writing of the output), or past the output (the output in place and the shards renamed away:
    deleting them, writing the selection CSV, exiting)."""
    if finished(out):
        return "past the output"
    return "merging" if shards(out) >= batches else "scoring"


def pick_victim(pid: int, kind: str):
    import psutil

    if not kind.endswith("worker"):
        return pid
    try:
        workers = [c for c in psutil.Process(pid).children() if "spawn_main" in " ".join(c.cmdline())]
    except psutil.Error:
        return None
    return random.choice(workers).pid if workers else None


def ended_its_work(kind: str, status: int, err: str) -> bool:
    """Whether a finish kill came too late to stop anything: the run exited 0 between the last look and the signal,
    or SIGTERM met the default action because egal's handler goes as the command returns (exit -15, nothing
    said). Its output must then be complete (compared as a finished run's)."""
    return status == 0 or (kind == "SIGTERM finish" and status == -signal.SIGTERM and not err.strip())


def expect_messages(kind: str, status: int, err: str) -> list:
    """What each kill should look like from outside; returns what did not."""
    problems = []
    if "Traceback" in err:
        problems.append(f"{kind}: a traceback: {err[-300:]}")
    if kind in ("SIGTERM main", "SIGTERM finish"):
        if status != 143 or "rerun with --resume" not in err:
            problems.append(f"{kind}: exit {status}, stderr {err[-300:]!r}")
        if "leaked semaphore" in err:
            problems.append(f"{kind}: leaked-semaphore warning")
    elif kind.endswith("worker") and (status != 1 or "--resume" not in err):
        problems.append(f"{kind}: exit {status}, stderr {err[-300:]!r}")
    elif kind in ("SIGKILL main", "SIGKILL finish") and status != -signal.SIGKILL:
        problems.append(f"{kind}: exit {status}")
    return problems


def wait_for_exit(tag: str, timeout: float):
    import psutil

    deadline = time.time() + timeout
    while True:
        left = []
        for p in psutil.process_iter():
            try:
                if p.environ().get("EGAL_SOAK_TAG") == tag and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except (psutil.Error, OSError):
                continue
        if not left or time.time() > deadline:
            return left
        time.sleep(0.2)


def compare(out, reference, ids) -> dict:
    import pyarrow.parquet as pq

    if not os.path.isfile(out):  # a run that should have finished did not: every row counts as lost
        return {"lost": len(ids), "duplicated": 0, "identical": False}
    got = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    counts = collections.Counter(got)
    stem, ref_stem = out[:-len(".parquet")], reference[:-len(".parquet")]
    identical = (open(out, "rb").read() == open(reference, "rb").read()
                 and open(f"{stem}.selection.csv").read() == open(f"{ref_stem}.selection.csv").read())
    return {"lost": len(set(ids) - set(got)), "duplicated": sum(c - 1 for c in counts.values() if c > 1),
            "identical": identical}


def remove_output(out) -> None:
    for path in (out, out[:-len(".parquet")] + ".selection.csv"):
        if os.path.exists(path):
            os.remove(path)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
