"""IOR / HLR / LRS / ARS (DD-Ranking) as pure functions with fractions in the exponent, their lookup of the
random and full-data reference runs in database rows, the cross-architecture table, and the `full` method."""
from __future__ import annotations

import math
import itertools

import pytest
import torch

from ddbench.api import DDBenchError
from ddbench.analysis import scores as S
from ddbench.analysis import scores_text as T

E = math.e


def test_robust_score_maps_fractions_onto_unit_interval():
    assert S.robust_score(-1.0) == pytest.approx(0.0)
    assert S.robust_score(1.0) == pytest.approx(1.0)
    assert S.robust_score(0.0) == pytest.approx((1 - 1 / E) / (E - 1 / E))  # 0.2689...
    with pytest.raises(DDBenchError, match="outside \\[-1, 1\\].*fractions"):
        S.robust_score(5.0)  # DD-Ranking's code would take 10 points / 2 = 5 here


def test_ior_hlr_are_percentage_points():
    assert S.ior(80.0, 74.8) == pytest.approx(5.2)
    assert S.hlr(93.5, 80.0) == pytest.approx(13.5)
    with pytest.raises(DDBenchError, match="acc_syn=120.0 is not an accuracy"):
        S.ior(120.0, 50.0)


def test_lrs_uses_fractions_in_the_exponent():
    # IOR 10 points, HLR 20 points, w = 0.5: alpha = 0.5*0.10 - 0.5*0.20 = -0.05
    expected = (math.exp(-0.05) - math.exp(-1)) / (E - math.exp(-1))
    assert S.lrs(10.0, 20.0) == pytest.approx(expected)
    assert 0.0 <= S.lrs(10.0, 20.0) <= 1.0
    # the best and the worst sets the definition allows
    assert S.lrs(100.0, -100.0) == pytest.approx(1.0)
    assert S.lrs(-100.0, 100.0) == pytest.approx(0.0)
    # more improvement over random, or less gap to the full data, scores higher
    assert S.lrs(12.0, 20.0) > S.lrs(10.0, 20.0) > S.lrs(10.0, 25.0)
    with pytest.raises(DDBenchError, match="w=1.5"):
        S.lrs(1.0, 1.0, w=1.5)
    with pytest.raises(DDBenchError, match="impossible"):
        S.lrs(150.0, 0.0)


def test_ars_weights_the_two_iors():
    # with aug: 80 vs 70 (+10 points); without: 60 vs 65 (-5 points); beta = 0.5*0.10 + 0.5*(-0.05) = 0.025
    expected = (math.exp(0.025) - math.exp(-1)) / (E - math.exp(-1))
    assert S.ars(80, 70, 60, 65) == pytest.approx(expected)
    assert S.ars(80, 70, 60, 65, w=1.0) == pytest.approx(S.robust_score(0.10))


# --------------------------------------------------------------------------------------------------
# From database rows
# --------------------------------------------------------------------------------------------------

_ids = itertools.count()


def row(method, accs, ipc=10, model="convnet", protocol="fast", dsa=True, epochs=300, budget=None, seed=0,
        status="ok", dataset="fashion-mnist", impl="fast", n_models=None):
    return {
        "run_id": f"r{next(_ids)}", "status": status, "method": method, "dataset": dataset, "ipc": ipc,
        "budget": budget, "protocol": protocol, "model": model, "seed": seed, "accuracies": list(accs),
        "accuracy_mean": sum(accs) / len(accs) if accs else None,
        "config": {"protocol_settings": {"epochs": epochs, "dsa": dsa, "lr": 0.01, "impl": impl,
                                         "n_models": n_models or len(accs)}},
    }


def test_scores_find_their_references():
    rows = [
        row("random", [74.0, 76.0]),
        row("random", [70.0], seed=1, impl="loop"),  # another seed, other implementation: pooled
        row("full", [93.0, 93.0], ipc=6000, epochs=20),  # IPC and epochs of the full run are ignored
        row("dm", [78.0, 80.0]),
        row("dm", [50.0, 50.0], status="failed"),
        row("random", [60.0], epochs=1000),  # other settings: not this cell's reference
    ]
    scored = {(s.method, s.ipc, s.model, s.augmented): s for s in S.score_rows(rows)}
    dm = scored[("dm", 10, "convnet", True)]
    assert dm.accuracy == pytest.approx(79.0) and dm.n == 2
    assert dm.random_accuracy == pytest.approx((75.0 + 70.0) / 2)  # the mean of the seed means, not of 3 networks
    assert dm.full_accuracy == pytest.approx(93.0)
    assert dm.ior == pytest.approx(79.0 - 72.5)
    assert (dm.std_over, dm.n_seeds, dm.std) == ("networks", 1, pytest.approx(2 ** 0.5))  # one seed: its networks
    assert dm.hlr == pytest.approx(14.0)
    assert dm.lrs == pytest.approx(S.lrs(dm.ior, dm.hlr))
    assert len(dm.random_runs) == 2 and len(dm.full_runs) == 1
    assert "full" not in {s.method for s in scored.values()}
    rnd = scored[("random", 10, "convnet", True)]
    assert rnd.ior == pytest.approx(0.0)
    assert rnd.ars is None and any(m.startswith("no-augmentation twin: ddbench run --method") for m in rnd.missing)


def test_missing_references_say_so():
    (s,) = S.score_rows([row("dm", [78.0], ipc=1)])
    assert s.ior is None and s.hlr is None and s.lrs is None
    assert s.missing[:2] == ["random IPC 1 (equal count): ddbench run --method random --ipc 1 --seed 0 --protocol fast "
                             "--eval-epochs 300 --eval-models 1",
                             "full data (N = the training set's images per class; `full` names it if wrong): ddbench run "
                             "--method full --ipc N --seed 0 --protocol fast --eval-epochs 20 --eval-models 1"]


def test_references_do_not_cross_architectures_or_datasets():
    rows = [row("random", [70.0], model="alexnet"), row("random", [70.0], dataset="mnist"), row("dm", [78.0])]
    dm = next(s for s in S.score_rows(rows) if s.method == "dm")
    assert dm.random_accuracy is None


def test_ars_pairs_the_augmentation_twins():
    rows = [row("random", [70.0], dsa=True), row("random", [65.0], dsa=False),
            row("dm", [80.0], dsa=True), row("dm", [60.0], dsa=False)]
    by = {(s.method, s.augmented): s for s in S.score_rows(rows)}
    assert by[("dm", True)].ars == pytest.approx(S.ars(80, 70, 60, 65))
    assert by[("dm", False)].ars == pytest.approx(by[("dm", True)].ars)


def test_score_table_columns():
    rows = [row("random", [70.0]), row("full", [93.0], ipc=6000), row("dm", [80.0])]
    header, body = T.score_table(S.score_rows(rows), method_order=["dm", "random"])
    assert header == ["method", "model", "IPC", "aug", "epochs", "accuracy", "random real", "full data", "IOR", "HLR", "LRS", "ARS"]
    assert body[0][:6] == ["dm", "convnet", "10", "on", "300", "80.00 ± - (1 seed, 1 net)"]  # one value: no std
    assert body[0][8:10] == ["+10.00", "+13.00"]
    assert body[0][10] == f"{100 * S.lrs(10, 13):.2f}"
    assert body[0][11] == "-"


def test_cross_architecture_table():
    rows = []
    for model, base in (("convnet", 70.0), ("alexnet", 60.0), ("resnet18", 50.0)):
        rows += [row("random", [base, base + 2], model=model), row("dm", [base + 8], model=model),
                 row("full", [90.0], model=model, ipc=6000)]
    header, body = T.cross_architecture_table(rows, method_order=["random", "dm"],
                                              model_order=["convnet", "resnet18", "alexnet"])
    assert header == ["method", "convnet", "resnet18", "alexnet"]
    assert body == [["random", "71.00 ± 1.41 (1 seed, 2 nets)", "51.00 ± 1.41 (1 seed, 2 nets)",
                     "61.00 ± 1.41 (1 seed, 2 nets)"],  # sample std of the one seed's 2 networks
                    ["dm", "78.00 ± - (1 seed, 1 net)", "58.00 ± - (1 seed, 1 net)", "68.00 ± - (1 seed, 1 net)"]]
    _, ior_body = T.cross_architecture_table(rows, value="ior", model_order=["convnet"])
    assert ior_body[1][:2] == ["dm", "+7.00"]
    with pytest.raises(DDBenchError, match="value 'acc'"):
        T.cross_architecture_table(rows, value="acc")
    with pytest.raises(DDBenchError, match="pick one with ipc="):
        T.cross_architecture_table(rows + [row("dm", [50.0], ipc=1)])
    with pytest.raises(DDBenchError, match="mix datasets"):
        T.cross_architecture_table(rows + [row("dm", [50.0], dsa=False)])
    with pytest.raises(DDBenchError, match="mix datasets, protocols or evaluation settings .*epochs 100"):
        T.cross_architecture_table(rows + [row("dm", [50.0], epochs=100)])


def test_shown_cells_keep_their_own_accuracy_while_references_come_from_everything():
    """A compare's report scores its own runs; other seeds of the same cell elsewhere in the database do not
    leak into its accuracy column (they still serve as references and as the ARS twin)."""
    shown = [row("dm", [78.0], seed=0)]
    everything = shown + [row("dm", [60.0], seed=1), row("random", [70.0]), row("random", [72.0], seed=1),
                          row("dm", [76.0], dsa=False), row("random", [71.0], dsa=False)]
    (s,) = T.score_report(everything, shown).scored
    assert (s.accuracy, s.n, s.random_accuracy, s.ior) == (78.0, 1, 71.0, 7.0)
    assert s.ars is not None and not any(m.startswith("no-augmentation twin") for m in s.missing)


def test_report_gives_each_evaluation_setting_its_own_cross_architecture_table():
    """Runs of 100 and 300 epochs never share a cell (one would silently replace the other)."""
    rows = []
    for model in ("convnet", "alexnet"):
        rows += [row("dm", [78.0], model=model), row("dm", [60.0], model=model, epochs=100)]
    rep = T.score_report(rows, rows, model_order=["convnet", "alexnet"])
    assert sorted((c["epochs"], c["rows"][0][1]) for c in rep.cross) == [(100, "60.00 ± - (1 seed, 1 net)"),
                                                                            (300, "78.00 ± - (1 seed, 1 net)")]
    assert "IPC 10 · 100 epochs · augmentation on" in rep.terminal


def test_scores_json_round_trip():
    import json

    (s,) = S.score_rows([row("dm", [78.0])])
    assert json.loads(json.dumps(s.as_json()))["method"] == "dm"


# --------------------------------------------------------------------------------------------------
# The `full` reference method
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def full_ctx(make_ctx):
    from ddbench.host.plugins import load_plugins

    registry = load_plugins(modules=["ddbench.default_plugins.full_data_method"])

    def build(ipc):
        method, ctx = make_ctx("random", ipc=ipc)
        ctx.registry = registry
        return registry.get("methods", "full"), ctx

    return build


def test_full_method_returns_the_whole_training_set(full_ctx):
    method, ctx = full_ctx(20)  # the tiny dataset has 20 images of each of 3 classes
    method.validate(ctx)
    syn = method.distill(ctx)
    assert torch.equal(syn.images, ctx.dataset.train_x) and torch.equal(syn.labels, ctx.dataset.train_y)
    from ddbench.host.output_checks import check_output

    check_output(syn, method="full", dataset=ctx.dataset, ipc=20, budget=None)


def test_full_method_names_the_right_ipc(full_ctx):
    method, ctx = full_ctx(10)
    with pytest.raises(DDBenchError, match="pass --ipc 20 .*not 10"):
        method.validate(ctx)
    ctx.dataset.train_y[0] = 1  # now 19 / 21 / 20 images per class
    with pytest.raises(DDBenchError, match="class-balanced dataset; tiny has 19..21"):
        method.validate(ctx)


def test_score_report_for_the_report(tmp_path):
    rows = []
    for model in ("convnet", "alexnet"):
        rows += [row("random", [70.0], model=model), row("dm", [78.0], model=model)]
    refs = [row("full", [90.0], model="convnet", ipc=6000), row("random", [10.0], ipc=1)]
    rep = T.score_report(rows + refs, rows, method_order=["random", "dm"], model_order=["convnet", "alexnet"])
    assert "IOR" in rep.terminal and "cross-architecture accuracy % — fashion-mnist · protocol fast · IPC 10 · 300 epochs" in rep.terminal
    assert "| method | convnet | alexnet |" in rep.markdown
    dm_conv = next(s for s in rep.scored if s.method == "dm" and s.model == "convnet")
    assert dm_conv.hlr == pytest.approx(12.0) and dm_conv.lrs is not None
    dm_alex = next(s for s in rep.scored if s.method == "dm" and s.model == "alexnet")
    assert dm_alex.hlr is None and any(m.startswith("full data") and "--method full --ipc N" in m and "--model alexnet" in m
                                       for m in dm_alex.missing)  # no full run on alexnet
    assert {s.ipc for s in rep.scored} == {10}  # the IPC-1 random reference is not a shown cell
    assert "missing references" in rep.terminal and "\n     full data (N = the training set's images per class" in rep.terminal
    js = rep.as_json()
    assert js["units"]["lrs"].startswith("fraction") and js["cross_architecture"][0]["header"] == ["method", "convnet", "alexnet"]
    # one architecture only: no cross table
    one = T.score_report(rows[:2], rows[:2])
    assert one.cross == [] and "cross-architecture" not in one.terminal
