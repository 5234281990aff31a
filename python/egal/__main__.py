"""`python -m egal ...`: the egal command line, as the `egal` command runs it."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
