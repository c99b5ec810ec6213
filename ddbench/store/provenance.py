"""Where a run was made and how to make it again: the machine's CPU/GPU model, the project's git commit, and the
one `ddbench` command line that re-makes the run from its stored config.

The runner records `host_info` with each run (meta['host']) so that a report can say, per row, what produced it
(issue 30: provenance per row). `rerun_command` needs no plugin: it spells out every stored setting with `--set`,
so the command lands on the same configuration (and config hash) even where plugins.toml has changed since.
"""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

HOST_META = "host"  # meta key of host_info's dict
_CHECKOUT = Path(__file__).resolve().parents[2]  # the folder above the package: a git checkout when editable


def cpu_model() -> str:
    """`AMD EPYC 7B13 (2 CPUs)`: /proc/cpuinfo's model name where there is one, else what `platform` says."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} ({os.cpu_count() or '?'} CPUs)"


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout ddbench runs from (`+dirty` with uncommitted changes to tracked files); None for
    an installed package (no .git beside it) or when git is missing."""
    if not (_CHECKOUT / ".git").exists():
        return None
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(_CHECKOUT), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def host_info(gpu: str | None = None) -> dict[str, Any]:
    """What a run records about where it ran: CPU model, GPU model (given by the runner, which holds torch), and the
    project's git commit when it runs from a checkout."""
    out: dict[str, Any] = {"cpu": cpu_model()}
    if gpu:
        out["gpu"] = gpu
    commit = git_commit()
    if commit:
        out["commit"] = commit
    return out


def _value(v: Any) -> str:
    """A setting as `--set` reads it back (ddbench.api.Param.coerce): lists comma-separated, bools lower case."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_value(x) for x in v)
    return str(v)


def rerun_command(record: Any) -> str:
    """The one command line that re-makes a run (a RunRecord) from its stored config: `ddbench run` with every
    method and protocol setting as `--set` (`ddbench compare` for a run evaluated on another architecture, which
    only compare's `--models` asks for). '' for a row without a config."""
    c = getattr(record, "config", None) or {}
    if not c.get("method"):
        return ""
    eval_model = c.get("eval_model")
    seed = str(c.get("seed", 0))
    if eval_model:
        cmd = ["ddbench", "compare", "--methods", str(c["method"]), "--ipc", str(c.get("ipc")), "--seeds", seed + ","]
    else:
        cmd = ["ddbench", "run", "--method", str(c["method"]), "--ipc", str(c.get("ipc")), "--seed", seed]
    cmd += ["--dataset", str(c.get("dataset")), "--protocol", str(c.get("protocol")), "--model", str(c.get("model"))]
    if eval_model:
        cmd += ["--models", str(eval_model)]
    if c.get("budget") is not None:
        cmd += ["--budgets" if eval_model else "--budget", f"{c['budget']:g}"]
    if c.get("preset") not in (None, "default"):
        cmd += ["--preset", str(c["preset"])]
    if c.get("data_root"):
        cmd += ["--data-root", str(c["data_root"])]
    for prefix, key in (("", "method_params"), ("eval.", "protocol_settings")):
        for k, v in sorted((c.get(key) or {}).items()):
            if v is not None:  # None is a Param's unset default; --set cannot say it and need not
                cmd += ["--set", f"{prefix}{k}={_value(v)}"]
    return " ".join(shlex.quote(x) for x in cmd)


__all__ = ["HOST_META", "cpu_model", "git_commit", "host_info", "rerun_command"]
