"""A plugin cannot end or break every command (issue 28 item 3).

A plugin that calls `sys.exit()` or `os._exit()` at import or in a `register_*` hook is refused whole with one
warning, and the command goes on; `os._exit()` in a method's `distill`/`validate` or a protocol's `evaluate` is
a failed run naming the plugin (exit 1), never a silent exit 0; a worker of `compare --jobs N` that dies hard
(a segfault) fails its own cell only; a command plugin whose `add_arguments` raises is skipped, and a command's
return value must be an exit code. The cases that end the process run in a subprocess, so that on a host
without the guard the test fails instead of ending pytest.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ddbench.cli import main
from ddbench.store.results import query

HERE = Path(__file__).resolve().parent
TINY = ["--dataset", "tiny", "--protocol", "tiny-eval", "--no-progress"]


def _config(tmp: Path, *modules: str, name: str = "plugins.toml", extra: str = "") -> str:
    """A plugins.toml loading only the host, `random`, the sweep test plugin and `modules`."""
    mods = ["sweep_plugin", *modules]
    path = tmp / name
    path.write_text(f"[plugins]\nenabled = {json.dumps(['random', *mods])}\nmodules = {json.dumps(mods)}\n{extra}")
    return str(path)


def _in_subprocess(tmp: Path, argvs: list[list[str]], timeout: float = 300) -> list[dict]:
    """Call `ddbench.cli.main` on each argv in one fresh interpreter; each call's exit code and output.

    A call that ends the interpreter leaves the remaining calls without a result: the test sees it."""
    script = textwrap.dedent("""
        import contextlib, io, json, sys
        from ddbench.cli import main
        for argv in json.loads(sys.argv[1]):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as exc:
                    rc = f"SystemExit({exc.code!r})"
            print(json.dumps({"rc": rc, "out": out.getvalue(), "err": err.getvalue()}), flush=True)
    """)
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp}:{HERE}:{HERE / 'plugins'}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(argvs)], capture_output=True, text=True,
                          env=env, cwd=tmp, timeout=timeout)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(argvs), (f"the interpreter ended after {len(results)} of {len(argvs)} commands "
                                        f"(exit {proc.returncode}): {proc.stderr[-2000:]}")
    return results


ENDERS = {
    "sys-import": "import sys\nsys.exit(0)\n",
    "os-import": "import os\nos._exit(3)\n",
    "sys-hook": "import sys\nfrom ddbench import hookimpl\n@hookimpl\ndef register_methods(register):\n    sys.exit(0)\n",
    "os-hook": "import os\nfrom ddbench import hookimpl\n@hookimpl\ndef register_methods(register):\n    os._exit(0)\n",
}


def test_a_plugin_ending_the_process_at_load_is_refused_and_every_command_goes_on(tmp_path):
    argvs = []
    for kind, source in ENDERS.items():
        module = f"ender_{kind.replace('-', '_')}"
        (tmp_path / f"{module}.py").write_text(source)
        cfg = _config(tmp_path, module, name=f"{kind}.toml")
        argvs += [["list", "--config", cfg], ["plugins", "--config", cfg]]
    results = _in_subprocess(tmp_path, argvs)
    expected = {"sys-import": "called sys.exit(0) at import", "os-import": "called os._exit(3) at import",
                "sys-hook": "called sys.exit(0) in register_methods", "os-hook": "called os._exit(0) in register_methods"}
    for (kind, why), listed, plugins in zip(expected.items(), results[::2], results[1::2]):
        module = f"ender_{kind.replace('-', '_')}"
        assert listed["rc"] == 0 and "random" in listed["out"], (kind, listed)
        warnings = [line for line in listed["err"].splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and f"plugin {module!r}" in warnings[0] and why in warnings[0], (kind, listed["err"])
        assert "not end the process" in warnings[0]
        assert plugins["rc"] == 0 and "REFUSED" in plugins["out"] and why in plugins["out"], (kind, plugins)


def test_os_exit_in_distill_validate_or_evaluate_is_a_failed_run_naming_the_plugin(tmp_path):
    cfg = _config(tmp_path, "exit_plugin")
    out = tmp_path / "out"
    base = ["--config", cfg, "--out", str(out), *TINY, "--ipc", "1"]
    results = _in_subprocess(tmp_path, [
        ["run", "--method", "os-exit-method", *base],
        ["run", "--method", "os-exit-validate", *base],
        ["run", "--method", "random", *base, "--protocol", "os-exit-protocol"],
        ["compare", "--methods", "os-exit-method,random", "--no-report", "--jobs", "1", *base],
    ])
    distill, validate, evaluate, sweep = results
    assert distill["rc"] == 1 and "method 'os-exit-method' (plugin 'exit_plugin') called os._exit(0) in distill()" \
        in distill["out"] + distill["err"], distill
    assert validate["rc"] == 1 and "called os._exit(0) in validate()" in validate["err"], validate
    assert "plugin 'exit_plugin'" in validate["err"]
    assert evaluate["rc"] == 1 and "protocol 'os-exit-protocol' (plugin 'exit_plugin') called os._exit(0) in " \
        "evaluate()" in evaluate["out"] + evaluate["err"], evaluate
    assert sweep["rc"] == 1 and "FAILED" in sweep["out"], sweep
    rows = query(out / "ddbench.sqlite")
    by = [(r.method, r.protocol, r.status) for r in rows]
    assert by == [("os-exit-method", "tiny-eval", "failed"), ("random", "os-exit-protocol", "failed"),
                  ("os-exit-method", "tiny-eval", "failed"), ("random", "tiny-eval", "ok")], by
    assert all("exit_plugin" in r.error for r in rows if not r.ok)


def test_a_hard_crash_in_a_pool_worker_fails_only_its_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{HERE}:{HERE / 'plugins'}")  # spawned workers import the test plugins
    monkeypatch.syspath_prepend(str(HERE / "plugins"))
    cfg = _config(tmp_path, "exit_plugin")
    # The random cells sleep in evaluation, so they are running (or queued) when the segv cell's worker dies.
    rc = main(["compare", "--methods", "segv-method,random", "--ipc", "1,2", "--jobs", "2", "--no-report",
               "--set", "eval.sleep=1", "--config", cfg, "--out", str(tmp_path / "out"), *TINY])
    assert rc == 1
    rows = {(r.method, r.ipc): r for r in query(tmp_path / "out" / "ddbench.sqlite")}
    assert sorted(rows) == [("random", 1), ("random", 2), ("segv-method", 1), ("segv-method", 2)]
    assert rows[("random", 1)].ok and rows[("random", 2)].ok, {k: r.error_line for k, r in rows.items()}
    for ipc in (1, 2):
        error = rows[("segv-method", ipc)].error
        assert "died" in error and "SIGSEGV" in error and "segv-method" in error, error


# --------------------------------------------------------------------------------------------------
# Command plugins
# --------------------------------------------------------------------------------------------------


COMMANDS = '''
import argparse
from ddbench import hookimpl
from ddbench.api import Command

def _raises(p):
    raise RuntimeError("add_arguments is broken")

def _clashes(p):
    p.add_argument("--x")
    p.add_argument("--x")

def _returns(value):
    return lambda args: value

@hookimpl
def register_commands(register):
    register(Command("broken", "raises in add_arguments", _raises, _returns(0)))
    register(Command("clashing", "adds one option twice", _clashes, _returns(0)))
'''

RETURNS = '''
from ddbench import hookimpl
from ddbench.api import Command

@hookimpl
def register_commands(register):
    for name, value in (("gives-none", None), ("gives-3", 3), ("gives-text", "done"), ("gives-300", 300)):
        register(Command(name, "returns a value", lambda p: None, lambda args, v=value: v))
'''


def _command_dist(tmp: Path, name: str, source: str) -> None:
    """An installed distribution (a dist-info on sys.path) whose `ddbench.commands` entry point is `name`."""
    (tmp / f"{name}_mod.py").write_text(source)
    info = tmp / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[ddbench.commands]\n{name} = {name}_mod\n")


def test_a_command_plugin_whose_add_arguments_breaks_is_skipped_and_every_command_runs(tmp_path, monkeypatch, capsys):
    _command_dist(tmp_path, "badcmds", COMMANDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "plugins.toml"
    cfg.write_text("[plugins]\n")
    assert main(["plugins", "--config", str(cfg)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert "command 'broken' (plugin 'badcmds')" in err[0] and "add_arguments raised RuntimeError" in err[0]
    assert "command 'clashing' (plugin 'badcmds')" in err[1] and "ArgumentError" in err[1]
    assert all("disabled = ['badcmds']" in line for line in err)
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "ddbench " in capsys.readouterr().out
    # Disabled, it is gone without a warning (it is a plugin of the commands group: no "which is no plugin").
    off = tmp_path / "off.toml"
    off.write_text('[plugins]\ndisabled = ["badcmds"]\n')
    assert main(["list", "--config", str(off)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command, code, message", [
    ("gives-none", 0, None),
    ("gives-3", 3, None),
    ("gives-text", 1, "command 'gives-text' (plugin 'retcmds') returned 'done', not an exit code"),
    ("gives-300", 1, "command 'gives-300' (plugin 'retcmds') returned 300, not an exit code"),
])
def test_a_command_must_return_an_exit_code(tmp_path, monkeypatch, capsys, command, code, message):
    _command_dist(tmp_path, "retcmds", RETURNS)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main([command]) == code
    err = capsys.readouterr().err
    assert (message in err) if message else err == "", err
