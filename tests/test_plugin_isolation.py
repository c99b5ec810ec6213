"""One bad plugin breaks nothing else (issue 12 items 4, 6, 7; issue 10 contracts checked at register time).

Every broken plugin is refused whole with a one-line reason naming it and what is wrong, shown by
`ddbench plugins` and as a warning on every command, while the other plugins keep working.
"""
from __future__ import annotations

import importlib.metadata as md
import sys
import types

import pytest

from ddbench import hookimpl
from ddbench.api import (Decision, Launcher, Method, Policy, SampleResult, Sampler, Throughput)
from ddbench.cli import main
from ddbench.host.plugins import load_plugins


def _module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn) if not getattr(fn, "_no_marker", False) else fn)
    return mod


class _Method(Method):
    def __init__(self, name):
        self.name = name

    def distill(self, ctx):  # pragma: no cover - never run here
        raise NotImplementedError


class GoodSampler(Sampler):
    name = "third-sampler"

    def measure(self, model, num_classes, image_shape, batch_size, guidance=1.0):
        return Throughput(0.01, 0.001, num_classes, batch_size)

    def generate(self, model, request):
        import torch

        k = request.num_classes
        return SampleResult(torch.zeros(k * (request.ipc or 1), *request.image_shape),
                            torch.arange(k).repeat_interleave(request.ipc or 1))


class GoodPolicy(Policy):
    name = "third-policy"

    def decide(self, request):
        return Decision(self.name, request.steps, "ipc", request.ipc, "fixed")


class GoodLauncher(Launcher):
    name = "third-launcher"

    def run(self, jobs, settings, parallelism, log):
        from ddbench.run.sweeps import run_job

        for job in jobs:
            yield job, run_job(job)


def _load(*plugins):
    return load_plugins(extra=list(plugins))


def test_third_party_launcher_sampler_and_policy_from_the_api_load():
    reg = _load(("third", _module("third",
                                   register_samplers=lambda register: register(GoodSampler()),
                                   register_policies=lambda register: register(GoodPolicy()),
                                   register_launchers=lambda register: register(GoodLauncher()))))
    assert not reg.failed, reg.problems()
    assert reg.owners["samplers"]["third-sampler"] == "third"
    assert reg.owners["policies"]["third-policy"] == "third"
    assert reg.owners["launchers"]["third-launcher"] == "third"


class DuckLauncher:  # provides the members without subclassing, but forgets run()
    name = "duck"
    params = {}

    def check(self, settings, parallelism):
        pass


class PartialSampler(Sampler):  # a subclass missing an abstract method cannot even be instantiated
    name = "partial"

    def measure(self, model, num_classes, image_shape, batch_size, guidance=1.0):
        return Throughput(0.0, 0.0, num_classes, batch_size)


class DuckPolicy:
    name = "duck-policy"


@pytest.mark.parametrize("hooks, message", [
    ({"register_launchers": lambda register: register(DuckLauncher())},
     "launcher 'duck' (DuckLauncher) lacks run(); a launcher must be a ddbench.api.Launcher"),
    ({"register_samplers": lambda register: register(PartialSampler())},
     "register_samplers raised TypeError: Can't instantiate abstract class PartialSampler"),
    ({"register_policies": lambda register: register(DuckPolicy())},
     "policy 'duck-policy' (DuckPolicy) lacks decide(); a policy must be a ddbench.api.Policy"),
    ({"register_methods": lambda register: register(GoodSampler())},  # an object of the wrong kind
     "method 'third-sampler' (GoodSampler) lacks validate(), distill()"),
    ({"register_methods": lambda register: register(_Method)},
     "registered the class _Method instead of an instance (_Method())"),
    ({"register_methods": lambda register: (register(_Method("fine")), 1 / 0)},
     "register_methods raised ZeroDivisionError: division by zero"),
    ({"register_method": lambda register: register(_Method("typo"))},  # misspelled hook name
     "implements a hook that does not exist"),
    ({"register_methods": lambda reg: reg(_Method("badarg"))},  # wrong argument name: pluggy refuses it
     "PluginValidationError"),
    ({"register_methods": lambda register: register(_Method("random"))},  # a name a built-in already has
     "method 'random' is registered twice: by plugin 'random' and by plugin 'bad'"),
])
def test_a_broken_plugin_is_refused_whole_and_the_rest_load(hooks, message):
    reg = _load(("bad", _module("bad", **hooks)), ("good", _module("good", register_methods=lambda register: register(_Method("mine")))))
    failed = {p.name: p.error for p in reg.failed}
    assert set(failed) == {"bad"}, reg.problems()
    assert message in failed["bad"], failed["bad"]
    assert "\n" not in failed["bad"]
    assert "mine" in reg.names("methods") and "random" in reg.names("methods")
    assert reg.owners["methods"]["random"] == "random"  # the built-in keeps its name
    assert not any(o == "bad" for owners in reg.owners.values() for o in owners.values())  # nothing half-loaded
    assert reg.problems()[0].startswith("warning: plugin 'bad'")


def test_every_command_works_beside_a_broken_plugin(tmp_path, capsys, monkeypatch):
    mod = _module("ddbench_broken_plugin", register_methods=lambda register: 1 / 0)
    monkeypatch.setitem(sys.modules, "ddbench_broken_plugin", mod)
    cfg = tmp_path / "plugins.toml"
    cfg.write_text('[plugins]\nmodules = ["ddbench_broken_plugin"]\n')
    assert main(["plugins", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "ddbench_broken_plugin" in out and "REFUSED: register_methods raised ZeroDivisionError" in out
    assert "remove 'ddbench_broken_plugin' from [plugins] modules" in out
    assert main(["list", "--config", str(cfg)]) == 0
    captured = capsys.readouterr()
    assert "random" in captured.out
    assert "warning: plugin 'ddbench_broken_plugin'" in captured.err and len(captured.err.strip().splitlines()) == 1


class _Dist:
    def __init__(self, name, eps):
        self.metadata = {"Name": name}
        self.version = "9.9"
        self.entry_points = [md.EntryPoint(n, v, "ddbench") for n, v in eps]


def test_entry_point_name_clash_loads_both(monkeypatch):
    a = _module("ddbench_clash_a", register_methods=lambda register: register(_Method("clash-a")))
    b = _module("ddbench_clash_b", register_methods=lambda register: register(_Method("clash-b")))
    monkeypatch.setitem(sys.modules, "ddbench_clash_a", a)
    monkeypatch.setitem(sys.modules, "ddbench_clash_b", b)
    real = md.distributions
    fakes = [_Dist("pkg-a", [("networks2", "ddbench_clash_a")]), _Dist("pkg-b", [("networks2", "ddbench_clash_b")])]
    monkeypatch.setattr(md, "distributions", lambda: [*real(), *fakes])
    reg = load_plugins()
    assert {"clash-a", "clash-b"} <= set(reg.names("methods"))
    assert reg.owners["methods"]["clash-b"] == "networks2[pkg-b]"
    assert any("entry point 'networks2' is defined by two distributions" in w for w in reg.warnings)


def test_allow_list_env_warns_about_unknown_names_and_explains_missing_methods(monkeypatch):
    monkeypatch.setenv("DDBENCH_LOAD_PLUGINS", "random,nosuch,ddbench")
    reg = load_plugins()
    assert reg.names("methods") == ["full", "random", "submission"]  # the host's own methods always load
    warnings = " ".join(reg.warnings)
    assert "DDBENCH_LOAD_PLUGINS names 'nosuch', which is no plugin" in warnings
    assert "'ddbench' is a distribution, its plugins are: " in warnings
    with pytest.raises(Exception, match=r"unknown method 'dm'; valid: full, random, submission; plugins not loaded: .*dm \(not in DDBENCH_LOAD_PLUGINS\)"):
        reg.get("methods", "dm")


def test_empty_allow_list_means_no_restriction_like_enabled(monkeypatch):
    monkeypatch.setenv("DDBENCH_LOAD_PLUGINS", " ")
    everything = load_plugins()
    monkeypatch.delenv("DDBENCH_LOAD_PLUGINS")
    assert everything.names("methods") == load_plugins(enabled=[]).names("methods")
    assert "random" in everything.names("methods") and "dm" in everything.names("methods")


THIRD_PARTY = '''
"""A sampler, a policy, a launcher and a method that uses the first two, written from ddbench.api and
docs/plugins.md alone."""
import torch

from ddbench import hookimpl
from ddbench.api import (Decision, Launcher, Method, PlanRequest, Policy, SampleRequest, SampleResult, Sampler,
                         SyntheticSet, Throughput)
from ddbench.run.sweeps import run_job


class NoiseSampler(Sampler):
    name = "noise-sampler"

    def measure(self, model, num_classes, image_shape, batch_size, guidance=1.0):
        return Throughput(a=0.001, b=0.0001, num_classes=num_classes, batch_size=batch_size)

    def generate(self, model, request):
        g = torch.Generator().manual_seed(request.seed)
        n = request.ipc * request.num_classes
        return SampleResult(torch.randn(n, *request.image_shape, generator=g),
                            torch.arange(request.num_classes).repeat_interleave(request.ipc), {"steps": request.steps})


class AsAskedPolicy(Policy):
    name = "as-asked"

    def decide(self, request):
        return Decision(self.name, request.min_steps, "ipc", request.ipc, "the asked IPC at the fewest steps")


class ThirdGen(Method):
    name = "third-gen"
    description = "noise through a third-party sampler and policy"

    def distill(self, ctx):
        ds = ctx.dataset
        shape = (ds.channels, ds.image_size, ds.image_size)
        sampler, policy = ctx.registry.get("samplers", "noise-sampler"), ctx.registry.get("policies", "as-asked")
        thr = sampler.measure(None, ds.num_classes, shape, 16)
        decision = policy.decide(PlanRequest(ds.num_classes, None, ctx.ipc, 10, 2, 50, thr))
        out = sampler.generate(None, SampleRequest(ds.num_classes, decision.steps, shape, ipc=decision.ipc,
                                                   seed=ctx.seed))
        return SyntheticSet(out.images, out.labels, {"policy": decision.as_meta(), **out.stats})


class InProcess(Launcher):
    name = "in-process"

    def run(self, jobs, settings, parallelism, log):
        for job in jobs:
            rec = run_job(job)
            rec.meta["launched_by"] = self.name
            yield job, rec


@hookimpl
def register_samplers(register):
    register(NoiseSampler())


@hookimpl
def register_policies(register):
    register(AsAskedPolicy())


@hookimpl
def register_methods(register):
    register(ThirdGen())


@hookimpl
def register_launchers(register):
    register(InProcess())
'''


def test_a_third_party_sampler_policy_and_launcher_work_end_to_end(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from ddbench.store.results import query

    (tmp_path / "third_party_mod.py").write_text(THIRD_PARTY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent / "plugins"))
    cfg = tmp_path / "plugins.toml"
    cfg.write_text('[plugins]\nmodules = ["tiny_plugin", "third_party_mod"]\n')
    base = ["--config", str(cfg), "--out", str(tmp_path / "out"), "--dataset", "tiny", "--protocol", "fast",
            "--eval-epochs", "1", "--eval-models", "1", "--no-progress"]
    assert main(["run", "--method", "third-gen", "--ipc", "2", *base]) == 0
    assert main(["compare", "--methods", "third-gen", "--ipc", "1", "--launcher", "in-process", "--no-report", *base]) == 0
    rows = query(tmp_path / "out" / "ddbench.sqlite")
    assert [(r.status, r.ipc, r.images) for r in rows] == [("ok", 2, 6), ("ok", 1, 3)]
    assert rows[0].meta["policy"]["policy"] == "as-asked" and rows[0].meta["steps"] == 2
    assert rows[1].meta["launched_by"] == "in-process"
    assert "warning" not in capsys.readouterr().err


def test_a_third_party_cannot_displace_a_bundled_method(monkeypatch):
    impostor = _module("ddbench_impostor", register_methods=lambda register: register(_Method("random")))
    monkeypatch.setitem(sys.modules, "ddbench_impostor", impostor)
    real = md.distributions
    monkeypatch.setattr(md, "distributions", lambda: [_Dist("aaa-first", [("impostor", "ddbench_impostor")]), *real()])
    reg = load_plugins()
    assert reg.owners["methods"]["random"] == "random"  # the bundled one, although the impostor was found first
    assert {p.name: p.error for p in reg.failed} == {
        "impostor": "method 'random' is registered twice: by plugin 'random' and by plugin 'impostor'"}


def test_an_exit_from_a_signal_handler_is_the_process_ending_not_the_plugin():
    # submitit requeues a preempted SLURM job by sys.exit(-1) from its SIGUSR2 handler while the plugin's code runs:
    # that exit must go on up (the job is requeued), not become the plugin's failure; the plugin's own exit still is
    import os
    import signal
    import sys

    from ddbench.host.guard import PluginExit, plugin_call

    def requeue(signum, frame):
        sys.exit(-1)

    old = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(SystemExit) as info:
            plugin_call("protocol 'p' (plugin 'x')", "evaluate()", lambda: os.kill(os.getpid(), signal.SIGUSR2))
        assert not isinstance(info.value, PluginExit) and info.value.code == -1
        with pytest.raises(PluginExit, match="called sys.exit"):
            plugin_call("protocol 'p' (plugin 'x')", "evaluate()", lambda: sys.exit(-1))
    finally:
        signal.signal(signal.SIGUSR2, old)
