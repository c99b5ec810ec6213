"""Build the reference table shipped with the package (ddbench/data/reference/<dataset>.json), cell by cell.

    python benchmarks/make_reference.py run      # run the missing cells (each a plain `ddbench run`), resumable
    python benchmarks/make_reference.py adopt    # copy cells another study already ran (see ADOPT), once
    python benchmarks/make_reference.py table    # write the table and its sha256 from the stored cells

A cell is one `ddbench run` of random real images: its command, its JSON summary, its stored record (config,
dataset fingerprint) when this script ran it, the wall time and load, and the run's log tail, stored atomically
in benchmarks/results/reference/<cell>.json; a stored cell is never run again, so a killed build restarted
with the same command runs only what is missing. Every run takes `flock $DDBENCH_STUDY_LOCK` (default
/tmp/ddbench-cpu.lock) so other heavy jobs on a shared machine interleave between cells.

`table` re-resolves each cell's command with today's code and refuses a cell whose config hash differs from
the one its run recorded (the settings changed since: run it again), so every row's protocol settings are the
ones its accuracy was measured under. The dataset fingerprint is the installed data's; a cell that recorded
its own must match it.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CELLS = ROOT / "benchmarks" / "results" / "reference"
DDBENCH = str(Path(sys.executable).with_name("ddbench"))
OUT = os.environ.get("DDBENCH_STUDY_OUT", str(ROOT / "ddbench-results"))
LOCK = os.environ.get("DDBENCH_STUDY_LOCK", "/tmp/ddbench-cpu.lock")
DATASET = "fashion-mnist"
SEEDS = (0, 1, 2, 3, 4)

# The evaluations `make run` (IPC 10) and the README's IPC-1 rows use (benchmarks/bench_minmax.py IPC10_EVAL and
# IPC1_EVAL): `fast` cut to 100 epochs with 3 networks, and the standard 1000-epoch `dsa` with 5 networks.
GROUPS = {
    "ipc10-fast": ["--ipc", "10", "--protocol", "fast", "--eval-epochs", "100", "--eval-models", "3"],
    "ipc1-dsa": ["--ipc", "1", "--protocol", "dsa", "--eval-models", "5"],
    "ipc10-dsa": ["--ipc", "10", "--protocol", "dsa", "--eval-models", "5"],  # the standard table's (bench_standard.py)
}
# Protocol settings added after cells were stored: a cell that lacks one ran at its default (the fp32 arithmetic
# of the reference code, before `precision` existed), so its config hash is checked without it.
ADDED_SETTINGS = ("precision",)
# Cells benchmarks/bench_minmax.py already ran with the very same commands (its 4000-step-base studies).
ADOPT_FROM = ROOT / "benchmarks" / "results" / "minmax-base4000"
ADOPT = {f"ipc10-fast-s{s}": f"ipc10-random-s{s}" for s in SEEDS} | {f"ipc1-dsa-s{s}": f"ipc1-random-s{s}" for s in (0, 1, 2)}
# The standard table's random-real cells (benchmarks/bench_standard.py) are the same commands as group ipc10-dsa.
ADOPT_STANDARD = {f"ipc10-dsa-s{s}": f"ipc10-dsa-random-s{s}" for s in SEEDS}


def cells() -> dict[str, list[str]]:
    """cell name -> the `ddbench run` arguments after `--method random`."""
    return {f"{group}-s{seed}": [*args[:2], "--seed", str(seed), *args[2:]] for group, args in GROUPS.items()
            for seed in SEEDS}


def atomic_json(obj: Any, path: Path) -> None:
    from ddbench.core.atomic import atomic_write_text

    atomic_write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n", path)


def run_cell(name: str, args: list[str]) -> dict[str, Any] | None:
    path = CELLS / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    cmd = [DDBENCH, "run", "--method", "random", *args, "--json", "--no-progress"]
    shown = "ddbench " + " ".join(shlex.quote(a) for a in cmd[1:])
    print(f"\n### {name}\n$ {shown}", flush=True)
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(["flock", LOCK, *cmd, "--out", OUT], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-3000:], flush=True)
        return None
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    shown_run = subprocess.run([DDBENCH, "show", summary["run_id"], "--json", "--out", OUT], capture_output=True,
                               text=True, cwd=ROOT, check=True)
    record = json.loads(shown_run.stdout)
    cell = {"name": name, "command": shown, "summary": summary,
            "record": {k: record[k] for k in ("config", "meta", "versions")},
            "wall_seconds_with_lock_wait": round(wall, 1), "load_before": [round(v, 2) for v in load],
            "load_after": [round(v, 2) for v in os.getloadavg()], "log_tail": proc.stderr[-1500:],
            "provenance": "run by benchmarks/make_reference.py run"}
    atomic_json(cell, path)
    print(f"  -> accuracy {summary.get('accuracy_mean')}, eval {summary.get('eval_seconds'):.0f} s", flush=True)
    return cell


def adopt() -> None:
    pairs = [(name, ADOPT_FROM / f"{source}.json") for name, source in ADOPT.items()]
    pairs += [(name, ROOT / "benchmarks" / "results" / "standard" / f"{source}.json") for name, source in ADOPT_STANDARD.items()]
    for name, src in pairs:
        target = CELLS / f"{name}.json"
        if target.is_file() or not src.is_file():
            continue
        cell = json.loads(src.read_text())
        cell["name"] = name
        cell["provenance"] = f"copied from {src.relative_to(ROOT)} (a study ran the same command)"
        atomic_json(cell, target)
        print(f"adopted {src.relative_to(ROOT)} as {target.relative_to(ROOT)}")


def _resolved(command: str):
    """The run the cell's command asks for, resolved by today's code (settings, config hash)."""
    from ddbench.cli import build_parser, load, request_from_args
    from ddbench.run.runner import resolve

    argv = shlex.split(command)[1:]
    args = build_parser().parse_args(argv)
    request = request_from_args(args, method=args.method, ipc=args.ipc, seed=args.seed, skip_eval=args.no_eval)
    config, registry = load(args.config)
    return resolve(request, config, registry)


def _hash_before_added_settings(resolved) -> str:
    """The config hash without the ADDED_SETTINGS that sit at their defaults (what a cell stored before they existed
    recorded); '' when one is set to something else."""
    from ddbench.store.identity import config_hash

    config = resolved.config()
    settings = dict(config["protocol_settings"])
    for key in ADDED_SETTINGS:
        if key in settings:
            if settings[key] != resolved.protocol.params[key].default:
                return ""
            del settings[key]
    return config_hash({**config, "protocol_settings": settings})


def table() -> Path:
    from ddbench.core.atomic import atomic_write_text
    from ddbench.run.runner import load_dataset, registry_for
    from ddbench.store.config import load_config
    from ddbench.store.identity import dataset_fingerprint, file_sha256
    from ddbench.store.shipped import table_path

    data = dataset_fingerprint(load_dataset(registry_for(load_config(None)), DATASET, None, False))
    rows, missing = [], []
    for name in cells():
        path = CELLS / f"{name}.json"
        if not path.is_file():
            missing.append(name)
            continue
        cell = json.loads(path.read_text())
        s = cell["summary"]
        resolved = _resolved(cell["command"])
        if s["config_hash"] not in (resolved.config_hash, _hash_before_added_settings(resolved)):
            raise SystemExit(f"{path}: today's code resolves its command to config {resolved.config_hash}, the run "
                             f"recorded {s['config_hash']}; delete the cell and run it again")
        recorded = (cell.get("record") or {}).get("meta", {}).get("dataset_fingerprint")
        if recorded is not None and recorded != data:
            raise SystemExit(f"{path}: ran on data {recorded}, the installed {DATASET} is {data}")
        rows.append({"method": s["method"], "dataset": s["dataset"], "dataset_fingerprint": data, "ipc": s["ipc"],
                     "protocol": s["protocol"], "model": s["model"], "seed": s["seed"],
                     "protocol_settings": resolved.protocol_settings, "config_hash": s["config_hash"],
                     "precision": s.get("eval_precision") or "fp32",
                     "images": s["images"], "accuracies": s["accuracies"], "accuracy_mean": s["accuracy_mean"],
                     "accuracy_std": s["accuracy_std"], "eval_seconds": s["eval_seconds"], "run_id": s["run_id"],
                     "versions": s["versions"], "command": cell["command"], "provenance": cell["provenance"]})
    if missing:
        raise SystemExit(f"cells not run yet: {', '.join(missing)} (python benchmarks/make_reference.py run)")
    target = table_path(DATASET)
    about = ("Random real subsets of fashion-mnist, one row per (IPC, protocol settings, seed), each made by its "
             "`command`; ddbench shows them as 'shipped reference' only where the results database has no run "
             "of its own under the same evaluation. Written by `python benchmarks/make_reference.py table` from "
             "benchmarks/results/reference/; `provenance` says which cells another study ran.")
    atomic_json({"about": about, "dataset": DATASET, "rows": rows}, target)
    atomic_write_text(f"{file_sha256(target)}  {target.name}\n", target.with_name(target.name + ".sha256"))
    print(f"wrote {target.relative_to(ROOT)} ({len(rows)} rows) and its sha256")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["run", "adopt", "table"])
    what = parser.parse_args().what
    CELLS.mkdir(parents=True, exist_ok=True)
    if what == "adopt":
        adopt()
    elif what == "run":
        failed = [name for name, args in cells().items() if run_cell(name, args) is None]
        if failed:
            raise SystemExit(f"failed cells: {', '.join(failed)}")
    else:
        table()


if __name__ == "__main__":
    main()
