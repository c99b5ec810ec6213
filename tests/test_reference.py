"""`ddbench run --reference M`: the reference method's runs under the same evaluation, or how to compute them."""
from __future__ import annotations

from ddbench.analysis.reference import reference_lines
from ddbench.core.records import OK, RunRecord
from ddbench.store.results import open_store, record


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
    lines = reference_lines(db, mine, "random", "random real")
    assert lines[0].startswith("== equal count: minmax-diffusion vs random real at IPC 10")
    assert lines[-3].split()[:4] == ["minmax-diffusion", "81.00", "±", "0.82"]
    assert "(seed 0; ± population std of its 3 networks, as np.std)" in lines[-3]  # a run's own figure
    # the reference: seed means 71 and 74, ± their sample std over the 2 seeds
    assert "72.50 ± 2.12 %" in lines[-2] and "2 run(s)" in lines[-2]
    assert "seeds 0,1: ± sample std over seeds (6 networks)" in lines[-2]
    assert "+8.50 points" in lines[-1] and "no p-value: one run is one seed of minmax-diffusion" in lines[-1]
    assert "p =" not in lines[-1] and "p=" not in lines[-1]


def test_missing_reference_names_the_command(tmp_path):
    db = open_store(tmp_path / "r.sqlite")
    lines = reference_lines(db, _rec("minmax-diffusion", 0, [80.0, 81.0]), "random")
    assert "no run at IPC 10 under this evaluation" in lines[-3]
    assert lines[-2].strip() == ("ddbench run --method random --ipc 10 --seed 0 --protocol dsa --eval-epochs 1000 "
                                 "--eval-models 2")
    assert lines[-1].split() == ["difference", "-"]
