"""The `ddbench` command line: one parser built from the registered commands, one dispatch path.

Every subcommand is a `ddbench.api.Command` that a plugin of the `ddbench.commands` entry-point group
registers (`register_commands`): the host's `run`, `list`, `plugins`, `show` (ddbench/commands/core_commands.py),
`compare` (ddbench/commands/compare.py) and `report` (ddbench/commands/report_command.py), the bundled
`challenge`, and any third party's, all alike. Command modules are light, so `--help` and a bad flag cost no
torch import.
Exit codes: 0 success, 2 bad usage or bad input, 1 a run that failed.
"""
from __future__ import annotations

import argparse
import os
import sys

from .core.errors import DDBenchError, RunFailed
from .host.guard import Terminated, ended, handle_signals, no_hard_exit
from .host.plugins import Registry, load_commands
from .store.config import load_config

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


def command_label(commands: Registry, name: str) -> str:
    """`command 'NAME' (plugin 'OWNER')`: how a message blaming a command's plugin names it."""
    return f"command {name!r} (plugin {commands.owners['commands'].get(name, '?')!r})"


def build_parser(commands: Registry) -> argparse.ArgumentParser:
    """One sub-parser per registered command, its `run` as the handler.

    Each command's `add_arguments` is plugin code: one that raises (or adds a clashing option, or tries to end the
    process) loses its sub-parser, with one warning naming its plugin; every other command still parses."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="ddbench", description="Dataset-distillation benchmark")
    parser.add_argument("--version", action="version", version=f"ddbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = sorted(commands.names("commands"), key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n))
    for name in names:
        command = commands.get("commands", name)
        p = sub.add_parser(name, help=command.help, description=command.description or command.help)
        try:
            with no_hard_exit():
                command.add_arguments(p)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - argparse.ArgumentError, SystemExit, any bug: skip this one
            _drop_subparser(sub, name)
            why = (ended(exc) if isinstance(exc, SystemExit)
                   else f"raised {type(exc).__name__}: {' '.join(str(exc).split())}")
            plugin = commands.owners["commands"].get(name, "?")
            print(f"warning: {command_label(commands, name)} was skipped: its add_arguments {why}; fix it, or stop "
                  f"loading it: disabled = [{plugin!r}] under [plugins] in plugins.toml", file=sys.stderr)
            continue
        p.set_defaults(handler=command.run, _command_label=command_label(commands, name))
    return parser


def _drop_subparser(sub, name: str) -> None:
    """Take a half-built sub-parser out again (argparse has no public way; these are its two records of it)."""
    sub._name_parser_map.pop(name, None)
    sub._choices_actions[:] = [a for a in sub._choices_actions if getattr(a, "dest", None) != name]


def exit_code(value, label: str) -> int:
    """A command's return value as an exit code: None is 0; an int 0..255 is itself; anything else is refused."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    raise RunFailed(f"{label} returned {value!r}, not an exit code (None or an integer 0..255)")


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
            return exit_code(args.handler(args), getattr(args, "_command_label", f"command {args.command!r}"))
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
