"""Protocols declare what their settings mean (`Param(role=...)`); the host reads the roles and names no key.

A protocol of any key names gets the same treatment as the built-in ones; a stored run whose protocol is not
loaded falls back to the roles it recorded; `ddbench report` reads the plugins its plugins.toml loads."""
from __future__ import annotations

import json

import pytest

from ddbench.analysis import scores as S
from ddbench.api import AUGMENTATION, EPOCHS, IMPLEMENTATION, NETWORKS, PRECISION, SPEED, Method, Param, Protocol
from ddbench.cli import main
from ddbench.core.records import ROLES_META, RunRecord, SettingRoles, evaluation_settings
from ddbench.core.roles import FULL_ROLE, RANDOM_ROLE
from ddbench.host.plugins import Registry, contract_problem, load_plugins
from ddbench.store.results import query
from sweep_plugin import write_config


def test_the_built_in_protocols_declare_the_roles_the_host_used_to_name():
    """The keys records.IMPLEMENTATION_KEYS and scores.AUG_KEY hard-coded before: stored databases read as before."""
    roles = load_plugins().setting_roles()
    assert roles.declared["dsa"] == roles.declared["fast"] == {
        "epochs": EPOCHS, "n_models": NETWORKS, "dsa": AUGMENTATION, "impl": IMPLEMENTATION, "parallel": SPEED,
        "micro_batch": SPEED, "max_parallel": SPEED, "test_batch": SPEED, "precision": PRECISION}
    assert roles.declared["soft"] == {"epochs": EPOCHS, "n_models": NETWORKS, "dsa": AUGMENTATION,
                                      "test_batch": SPEED, "max_parallel": SPEED}
    assert roles.declared["eccv2024"] == roles.declared["dsa"]


def test_a_role_is_checked_where_it_is_declared():
    with pytest.raises(ValueError, match="not one of"):
        Param(1, role="speedy")
    with pytest.raises(ValueError, match="bool"):
        Param(1, role=AUGMENTATION)

    class Twice(Protocol):
        name = "twice"
        params = {"a": Param(1, role=NETWORKS), "b": Param(2, role=NETWORKS), "c": Param(3, role=SPEED),
                  "d": Param(4, role=SPEED)}

        def evaluate(self, syn, ctx, settings):
            raise AssertionError

    assert "role 'networks' to more than one setting" in contract_problem("protocols", Twice())
    Twice.params = {"a": Param(1, role=NETWORKS), "c": Param(3, role=SPEED), "d": Param(4, role=SPEED)}
    assert contract_problem("protocols", Twice()) is None


class Ref(Method):
    def __init__(self, name, role):
        self.name, self.role = name, role

    def distill(self, ctx):
        raise AssertionError


class OwnKeys(Protocol):
    """A third party's protocol: none of the built-in key names."""

    name = "own"
    params = {"rounds": Param(3, role=NETWORKS), "threads": Param(1, role=SPEED), "flip": Param(True, role=AUGMENTATION),
              "passes": Param(10, role=EPOCHS), "lr": Param(0.1)}

    def evaluate(self, syn, ctx, settings):
        raise AssertionError


def _registry() -> Registry:
    reg = Registry()
    reg.add("protocols", OwnKeys(), "third-party")
    reg.add("methods", Ref("rnd", RANDOM_ROLE), "third-party")
    reg.add("methods", Ref("whole", FULL_ROLE), "third-party")
    return reg


def _row(method, accs, flip=True, threads=1, passes=10, lr=0.1, ipc=10, protocol="own", meta=None):
    settings = {"rounds": len(accs), "threads": threads, "flip": flip, "passes": passes, "lr": lr}
    return {"run_id": f"{method}-{flip}-{threads}-{passes}-{lr}-{ipc}", "status": "ok", "method": method,
            "dataset": "d", "ipc": ipc, "budget": None, "protocol": protocol, "model": "m", "seed": 0,
            "accuracies": list(accs), "config": {"protocol_settings": settings}, "meta": meta or {}}


def test_scores_read_a_third_party_protocols_roles():
    rows = [_row("mine", [80.0]), _row("mine", [70.0], flip=False),
            _row("rnd", [60.0, 62.0], threads=4),  # speed only, another network count: the reference still
            _row("rnd", [50.0], flip=False),
            _row("whole", [90.0], passes=2, ipc=6000),  # the full-data reference, at its own epochs
            _row("rnd", [10.0], lr=0.5)]  # a setting without a role counts: not this cell's reference
    by_flip = {s.augmented: s for s in S.score_rows(rows, registry=_registry()) if s.method == "mine"}
    on, off = by_flip[True], by_flip[False]
    assert (on.random_accuracy, off.random_accuracy, on.full_accuracy, on.epochs) == (61.0, 50.0, 90.0, 10)
    assert on.ars == pytest.approx(S.ars(80.0, 61.0, 70.0, 50.0))  # paired with its twin over `flip`


def test_a_run_whose_protocol_is_not_loaded_reads_the_roles_it_recorded():
    recorded = {"rounds": NETWORKS, "threads": SPEED}
    a = RunRecord.from_columns(_row("x", [1.0], threads=1, meta={ROLES_META: recorded}))
    b = RunRecord.from_columns(_row("x", [1.0, 2.0], threads=8, meta={ROLES_META: recorded}))
    nothing_loaded = SettingRoles()
    assert evaluation_settings(a, nothing_loaded) == evaluation_settings(b, nothing_loaded)
    # the loaded protocol's declaration wins over what a run recorded
    assert SettingRoles({"own": {"threads": SPEED}}).of(a) == {"threads": SPEED}
    # stored before protocols declared roles and not loaded: every setting counts
    old_a, old_b = (RunRecord.from_columns(_row("x", [1.0], threads=t)) for t in (1, 8))
    assert evaluation_settings(old_a, nothing_loaded) != evaluation_settings(old_b, nothing_loaded)


TINY = ["--dataset", "tiny", "--protocol", "tiny-eval", "--no-progress", "--ipc", "2"]


def test_a_run_records_its_protocols_roles_and_report_obeys_plugins_toml(tmp_path, capsys):
    config, out = write_config(tmp_path), str(tmp_path / "out")
    for method in ("random", "gen"):
        assert main(["run", "--config", config, "--out", out, *TINY, "--method", method]) == 0
    assert {r.method: r.meta[ROLES_META] for r in query(tmp_path / "out" / "ddbench.sqlite")} == {
        m: {"n_models": NETWORKS, "epochs": EPOCHS} for m in ("random", "gen")}

    def gen_cell(config_path: str) -> dict:
        capsys.readouterr()
        assert main(["report", "--config", config_path, "--out", out, "--json"]) == 0
        return next(s for s in json.loads(capsys.readouterr().out)["scores"] if s["method"] == "gen")

    assert gen_cell(config)["random_accuracy"] is not None
    denied = tmp_path / "denied.toml"
    denied.write_text('[plugins]\nenabled = ["sweep_plugin"]\ndisabled = ["random"]\nmodules = ["sweep_plugin"]\n')
    cell = gen_cell(str(denied))  # the random-real reference's plugin is denied: report does not use it
    assert cell["random_accuracy"] is None and any(m.startswith("random IPC 2") for m in cell["missing"])
