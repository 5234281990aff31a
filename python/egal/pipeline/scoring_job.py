"""`egal score` as a job: check everything, score the missing batches, merge and rank."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional

from .. import __version__
from ..pool import open_pool
from .local_engine import score_pool_locally
from .model_runner import file_digest, load_runner
from .progress import RowProgress
from .shard_store import ShardStore


@dataclass
class ScoringJob:
    args: object
    spec: object
    runner: object
    store: ShardStore
    progress: Optional[RowProgress] = None
    resumed: bool = False
    ray_log: Optional[str] = None  # where Ray's own output goes (--engine ray without --verbose)
    console: Optional[object] = None  # egal's stderr while Ray's output is redirected

    @classmethod
    def prepare(cls, args) -> "ScoringJob":
        """Validate the pool, the model and the output before any scoring."""
        spec = open_pool(args.pool)  # refuses a bad schema, duplicate ids, escaping or missing files
        # With Ray the actors load the model where it runs; here it is only checked, on the CPU
        # (the driver need not have a GPU).
        runner = load_runner(args.model, "cpu" if args.engine == "ray" else args.device)
        if args.engine == "ray":
            import ray  # noqa: F401  (missing: the CLI names the extra to install, before anything is written)
        log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
        log(f"pool: {args.pool} ({spec.num_rows} rows in {len(spec.files)} file(s), images from "
            f"{spec.image_column!r}, ROI from {spec.roi_column!r})")
        if spec.roi_column is None:
            log("warning: the pool has no ROI column (mask, mask_path or boxes): every row is scored by entropy "
                "alone (SCORING.md, empty ROI)")
        log(f"model: {runner.describe()}" + (f"; scored on {args.device} by Ray actors" if args.engine == "ray" else ""))
        manifest = {
            "egal_version": __version__,
            "pool": spec.fingerprint(),
            "model_sha256": file_digest(args.model),
            "device": args.device,
            "alpha": args.alpha,
            "combine": args.combine,
            "batch_size": args.batch_size,
            "engine": args.engine,
        }
        store = ShardStore(args.out, manifest, resume=args.resume, overwrite=args.overwrite,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
        job = cls(args, spec, runner, store)
        if store.already_complete:
            log(f"{args.out} is already complete, from a run with these same arguments; nothing to resume")
        done_rows = min(len(store.completed_batches()) * args.batch_size, spec.num_rows)
        job.resumed = done_rows > 0
        if job.resumed:
            log(f"resuming: {len(store.completed_batches())} of {spec.num_batches(args.batch_size)} batches "
                "already scored")
        job.ray_log = None
        console = None
        if args.engine == "ray" and not getattr(args, "verbose", False) and not store.already_complete:
            # Ray's output goes to a file (descriptors 1 and 2, see ray_engine); egal's progress keeps
            # a duplicate of the terminal's stderr.
            try:
                console = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
            except (AttributeError, OSError, ValueError):  # a stderr without a descriptor (captured)
                console = None
            if console is not None:
                stem = args.out[:-len(".parquet")] if args.out.endswith(".parquet") else args.out
                job.ray_log = os.path.abspath(stem + ".ray.log")
                log(f"Ray's own output goes to {job.ray_log} (--verbose shows it here)")
        job.console = console
        job.progress = RowProgress(spec.num_rows, initial=done_rows, enabled=not args.quiet, stream=console)
        return job

    def run(self):
        args = self.args
        try:
            if self.store.already_complete:
                pass
            elif args.engine == "ray":
                from .ray_engine import score_pool_on_ray

                try:
                    score_pool_on_ray(self.spec, args.model, self.store, alpha=args.alpha, batch_size=args.batch_size,
                                      device=args.device, address=args.ray_address, actors=max(1, args.workers),
                                      progress=self.progress, log_path=self.ray_log)
                except BaseException:
                    if self.ray_log:
                        print(f"egal score: Ray's own output is in {self.ray_log}", file=sys.stderr, flush=True)
                    raise
            else:
                score_pool_locally(self.spec, self.runner, self.store, alpha=args.alpha, batch_size=args.batch_size,
                                   workers=args.workers, progress=self.progress)
            return self.store.finalize(self.spec.num_rows, select_k=args.select, select_path=args.select_out)
        finally:
            self.progress.close()
            if self.console is not None:
                self.console.close()
            self.store.release()
