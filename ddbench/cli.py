"""The `ddbench` command line: one parser built from the registered commands, one dispatch path.

Every subcommand is a `ddbench.api.Command` that a plugin of the `ddbench.commands` entry-point group
registers (`register_commands`): the host's `run`, `list`, `plugins`, `show` (ddbench/core_commands.py),
`compare` (ddbench/compare.py) and `report` (ddbench/report_command.py), the bundled `challenge`, and any
third party's, all alike. Command modules are light, so `--help` and a bad flag cost no torch import.
Exit codes: 0 success, 2 bad usage or bad input, 1 a run that failed.
"""
from __future__ import annotations

import argparse
import os
import sys

from .config import load_config
from .errors import DDBenchError, RunFailed
from .guard import Terminated, handle_signals
from .plugins import Registry, load_commands

# The order `ddbench --help` lists the host's commands in; any other command follows, by name.
FIRST = ("run", "compare", "report", "list", "plugins", "show")


def _config_flag(argv: list[str]) -> str | None:
    """The `--config FILE` of a command line, read before parsing: its [plugins] lists choose commands too."""
    for i, item in enumerate(argv):
        if item == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if item.startswith("--config="):
            return item.split("=", 1)[1]
    return None


def commands_for(argv: list[str]) -> Registry:
    """The command plugins that the command line's plugins.toml layers allow, their problems said on stderr."""
    config = load_config(_config_flag(argv))
    commands = load_commands(config.enabled, config.disabled)
    for line in commands.problems():
        print(line, file=sys.stderr)
    return commands


def build_parser(commands: Registry) -> argparse.ArgumentParser:
    """One sub-parser per registered command, its `run` as the handler."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="ddbench", description="Dataset-distillation benchmark")
    parser.add_argument("--version", action="version", version=f"ddbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = sorted(commands.names("commands"), key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n))
    for name in names:
        command = commands.get("commands", name)
        p = sub.add_parser(name, help=command.help, description=command.description or command.help)
        command.add_arguments(p)
        p.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(commands_for(argv))
    except DDBenchError as exc:  # a plugins.toml that does not parse
        print(f"ddbench: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    _line_buffered()
    try:
        with handle_signals():
            return args.handler(args)
    except DDBenchError as exc:
        print(f"ddbench: error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"ddbench: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `ddbench list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        why = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"ddbench: {why}; finished runs are kept, checkpoints stay in the work folder", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def _line_buffered() -> None:
    """Each log line reaches a redirected file as it is printed, so a killed run's log is not empty."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # absent on captured streams (tests)
        if reconfigure is not None:
            try:
                reconfigure(line_buffering=True)
            except (ValueError, OSError):  # pragma: no cover - a stream that cannot change
                pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
