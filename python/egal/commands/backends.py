"""`egal backends`: what this installation can run."""
import json
import sys


def register(subparsers):
    parser = subparsers.add_parser(
        "backends",
        help="show which scoring backends were built and which can run here",
        description="Show which scoring backends were built (CPU always; CUDA when nvcc was found at build time) "
        "and which can run on this machine, with the reason when one cannot.",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--require", choices=("cpu", "cuda", "reference"), metavar="BACKEND",
                        help="exit with status 1, saying why, unless BACKEND (cpu, cuda or reference) can run here: "
                        "for scripts and health checks, e.g. `egal backends --require cuda`")
    parser.set_defaults(func=run)


def run(args) -> int:
    import egal

    info = egal.backends()
    if args.require:
        backend = info[args.require]
        if backend["available"]:
            print(f"{args.require}: runs here")
            return 0
        print(f"{args.require}: cannot run here: {backend.get('reason') or 'not built'}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cpu, cuda, ref = info["cpu"], info["cuda"], info["reference"]
    print(f"cpu        built, runs here ({cpu['threads']} OpenMP threads, {cpu['isa']} vector instructions)")
    if cuda["available"]:
        print(f"cuda       built, runs here ({cuda['devices']} device(s))")
    else:
        state = "built" if cuda["compiled"] else "not built"
        print(f"cuda       {state}, cannot run here: {cuda['reason']}")
    if cuda["compiled"] and cuda["roi_pass"] != cuda["default_roi_pass"]:  # a diagnostic setting left on
        print(f"           masks and boxes take the {cuda['roi_pass']} pass on CUDA (EGAL_CUDA_ROI_PASS)")
    if cuda["compiled"] and cuda["map_pass"] != cuda["default_map_pass"]:
        print(f"           maps take the {cuda['map_pass']} pass on CUDA (EGAL_CUDA_MAP_PASS)")
    print(f"reference  {'available (PyTorch)' if ref['available'] else 'unavailable: ' + ref['reason']}")
    return 0
