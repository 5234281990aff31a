"""`egal report`: the pages people look at, the selection page of a scored pool or the experiment page of
an `egal simulate` folder. The pages are egal.report's; this builds their arguments and prints the result."""
from __future__ import annotations

from ..errors import EgalError
from ._flags import add_device, add_quiet, errors_named_as_flags, flags_for

# egal.report.selection_report's keyword arguments, each from the option of the same name.
API_ARGUMENTS = ("out", "select", "selection", "examples", "entropy_threshold", "misalignment_threshold",
                 "batch_size", "device", "overwrite")
SELECTION_INPUTS = ("scores", "pool", "model")


def register(subparsers):
    from ..report.html import PAGE_FILE
    from ..report.selection_page import DEFAULTS

    parser = subparsers.add_parser(
        "report",
        help="write the HTML page of a scored pool's selection, or of an active-learning experiment",
        description="Selection page (--scores, --pool, --model): the images egal score selected, in its order, "
        "each with its expert ROI outlined and the Grad-CAM of the predicted class over it; a plot of the whole "
        "pool, normalised entropy against misalignment, split into the four quadrants (the confident-but-looking-"
        "elsewhere one is what uncertainty-only selection misses) with counts and example images from each; the "
        "score distribution, the rows in error and a summary. Grad-CAM is computed for the rows shown only, so a "
        f"pool of 100,000 rows is fine. Writes OUT/{PAGE_FILE}. Experiment page (--experiment DIR): rebuilds "
        f"DIR/{PAGE_FILE} of an egal simulate folder from its files (learning curves, the final table with paired "
        "differences to random, the shortcut benchmark, Grad-CAM of fixed test images) without rerunning anything. "
        "Both pages are single files that open from disk with no network.",
        epilog="examples: egal report --scores egal-demo/scores.parquet --pool egal-demo/pool.parquet "
        "--model egal-demo/model.onnx --out egal-demo/report  |  egal report --experiment results/figshare_cpu  |  "
        "egal score ... --report DIR writes the selection page right after scoring",
    )
    parser.add_argument("--experiment", metavar="DIR", help=f"an egal simulate --out folder: rebuild DIR/{PAGE_FILE}")
    selection = parser.add_argument_group("selection page")
    selection.add_argument("--scores", help="egal score's output (Parquet)")
    selection.add_argument("--pool", help="the pool that was scored (images and ROIs of the rows shown)")
    selection.add_argument("--model", help="the model that scored it, .pt or .onnx (draws its Grad-CAM)")
    selection.add_argument("--out", default=DEFAULTS["out"], metavar="DIR",
                           help=f"folder for {PAGE_FILE} (default: %(default)s)")
    chosen = selection.add_mutually_exclusive_group()
    chosen.add_argument("--selection", metavar="CSV", default=DEFAULTS["selection"],
                        help="the selection egal score --select wrote, in its order (default: NAME.selection.csv "
                        "beside --scores; without it, the 30 best-ranked rows)")
    chosen.add_argument("--select", type=int, metavar="K", default=DEFAULTS["select"],
                        help="show the K best-ranked rows as the selection instead")
    selection.add_argument("--examples", type=int, default=DEFAULTS["examples"],
                           help="example images per quadrant (default: %(default)s)")
    selection.add_argument("--entropy-threshold", type=float, metavar="T", default=DEFAULTS["entropy_threshold"],
                           help="normalised entropy above which a row counts as uncertain (default: the middle of "
                           "its range over the plotted rows, or 0.5 when the range is narrower than 0.1)")
    selection.add_argument("--misalignment-threshold", type=float, metavar="T",
                           default=DEFAULTS["misalignment_threshold"],
                           help="misalignment above which a row counts as looking elsewhere (default: the middle of "
                           "its range over the plotted rows, or 0.5 when the range is narrower than 0.1)")
    selection.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                           help="images per model call for the Grad-CAM of the rows shown (default: %(default)s)")
    add_device(selection, DEFAULTS["device"])
    selection.add_argument("--overwrite", action="store_true", default=DEFAULTS["overwrite"],
                           help=f"replace an existing OUT/{PAGE_FILE}")
    add_quiet(parser, default=not DEFAULTS["progress"])
    parser.set_defaults(func=run)


def run(args) -> int:
    given = [name for name in SELECTION_INPUTS if getattr(args, name)]
    if args.experiment:
        from ..report.html import PAGE_FILE
        from ..report.selection_page import DEFAULTS

        options = given + [name for name in API_ARGUMENTS
                           if name != "overwrite" and getattr(args, name) != DEFAULTS[name]]
        if options:
            raise EgalError(f"--experiment rebuilds an experiment folder's page, DIR/{PAGE_FILE}, from its files; "
                            f"{', '.join('--' + o.replace('_', '-') for o in options)} "
                            f"{'is' if len(options) == 1 else 'are'} for the selection page: "
                            "give one or the other")
        return run_experiment(args)
    if len(given) < len(SELECTION_INPUTS):
        missing = ", ".join(f"--{name}" for name in SELECTION_INPUTS if name not in given)
        raise EgalError(f"the selection page needs --scores, --pool and --model ({missing} missing); or pass "
                        "--experiment DIR for an experiment folder's page")
    return run_selection(args)


def run_selection(args) -> int:
    from ..report.selection_page import SelectionReportOptions, run_selection_report

    with errors_named_as_flags(option_of):
        options = SelectionReportOptions(scores=args.scores, pool=args.pool, model=args.model,
                                         progress=not args.quiet,
                                         **{name: getattr(args, name) for name in API_ARGUMENTS})
        report = run_selection_report(options)
    if not args.quiet:
        print(f"Wrote {report.path} ({report.mib:.1f} MiB): {report.selected} selected and {report.examples} example "
              f"image(s), Grad-CAM for {report.gradcam_rows} row(s), {report.seconds:.1f} s")
    return 0


def run_experiment(args) -> int:
    from ..report.experiment_page import experiment_report

    with errors_named_as_flags(flags_for(["experiment"])):
        report = experiment_report(args.experiment)
    if not args.quiet:
        grid = "with" if report.cam_grid else "without (not recorded in this folder)"
        print(f"Wrote {report.path}: {report.runs} run(s) of {len(report.strategies)} strategies over "
              f"{len(report.seeds)} seed(s), {grid} the Grad-CAM grid")
    return 0


def report_after_scoring(result, out_dir, *, quiet: bool) -> None:
    """egal score --report DIR: the selection page of the run just finished (egal.pipeline.PoolScores), with
    the selection it wrote (the 30 best-ranked rows without --select)."""
    from ..report.selection_data import DEFAULT_SELECT
    from ..report.selection_page import selection_report

    o = result.options
    fresh = not (result.resumed or result.already_complete)  # only then is result.seconds the whole scoring time
    with errors_named_as_flags(after_scoring_option_of):
        report = selection_report(o.out, o.pool, o.model, out=out_dir, overwrite=o.overwrite, device=o.device,
                                  batch_size=o.batch_size, progress=not quiet,
                                  scoring_seconds=result.seconds if fresh else None,
                                  **({"selection": result.selection_path} if result.selection_path
                                     else {"select": DEFAULT_SELECT}))
    print(f"Selection page: {report.path} ({report.mib:.1f} MiB)")


# The command-line option behind one of selection_report's arguments (None for any other name).
option_of = flags_for([*API_ARGUMENTS, *SELECTION_INPUTS])


def after_scoring_option_of(argument: str) -> str | None:
    """egal score --report DIR: the page's out is --report; its other arguments are egal score's own options."""
    return "--report" if argument == "out" else flags_for(("overwrite", "device", "batch_size"))(argument)
