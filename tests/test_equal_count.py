"""Equal-count accounting: a run's IPC is the images per class it produced, and every reference (report cells,
IOR, `run --reference`) is random real at that IPC; the shipped reference table is checked and labelled."""
from __future__ import annotations

import json
import sqlite3

import pytest

from ddbench.analysis import scores as S
from ddbench.analysis import scores_text as T
from ddbench.analysis.reference import reference_lines
from ddbench.analysis.report import build_report
from ddbench.cli import main
from ddbench.core.records import OK, RunRecord
from ddbench.store import shipped
from ddbench.store.identity import file_sha256
from ddbench.store.results import open_store, query, record

from sweep_plugin import write_config

TINY = ["--dataset", "tiny", "--protocol", "tiny-eval", "--no-progress"]


@pytest.fixture
def cli(tmp_path):
    """cli(*argv) -> exit code of `ddbench run` on the tiny test plugin, with this test's database."""
    config, out = write_config(tmp_path), tmp_path / "out"
    return lambda *argv: main(["run", "--config", config, "--out", str(out), *TINY, *argv]), out / "ddbench.sqlite"


def _tail(text: str, n: int = 3) -> list[str]:
    return [line.split()[0] for line in text.strip().splitlines()[-n:]]


def test_budget_run_stores_the_ipc_it_produced_and_is_paired_at_that_ipc(cli, tmp_path, capsys):
    run, db = cli
    assert run("--method", "gen", "--ipc", "2", "--budget", "5", "--set", "budget_ipc=4", "--reference", "random") == 0
    out = capsys.readouterr().out
    (gen,) = query(db)
    assert (gen.ipc, gen.images, gen.config["ipc"]) == (4, 12, 2)  # 3 classes x 4 images, asked --ipc 2
    assert "IPC / images       4 / 12" in out
    # no random run at IPC 4: the block names the one command that makes it, and ends with the difference
    command = "ddbench run --method random --dataset tiny --ipc 4 --seed 0 --protocol tiny-eval --eval-epochs 1 --eval-models 2"
    assert "no run at IPC 4 under this evaluation" in out and command in out
    assert _tail(out) == ["random", command.split()[0], "difference"]

    assert run(*command.split()[2:]) == 0  # that very command, then random at the IPC that was asked
    assert run("--method", "random", "--ipc", "2") == 0
    random4, random2 = (r for r in query(db, "method = 'random'") if r.ipc in (4, 2))
    assert random4.ipc == 4 and random2.ipc == 2 and random4.accuracy_mean != random2.accuracy_mean
    capsys.readouterr()
    assert run("--method", "gen", "--ipc", "2", "--budget", "5", "--set", "budget_ipc=4", "--reference", "random") == 0
    out = capsys.readouterr().out
    assert "equal count: gen vs random real at IPC 4" in out
    assert _tail(out) == ["gen", "random", "difference"]
    assert f"{random4.accuracy_mean:.2f} ± " in out.splitlines()[-2] and "1 run(s)" in out.splitlines()[-2]

    result = build_report(db, tmp_path / "report", methods=["random", "gen"])
    (sec,) = result.sections
    cell = sec.cells[("gen", 5.0, 4)]  # the IPC-4 column, beside random IPC 4
    assert cell.test is not None and ("gen", 5.0, 2) not in sec.cells
    assert cell.p_value is None and "1 seed(s) here, 1 in the reference" in cell.test.reason  # one seed a side
    (scored,) = [s for s in result.scores.scored if s.method == "gen"]
    assert scored.ipc == 4 and scored.random_accuracy == pytest.approx(random4.accuracy_mean)
    assert scored.ior == pytest.approx(scored.accuracy - random4.accuracy_mean)
    assert (tmp_path / "report" / "budget_vs_reference.png").is_file()


def _row(method, accs, ipc=10, budget=None, seed=0, meta=None, dataset="fashion-mnist", epochs=300):
    config = {"method": method, "dataset": dataset, "ipc": 10 if budget else ipc, "budget": budget, "protocol": "fast",
              "model": "convnet", "seed": seed, "protocol_settings": {"epochs": epochs, "n_models": len(accs)}}
    rec = RunRecord.start(config, f"h-{method}-{ipc}-{budget}-{seed}-{epochs}", status=OK)
    rec.ipc, rec.accuracies, rec.meta = ipc, list(accs), dict(meta or {})
    rec.accuracy_mean = sum(accs) / len(accs)
    rec.accuracy_std = 0.0
    return rec


def test_an_old_database_budget_row_reads_with_its_declared_ipc(tmp_path):
    db = open_store(tmp_path / "old.sqlite")
    old = _row("minmax-diffusion", [79.0, 80.0], ipc=10, budget=10.0, meta={"ipc_declared": 57})  # as stored before
    record(db, old)
    record(db, _row("random", [73.0, 74.0], ipc=10))
    record(db, _row("random", [84.0, 85.0], ipc=57))
    with sqlite3.connect(db) as con:  # the row on disk still says 10 ...
        assert con.execute("SELECT ipc FROM runs WHERE budget IS NOT NULL").fetchone()[0] == 10
    (row,) = query(db, "budget IS NOT NULL")
    assert row.ipc == 57 and row.config["ipc"] == 10  # ... and reads as the 57 images per class it holds
    (s,) = [s for s in S.score_rows(query(db), random_method="random", full_method="full") if s.method != "random"]
    assert (s.ipc, s.random_accuracy, s.ior) == (57, 84.5, -5.0)
    lines = reference_lines(db, row, "random", "random real")
    assert "84.50 ± 0.71 %" in lines[-2] and "-5.00 points" in lines[-1]


def test_ior_of_a_budget_run_uses_random_real_at_its_ipc_or_names_the_command():
    budget = _row("gen", [70.0], ipc=57, budget=10.0)
    (s,) = S.score_rows([budget, _row("random", [60.0], ipc=10)], random_method="random", full_method="full")[:1]
    assert s.ior is None and s.missing[0] == ("random IPC 57 (equal count): ddbench run --method random --ipc 57 "
                                              "--seed 0 --protocol fast --eval-epochs 300 --eval-models 1")
    scored = S.score_rows([budget, _row("random", [60.0], ipc=10), _row("random", [75.0], ipc=57)],
                          random_method="random", full_method="full")
    assert next(s for s in scored if s.method == "gen").ior == pytest.approx(-5.0)


# --------------------------------------------------------------------------------------------------
# The shipped reference table
# --------------------------------------------------------------------------------------------------

FP = "0123456789abcdef"


def _write_table(folder, rows, dataset="fashion-mnist"):
    path = folder / f"{dataset}.json"
    path.write_text(json.dumps({"dataset": dataset, "rows": rows}))
    path.with_name(path.name + ".sha256").write_text(f"{file_sha256(path)}  {path.name}\n")
    return path


def _shipped_row(accs, ipc=10, seed=0, epochs=300):
    return {"method": "random", "dataset": "fashion-mnist", "dataset_fingerprint": FP, "ipc": ipc, "protocol": "fast",
            "model": "convnet", "seed": seed, "protocol_settings": {"epochs": epochs, "n_models": len(accs)},
            "config_hash": f"c{ipc}{seed}{epochs}", "images": 10 * ipc, "accuracies": accs,
            "accuracy_mean": sum(accs) / len(accs), "accuracy_std": 0.0,
            "command": f"ddbench run --method random --ipc {ipc} --seed {seed} --protocol fast --eval-epochs {epochs}"}


def test_the_shipped_table_is_used_labelled_and_never_pooled(tmp_path, monkeypatch):
    _write_table(tmp_path, [_shipped_row([60.0, 62.0]), _shipped_row([64.0, 66.0], seed=1),
                            _shipped_row([10.0, 10.0], epochs=100)])  # another evaluation: not a match
    monkeypatch.setattr(shipped, "DATA_DIR", tmp_path)
    db = open_store(tmp_path / "r.sqlite")
    mine = _row("minmax-diffusion", [70.0, 71.0], meta={"dataset_fingerprint": FP})
    lines = reference_lines(db, mine, "random", "random real")
    assert "63.00 ± 2.83 %" in lines[-2]  # seed means 61 and 65, sample std over the 2 seeds
    assert "shipped reference, fashion-mnist.json, seeds 0,1: ± sample std over seeds (4 networks)" in lines[-2]
    assert "+7.50 points" in lines[-1]
    other_data = _row("minmax-diffusion", [70.0, 71.0], meta={"dataset_fingerprint": "another-data"})
    assert "make it with" in reference_lines(db, other_data, "random")[-3]  # other data: no shipped row fits
    (s,) = [s for s in T.score_report([mine], [mine]).scored]
    assert s.random_accuracy == pytest.approx(63.0) and s.random_source == "shipped reference"
    assert "63.00 (shipped reference)" in T.score_table([s])[1][0]
    record(db, _row("random", [50.0, 52.0], meta={"dataset_fingerprint": FP}))  # a local run: the shipped one steps aside
    lines = reference_lines(db, mine, "random", "random real")
    assert "51.00 ± 1.41 %" in lines[-2] and "shipped reference" not in "".join(lines)  # sample std, 2 networks


def test_a_tampered_or_unsigned_shipped_table_is_ignored_with_one_warning(tmp_path):
    path = _write_table(tmp_path, [_shipped_row([60.0, 62.0])])
    assert len(shipped.shipped_records("fashion-mnist", tmp_path)) == 1
    path.write_text(path.read_text().replace("60.0", "99.0"))
    warnings: list[str] = []
    assert shipped.shipped_records("fashion-mnist", tmp_path, warn=warnings.append) == []
    assert len(warnings) == 1 and "does not match its sha256" in warnings[0] and "ignored" in warnings[0]
    path.with_name(path.name + ".sha256").unlink()
    assert shipped.shipped_records("fashion-mnist", tmp_path, warn=warnings.append) == []
    assert "has no sha256" in warnings[-1]


def test_the_table_shipped_with_the_package_passes_its_check():
    rows = shipped.shipped_records("fashion-mnist", warn=pytest.fail)
    cells = {(r.ipc, r.protocol, r.config["protocol_settings"].get("epochs"), r.n_eval_models): set() for r in rows}
    for r in rows:
        cells[(r.ipc, r.protocol, r.config["protocol_settings"].get("epochs"), r.n_eval_models)].add(r.seed)
        assert r.method == "random" and r.run_id.startswith("shipped:") and shipped.is_shipped(r)
        assert f"--ipc {r.ipc} --seed {r.seed} --protocol {r.protocol}" in r.meta["command"]
        assert r.accuracy_mean == pytest.approx(sum(r.accuracies) / len(r.accuracies))
    assert cells == {(10, "fast", 100, 3): {0, 1, 2, 3, 4}, (1, "dsa", 1000, 5): {0, 1, 2, 3, 4}}


def test_the_shipped_table_travels_with_the_package():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(shipped.__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["ddbench"]
    assert "data/reference/*.json" in globs and "data/reference/*.sha256" in globs


def test_the_report_pairs_a_cell_with_the_shipped_reference_and_says_so(tmp_path, monkeypatch):
    _write_table(tmp_path, [_shipped_row([60.0, 62.0]), _shipped_row([64.0, 66.0], seed=1)])
    monkeypatch.setattr(shipped, "DATA_DIR", tmp_path)
    db = open_store(tmp_path / "r.sqlite")
    record(db, _row("gen", [70.0, 71.0], ipc=10, budget=10.0, meta={"dataset_fingerprint": FP}))
    record(db, _row("gen", [50.0, 51.0], ipc=3, budget=10.0, seed=1, meta={"dataset_fingerprint": FP}))
    result = build_report(db, tmp_path / "report", reference="random")
    (sec,) = result.sections
    ref = sec.cells[("random (shipped reference)", None, 10)]
    assert ref.is_reference and ref.mean == pytest.approx(63.0)
    tested = sec.cells[("gen", 10.0, 10)].test  # one gen seed against 2 shipped seeds: the pooled p only
    assert tested.p is None and tested.p_pooled is not None and tested.n_seeds == (1, 2)
    assert sec.cells[("gen", 10.0, 3)].test is None
    md = result.markdown.read_text()
    assert "| random (shipped reference) |" in md
    assert "IPC 3: `ddbench run --method random --ipc 3 --seed 0 --protocol fast --eval-epochs 300 --eval-models 2`" in md
