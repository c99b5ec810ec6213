"""plugins.toml parsing and setting resolution."""
from __future__ import annotations

import pytest

from ddbench.api import DDBenchError, Param, resolve_params
from ddbench.store.config import PACKAGED, config_warnings, effective, load_config, parse_sets


def _of(cfg, path, *args):
    return [layer.values for layer in cfg.sources(*args) if layer.label.startswith(str(path))]


def test_layers_per_dataset(tmp_path):
    cfg_file = tmp_path / "plugins.toml"
    cfg_file.write_text('[methods.dm]\niterations = 100\n[methods.dm.fashion-mnist]\niterations = 7\nlr_img = 2.0\n')
    cfg = load_config(str(cfg_file))
    assert _of(cfg, cfg_file, "methods", "dm", "fashion-mnist") == [{"iterations": 100}, {"iterations": 7, "lr_img": 2.0}]
    assert _of(cfg, cfg_file, "methods", "dm", "cifar10") == [{"iterations": 100}, {}]


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


def test_unset_by_default_param_with_bounds_takes_numbers_only():
    """A Param defaulting to None (e.g. minmax-diffusion's budget_guidance) with a bound is a number when set."""
    spec = {"scale": Param(None, min=1.0)}
    assert resolve_params("method x", spec) == {"scale": None}
    assert resolve_params("method x", spec, {"scale": "2"}) == {"scale": 2}
    with pytest.raises(DDBenchError, match=r"scale='abc' is not allowed; give a number >= 1.0 \(or leave it unset\)"):
        resolve_params("method x", spec, {"scale": "abc"})
    with pytest.raises(DDBenchError, match="below the minimum"):
        resolve_params("method x", spec, {"scale": "0.5"})
    assert resolve_params("method x", {"free": Param(None)}, {"free": "abc"}) == {"free": "abc"}  # no bound: any value


def test_parse_sets_splits_protocol_keys():
    assert parse_sets(["a=1", "eval.epochs=3"]) == ({"a": "1"}, {"epochs": "3"})
    with pytest.raises(DDBenchError, match="expected key=value"):
        parse_sets(["novalue"])


def test_files_layer_packaged_then_working_folder_then_config(tmp_path, monkeypatch):
    # A plugins.toml in the working folder adds to the packaged presets instead of replacing them (issue 12.3).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plugins.toml").write_text('[plugins]\nmodules = ["x_local"]\n[methods.dm.fashion-mnist]\nbatch_real = 16\n')
    explicit = tmp_path / "mine.toml"
    explicit.write_text('[methods.dm.fashion-mnist]\nbatch_real = 8\n')
    cfg = load_config(str(explicit))
    assert [f.layer for f in cfg.files] == ["packaged presets", "working folder", "--config"]
    assert cfg.modules == ["x_local"]
    from ddbench.run.runner import RunRequest, registry_for, resolve

    reg = registry_for(load_config(str(PACKAGED)))
    spec = reg.get("methods", "dm").params
    values = effective(spec, cfg.sources("methods", "dm", "fashion-mnist"))
    assert values["iterations"][0] == 150 and "packaged presets" in values["iterations"][1]  # kept from the preset
    assert values["batch_real"] == (8, f"{explicit} (--config) [methods.dm.fashion-mnist]")
    assert effective(spec, cfg.sources("methods", "dm", "fashion-mnist"), preset="paper")["iterations"] == (20000, "default")
    resolved = resolve(RunRequest(method="dm"), cfg, reg)
    assert resolved.method_params["iterations"] == 150 and resolved.method_params["batch_real"] == 8


def test_typos_in_tables_and_keys_are_warned_with_a_suggestion(tmp_path, registry):
    cfg_file = tmp_path / "plugins.toml"
    cfg_file.write_text('[methods.DM]\niterations = 1\n[methods.dm.fashion_mnist]\niterations = 2\n'
                        '[methods.nosuch]\n[methods.mtt]\niteration = 3\n[protocols.dsaa]\n')
    warnings = " | ".join(config_warnings(load_config(str(cfg_file)), registry))
    assert "[methods.DM] names no loaded method; did you mean 'dm'?" in warnings
    assert "[methods.dm.fashion_mnist] names no dataset; did you mean 'fashion-mnist'?" in warnings
    assert "[methods.nosuch] names no loaded method; valid: " in warnings
    assert "[methods.mtt] 'iteration' is no setting of method mtt; did you mean 'iterations'?" in warnings
    assert "[protocols.dsaa] names no loaded protocol; did you mean 'dsa'?" in warnings
    assert not [w for w in config_warnings(load_config(str(PACKAGED)), registry)]  # the shipped file is clean


def test_tables_of_a_left_out_plugin_are_not_typos_but_near_misses_still_are(tmp_path):
    """`gm` registers `dc` and `dsa-gm`: with it disabled, their packaged tables name no loaded method yet are no typo."""
    from ddbench.host.plugins import load_plugins

    reg = load_plugins(disabled=["gm"])
    assert "dc" not in reg.names("methods") and "random" in reg.names("methods")
    assert not config_warnings(load_config(str(PACKAGED)), reg)
    cfg_file = tmp_path / "plugins.toml"
    cfg_file.write_text("[methods.randon]\n[methods.nosuch]\n")
    warnings = " | ".join(config_warnings(load_config(str(cfg_file)), reg))
    assert "[methods.randon] names no loaded method; did you mean 'random'?" in warnings
    assert "nosuch" not in warnings


def test_binary_config_is_one_line(tmp_path):
    cfg_file = tmp_path / "plugins.toml"
    cfg_file.write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(DDBenchError, match="not a text file"):
        load_config(str(cfg_file))


def test_a_local_plugin_next_to_its_plugins_toml_imports(tmp_path, monkeypatch):
    import sys

    from ddbench.run.runner import registry_for

    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "ddbench_local_plugin_x.py").write_text(
        "from ddbench import hookimpl\nfrom ddbench.api import Method\n\n"
        "class M(Method):\n    name = 'local-x'\n\n    def distill(self, ctx):\n        raise NotImplementedError\n\n"
        "@hookimpl\ndef register_methods(register):\n    register(M())\n")
    (folder / "plugins.toml").write_text('[plugins]\nmodules = ["ddbench_local_plugin_x"]\n')
    monkeypatch.chdir(tmp_path)  # not the plugin's folder: it is found through its plugins.toml
    registry = registry_for(load_config(str(folder / "plugins.toml")))
    assert registry.owners["methods"]["local-x"] == "ddbench_local_plugin_x" and not registry.failed
