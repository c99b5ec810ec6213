"""`ddbench run --reference M`: the reference method's runs under the same evaluation, or how to compute them."""
from __future__ import annotations

from ddbench.records import OK, RunRecord
from ddbench.reference import reference_lines
from ddbench.results import open_store, record


def _rec(method, seed, accs, epochs=1000, ipc=10):
    config = {"method": method, "dataset": "fashion-mnist", "ipc": ipc, "budget": None, "protocol": "dsa",
              "model": "convnet", "seed": seed,
              "protocol_settings": {"epochs": epochs, "n_models": len(accs), "lr": 0.01, "impl": "fast"}}
    rec = RunRecord.start(config, f"h-{method}-{seed}-{epochs}-{ipc}", status=OK)
    rec.accuracies = list(accs)
    rec.accuracy_mean = sum(accs) / len(accs)
    rec.n_eval_models = len(accs)
    return rec


def test_reference_found_under_the_same_evaluation_only(tmp_path):
    db = open_store(tmp_path / "r.sqlite")
    record(db, _rec("random", 0, [70.0, 71.0, 72.0]))
    record(db, _rec("random", 1, [73.0, 74.0, 75.0]))
    record(db, _rec("random", 2, [50.0, 50.0, 50.0], epochs=300))  # another evaluation: never mixed in
    record(db, _rec("random", 3, [40.0, 40.0, 40.0], ipc=1))
    mine = _rec("minmax-diffusion", 0, [80.0, 81.0, 82.0])
    lines = reference_lines(db, mine, "random")
    assert lines[0].startswith("reference random: 72.50 ± 1.71 % (2 run(s), seeds 0,1, 6 networks")
    assert "+8.50 points" in lines[1] and "Welch p" in lines[1]


def test_missing_reference_names_the_command(tmp_path):
    db = open_store(tmp_path / "r.sqlite")
    lines = reference_lines(db, _rec("minmax-diffusion", 0, [80.0, 81.0]), "random")
    assert "no run under the same evaluation" in lines[0]
    assert lines[1].strip() == ("ddbench run --method random --dataset fashion-mnist --ipc 10 --protocol dsa "
                                "--model convnet --eval-models 2 --eval-epochs 1000")
