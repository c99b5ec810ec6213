"""plugins.toml parsing and setting resolution."""
from __future__ import annotations

import pytest

from ddbench.api import DDBenchError, Param, resolve_params
from ddbench.config import load_config, parse_sets


def test_layers_per_dataset(tmp_path):
    cfg_file = tmp_path / "plugins.toml"
    cfg_file.write_text('[methods.dm]\niterations = 100\n[methods.dm.fashion-mnist]\niterations = 7\nlr_img = 2.0\n')
    cfg = load_config(str(cfg_file))
    assert cfg.layers("methods", "dm", "fashion-mnist") == [{"iterations": 100}, {"iterations": 7, "lr_img": 2.0}]
    assert cfg.layers("methods", "dm", "cifar10") == [{"iterations": 100}, {}]


def test_malformed_toml_names_the_line(tmp_path):
    cfg_file = tmp_path / "plugins.toml"
    cfg_file.write_text("[plugins]\nenabled = [\n\n[methods\n")
    with pytest.raises(DDBenchError, match=r"malformed TOML.*line"):
        load_config(str(cfg_file))


def test_unknown_section_and_missing_file(tmp_path):
    cfg_file = tmp_path / "plugins.toml"
    cfg_file.write_text("[plugin]\n")
    with pytest.raises(DDBenchError, match=r"unknown section \[plugin\]"):
        load_config(str(cfg_file))
    with pytest.raises(DDBenchError, match="not found"):
        load_config(str(tmp_path / "absent.toml"))


def test_resolve_params_coerces_and_rejects():
    spec = {"steps": Param(10, min=1), "lam": Param(0.5, min=0.0), "flag": Param(True), "mode": Param("a", choices=("a", "b"))}
    out = resolve_params("method x", spec, {"steps": "20", "lam": "1e-3", "flag": "false", "mode": "b"})
    assert out == {"steps": 20, "lam": 0.001, "flag": False, "mode": "b"}
    with pytest.raises(DDBenchError, match=r"unknown setting 'stepz' for method x; allowed: flag, lam, mode, steps"):
        resolve_params("method x", spec, {"stepz": 1})
    with pytest.raises(DDBenchError, match=r"steps='ten' is not a valid int"):
        resolve_params("method x", spec, {"steps": "ten"})
    with pytest.raises(DDBenchError, match=r"steps='2.5' is not a valid int"):
        resolve_params("method x", spec, {"steps": "2.5"})
    with pytest.raises(DDBenchError, match="below the minimum"):
        resolve_params("method x", spec, {"lam": "-1"})
    with pytest.raises(DDBenchError, match="choose one of a, b"):
        resolve_params("method x", spec, {"mode": "c"})


def test_parse_sets_splits_protocol_keys():
    assert parse_sets(["a=1", "eval.epochs=3"]) == ({"a": "1"}, {"epochs": "3"})
    with pytest.raises(DDBenchError, match="expected key=value"):
        parse_sets(["novalue"])
