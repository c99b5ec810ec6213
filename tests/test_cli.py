"""The command line end to end on a tiny dataset: JSON output, records, artifacts, bad input, failures."""
from __future__ import annotations

import json
import os
import signal
import time
import sqlite3
from pathlib import Path

import pytest

from ddbench.cli import main

FAST = ["--protocol", "fast", "--eval-epochs", "2", "--eval-models", "2", "--no-progress"]


@pytest.fixture
def env(tmp_path, tiny_plugin_config):
    cfg = tiny_plugin_config
    out = tmp_path / "out"
    return {"cfg": str(cfg), "out": out, "base": ["--config", str(cfg), "--out", str(out), "--dataset", "tiny"]}


def _rows(out: Path) -> list[tuple]:
    db = out / "ddbench.sqlite"
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        return con.execute("SELECT run_id, status, method, ipc, accuracy_mean, error FROM runs").fetchall()


def test_run_json_record_and_artifacts(env, capsys):
    rc = main(["run", "--method", "random", "--ipc", "2", "--json", *FAST, *env["base"]])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    for key in ("run_id", "method", "dataset", "ipc", "images", "protocol", "model", "accuracy_mean", "accuracy_std",
                "accuracies", "n_eval_models", "distill_seconds", "eval_seconds", "device", "seed", "versions"):
        assert key in result, key
    assert result["images"] == 6 and result["n_eval_models"] == 2 and len(result["accuracies"]) == 2
    assert 0.0 <= result["accuracy_mean"] <= 100.0
    assert Path(result["artifact"]).is_file()
    assert (Path(result["artifact"]).parent / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(env["out"])
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(result["run_id"], "ok", "random", 2)]
    assert rows[0][4] == pytest.approx(result["accuracy_mean"])
    assert main(["show", result["run_id"][:12], "--out", str(env["out"])]) == 0
    assert result["run_id"] in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "nope"], "unknown method 'nope'; valid: "),
        (["--method", "random", "--protocol", "nope"], "unknown protocol 'nope'; valid: "),
        (["--method", "random", "--model", "nope"], "unknown model 'nope'; valid: alexnet, convnet"),
        (["--method", "random", "--ipc", "13"], "--ipc 13 is larger than the 12 real training images of class 0"),
        (["--method", "random", "--set", "chunk=3"], "unknown setting 'chunk' for method random"),
        (["--method", "random", "--set", "eval.epochz=3"], "unknown setting 'epochz' for protocol fast"),
        (["--method", "random", "--budget", "60"], "does not take a generation budget"),
    ],
)
def test_bad_input_exits_2_and_records_nothing(env, capsys, args, message):
    rc = main(["run", *FAST, *args, *env["base"]])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert _rows(env["out"]) == []
    assert not (env["out"] / "work").exists() and not (env["out"] / "cache").exists()  # nothing left behind


def test_unknown_dataset_and_argparse_errors_exit_2(env, capsys):
    assert main(["run", "--method", "random", *FAST, "--config", env["cfg"], "--out", str(env["out"]),
                 "--dataset", "imagenet-1k"]) == 2
    assert "unknown dataset 'imagenet-1k'; valid: " in capsys.readouterr().err
    for bad in (["--ipc", "0"], ["--ipc", "ten"], ["--budget", "-5"]):
        with pytest.raises(SystemExit) as exc:
            main(["run", "--method", "random", *bad])
        assert exc.value.code == 2


def test_failed_run_is_recorded_with_traceback(env, capsys):
    rc = main(["run", "--method", "failing", "--ipc", "1", *FAST, *env["base"]])
    assert rc == 1
    rows = _rows(env["out"])
    assert len(rows) == 1 and rows[0][1] == "failed" and "boom from the failing test method" in rows[0][5]
    # A later good run adds its row and keeps the failed one.
    assert main(["run", "--method", "random", "--ipc", "1", *FAST, *env["base"]]) == 0
    assert sorted(r[1] for r in _rows(env["out"])) == ["failed", "ok"]


def test_malformed_config_names_the_line(tmp_path, capsys):
    cfg = tmp_path / "plugins.toml"
    cfg.write_text("[methods.random]\nfoo = \n")
    assert main(["run", "--method", "random", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "malformed TOML" in err and "line 2" in err
    assert not (tmp_path / "o" / "ddbench.sqlite").exists()


def test_list_and_plugins(env, capsys):
    assert main(["list", "--params", "--config", env["cfg"]]) == 0
    out = capsys.readouterr().out
    assert "random" in out and "tiny" in out and "[tiny_plugin]" in out
    assert main(["plugins", "--config", env["cfg"]]) == 0
    out = capsys.readouterr().out
    assert "tiny_plugin" in out and "plugins.toml" in out


def test_run_interrupted_in_evaluation_resumes_without_distilling_again(env, capsys, monkeypatch):
    from ddbench.run.runner import registry_for
    from ddbench.store.config import load_config

    registry = registry_for(load_config(env["cfg"]))
    protocol = type(registry.get("protocols", "fast"))
    real_evaluate = protocol.evaluate

    def interrupted(self, syn, ctx, settings):  # a real Ctrl-C during evaluation (the handler notes the signal)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)

    monkeypatch.setattr(protocol, "evaluate", interrupted)
    assert main(["run", "--method", "random", "--ipc", "2", *FAST, *env["base"]]) == 130
    assert _rows(env["out"]) == []  # nothing half-written
    leftovers = list((env["out"] / "work").glob("*/distilled.pt"))
    assert len(leftovers) == 1

    method = type(registry.get("methods", "random"))
    monkeypatch.setattr(protocol, "evaluate", real_evaluate)
    monkeypatch.setattr(method, "distill", lambda self, ctx: pytest.fail("distilled again"))
    capsys.readouterr()
    assert main(["run", "--method", "random", "--ipc", "2", *FAST, *env["base"]]) == 0
    assert "resuming: reusing the synthetic set" in capsys.readouterr().out
    assert [r[1] for r in _rows(env["out"])] == ["ok"]
    assert not leftovers[0].exists()  # removed once the run is recorded
