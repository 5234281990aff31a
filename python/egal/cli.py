"""The `egal` command line."""
import argparse
import sys

from .commands import backends, demo, export, score, simulate, train

COMMANDS = (score, train, simulate, demo, export, backends)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egal",
        description="Explainability-guided active learning for medical imaging: rank unlabeled images by "
        "uncertainty (softmax entropy) and by how far the model's Grad-CAM attention is from the expert "
        "region of interest (soft Dice distance), then pick the ones to annotate next.",
        epilog="Run 'egal COMMAND --help' for the options of one command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"egal {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"egal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if not getattr(exc, "user_facing", False):
            raise
        print(f"egal {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"egal {args.command}: interrupted" + (
            "; what was scored is kept: rerun with --resume to finish" if args.command == "score" else ""),
            file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
