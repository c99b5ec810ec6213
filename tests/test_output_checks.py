"""The host enforces a method's output contract (issue 12 items 1 and 9): a broken set is the method's
failure, recorded as a failed run naming the method and what it returned (exit 1), and never saved,
evaluated or shown as a valid IPC."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from ddbench.api import SyntheticSet
from ddbench.cli import main
from ddbench.host.output_checks import MethodOutputError, check_output

from conftest import make_tiny_dataset

FAST = ["--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress"]


@pytest.fixture
def env(tmp_path, tiny_plugin_config):
    cfg = tiny_plugin_config
    out = tmp_path / "out"
    return {"out": out, "base": ["--config", str(cfg), "--out", str(out), "--dataset", "tiny", *FAST]}


def _rows(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "ddbench.sqlite") as con:
        return con.execute("SELECT status, method, ipc, images, accuracy_mean, artifact, error FROM runs").fetchall()


@pytest.mark.parametrize("kind, ipc_args, message", [
    ("extra", ["--ipc", "1"], "method 'bad-extra' broke the IPC contract: --ipc 1 asks for exactly 1 image(s) of each "
                              "of the 3 classes; it returned 3 per class (9 images)"),
    ("nan", ["--ipc", "2"], "method 'bad-nan' returned 1 image(s) containing NaN or inf"),
    ("size", ["--ipc", "2"], "method 'bad-size' returned images of shape (1, 20, 20); the tiny dataset needs (1, 28, 28)"),
    ("labels", ["--ipc", "2"], "method 'bad-labels' returned labels 1..3; the dataset's classes are 0..2"),
    ("unbalanced", ["--ipc", "2"], "method 'bad-unbalanced' broke the IPC contract: --ipc 2 asks for exactly 2 image(s) "
                                   "of each of the 3 classes; it returned per class [1, 3, 2] (6 images)"),
    ("unbalanced", ["--ipc", "2", "--budget", "5"], "method 'bad-unbalanced' returned an unbalanced set under a budget"),
    ("undeclared", ["--ipc", "2", "--budget", "5"], "method 'bad-undeclared' did not declare the IPC it produced"),
])
def test_broken_output_is_a_recorded_method_failure(env, capsys, kind, ipc_args, message):
    rc = main(["run", "--method", f"bad-{kind}", *ipc_args, *env["base"]])
    out = capsys.readouterr().out
    assert rc == 1
    rows = _rows(env["out"])
    assert len(rows) == 1
    status, method, ipc, images, acc, artifact, error = rows[0]
    assert (status, method, acc, artifact) == ("failed", f"bad-{kind}", None, None)  # never evaluated, never saved
    assert message in error and len(error.strip().splitlines()) == 1  # one line, not a traceback
    assert message in out  # the summary says why
    assert not (env["out"] / "runs").exists() or not any((env["out"] / "runs").iterdir())
    assert not list((env["out"] / "work").glob("*/distilled.pt"))  # a broken set is not kept for resuming


def test_budget_run_may_choose_its_ipc_when_balanced_and_declared(env):
    # Under a budget the method decides the IPC: 4 per class declared and delivered is valid.
    assert main(["run", "--method", "bad-extra", "--ipc", "2", "--budget", "5", *env["base"]]) == 0
    assert [(r[0], r[3]) for r in _rows(env["out"])] == [("ok", 12)]


def _set(labels, images=None, **kw):
    images = torch.zeros(len(labels), 1, 28, 28) if images is None else images
    return SyntheticSet(images, labels, **kw)


def test_check_output_units():
    ds = make_tiny_dataset(num_classes=3, per_class=4, test_per_class=2)
    ok = _set(torch.tensor([0, 1, 2]))
    assert check_output(ok, method="m", dataset=ds, ipc=1, budget=None) is ok
    soft = _set(torch.eye(3).repeat(2, 1))  # soft labels count by argmax: 2 per class
    assert check_output(soft, method="m", dataset=ds, ipc=2, budget=None) is soft
    cases = [
        ("not a set", "returned str, expected ddbench.api.SyntheticSet", None),
        (_set(torch.tensor([0, 1, 2]), torch.zeros(3, 1, 28, 28, dtype=torch.uint8)), "dtype torch.uint8", None),
        (_set(torch.tensor([0.0, 1.0, 2.0])), "expected N integer class indices", None),
        (_set(torch.ones(3, 4)), "soft labels of shape (3, 4)", None),
        (_set(torch.tensor([0, 1, 2]), ipc=1, generation_seconds=7.5), "spent 7.500 s generating, past its budget of 5 s", 5.0),
        (_set(torch.tensor([0, 1, 2]), ipc=2), "declared ipc=2 but returned 1 image(s) per class", 5.0),
        (_set(torch.tensor([0, 1, 1])), "per class [1, 2, 0]", None),
        (_set(torch.tensor([0, 1, 2]), lr=float("nan")), "returned an evaluation lr=nan", None),
    ]
    for syn, message, budget in cases:
        with pytest.raises(MethodOutputError) as exc:
            check_output(syn, method="m", dataset=ds, ipc=1, budget=budget)
        assert message in str(exc.value), (message, str(exc.value))
