"""Subcommands of the `egal` command line; each module exposes register(subparsers)."""
