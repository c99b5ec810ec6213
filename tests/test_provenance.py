"""Provenance per run: the machine and commit recorded with it, and the command line that re-makes it."""
from __future__ import annotations

import shlex

import pytest

from ddbench.cli import main
from ddbench.core.records import RunRecord
from ddbench.store.provenance import HOST_META, cpu_model, host_info, rerun_command
from ddbench.store.results import query

from sweep_plugin import write_config

TINY = ["--dataset", "tiny", "--protocol", "tiny-eval", "--no-progress"]


@pytest.mark.parametrize("flags", [
    ["--method", "gen", "--ipc", "2", "--seed", "3", "--eval-models", "3", "--set", "eval.epochs=2"],
    ["--method", "gen", "--ipc", "1", "--seed", "0", "--budget", "5", "--set", "budget_ipc=2"],
    ["--method", "random", "--ipc", "1", "--seed", "1", "--preset", "paper"],
])
def test_the_rerun_command_makes_the_same_configuration(tmp_path, capsys, flags):
    config, out = write_config(tmp_path), str(tmp_path / "out")
    assert main(["run", *flags, *TINY, "--config", config, "--out", out]) == 0
    (first,) = query(tmp_path / "out" / "ddbench.sqlite")
    command = rerun_command(first)
    assert command.startswith("ddbench run ") and f"--method {first.method}" in command
    argv = shlex.split(command)[1:]
    assert main([*argv, "--no-progress", "--config", config, "--out", out]) == 0
    again = query(tmp_path / "out" / "ddbench.sqlite")[-1]
    assert again.run_id != first.run_id
    assert again.config == first.config and again.config_hash == first.config_hash
    # the machine it ran on is recorded with the run
    assert first.meta[HOST_META]["cpu"] == cpu_model() and "gpu" not in first.meta[HOST_META]


def test_a_failed_run_records_its_host_too(tmp_path, capsys):
    config, out = write_config(tmp_path), str(tmp_path / "out")
    assert main(["run", "--method", "boom", "--ipc", "1", *TINY, "--config", config, "--out", out]) == 1
    (row,) = query(tmp_path / "out" / "ddbench.sqlite")
    assert row.status == "failed" and row.meta[HOST_META] == host_info()


def test_rerun_command_of_a_cross_architecture_cell_is_a_compare_and_quotes_settings():
    rec = RunRecord(run_id="r", created=0.0, status="ok", method="dm", dataset="cifar10", ipc=10, budget=30.0,
                    protocol="dsa", model="convnet", seed=4, config_hash="h",
                    config={"method": "dm", "dataset": "cifar10", "ipc": 10, "budget": 30.0, "protocol": "dsa",
                            "model": "convnet", "eval_model": "resnet18", "seed": 4, "preset": "default",
                            "method_params": {"name": "a b; rm -rf /", "steps": [1, 2], "flag": True, "unset": None},
                            "protocol_settings": {"dsa": False}})
    assert rerun_command(rec) == (
        "ddbench compare --methods dm --ipc 10 --seeds 4, --dataset cifar10 --protocol dsa --model convnet "
        "--models resnet18 --budgets 30 --set flag=true --set 'name=a b; rm -rf /' --set steps=1,2 --set eval.dsa=false")
    assert rerun_command(RunRecord("r", 0.0, "ok", "m", "d", 1, None, "p", "c", 0, "h", config={})) == ""
