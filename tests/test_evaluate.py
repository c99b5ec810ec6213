"""The dsa/fast protocols: both implementations, seeding, settings, bad input (tiny shapes)."""
import pytest
import torch
import torch.nn.functional as F

import ddbench.default_plugins.dsa_protocols as ev
import ddbench.default_plugins.dsa_training as dsa_training
from ddbench.api import DDBenchError, ModelSpec, RunContext, SyntheticSet, resolve_params
from ddbench.default_plugins.convnet_models import StackedConvNet
from ddbench.host.augment import DSA
from ddbench.host.plugins import Registry

from conftest import make_tiny_dataset

TINY = dict(epochs=1, n_models=2)


@pytest.fixture
def ctx(registry, tmp_path):
    ds = make_tiny_dataset(num_classes=3, per_class=4, test_per_class=4, size=12)
    return RunContext(dataset=ds, ipc=2, seed=0, device=torch.device("cpu"), params={}, model="convnet",
                      registry=registry, work_dir=tmp_path, cache_dir=tmp_path, progress=False, log=lambda m: None)


@pytest.fixture
def syn(ctx):
    ds = ctx.dataset
    return SyntheticSet(ds.train_x[::2].clone(), ds.train_y[::2].clone())


def test_registered_with_cited_defaults(registry):
    dsa, fast = registry.get("protocols", "dsa"), registry.get("protocols", "fast")
    assert dsa.params["epochs"].default == 1000 and fast.params["epochs"].default == 300
    for proto in (dsa, fast):
        d = {k: p.default for k, p in proto.params.items()}
        assert (d["lr"], d["momentum"], d["weight_decay"], d["batch_size"], d["n_models"]) == (0.01, 0.9, 0.0005, 256, 5)
        assert d["dsa"] is True and d["impl"] == "fast" and d["use_syn_lr"] is True
        assert all(p.source for p in proto.params.values())
    assert ev.lr_decay_epoch(1000) == 501


@pytest.mark.parametrize("impl", ["loop", "fast"])
def test_accuracies_in_range_and_n_models(ctx, syn, impl):
    r = ctx.evaluate(syn, "fast", impl=impl, epochs=1, n_models=2)
    assert len(r.accuracies) == 2 and all(0 <= a <= 100 for a in r.accuracies)
    assert r.details["impl"] == impl and r.seconds > 0
    if impl == "fast":
        assert r.details["parallel"] == "threads"  # auto on a CPU


def test_same_seed_same_first_step_gradients(ctx, syn):
    images, labels = syn.images, syn.labels
    dsa = DSA()
    loop_nets, loop_gens = zip(*(ev.init_network(ctx, i) for i in range(3)))
    fast_nets, fast_gens = zip(*(ev.init_network(ctx, i) for i in range(3)))
    stacked = StackedConvNet.from_nets(list(fast_nets))
    perms = torch.stack([torch.randperm(len(images), generator=g) for g in fast_gens])
    x, y = dsa_training.stacked_batch(images, labels, perms[:, :256], dsa, fast_gens)
    dsa_training.stacked_loss(stacked(x), y).backward()
    for i, (net, g) in enumerate(zip(loop_nets, loop_gens)):
        perm = torch.randperm(len(images), generator=g)
        assert torch.equal(perm, perms[i])
        F.cross_entropy(net(dsa(images[perm[:256]], generator=g)), labels[perm[:256]]).backward()
        sl = slice(128 * i, 128 * (i + 1))
        torch.testing.assert_close(stacked.conv_w[0].grad[sl], net.features[0].weight.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(stacked.norm_w[2].grad[sl], net.features[9].weight.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(stacked.fc_w.grad[i], net.classifier.weight.grad, atol=1e-5, rtol=1e-4)


def test_same_seed_same_trained_parameters(ctx, syn):
    settings = resolve_params("fast", ctx.registry.get("protocols", "fast").params, dict(epochs=2, batch_size=4))
    dsa = DSA()
    nets, gens = zip(*(ev.init_network(ctx, i) for i in range(2)))
    stacked = StackedConvNet.from_nets(list(nets))
    ev.train_stacked(stacked, list(gens), syn.images, syn.labels, dsa, settings, 0.01)
    trained = stacked.to_nets([ev.init_network(ctx, i)[0] for i in range(2)])
    for i in range(2):
        net, g = ev.init_network(ctx, i)
        ev._train_one(net, g, syn.images, syn.labels, dsa, settings, 0.01)
        for a, b in zip(net.parameters(), trained[i].parameters()):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_threads_equal_the_single_threaded_loop(ctx, syn):
    fast = ctx.evaluate(syn, "fast", impl="fast", parallel="threads", micro_batch=0, epochs=1, n_models=3)
    assert fast.details["parallel"] == "threads" and fast.details["workers"] == ev.worker_count(3, 0, torch.get_num_threads())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loop = ctx.evaluate(syn, "fast", impl="loop", epochs=1, n_models=3)
    finally:
        torch.set_num_threads(threads)
    assert fast.accuracies == loop.accuracies
    assert fast.details["train_accuracies"] == loop.details["train_accuracies"]
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("n,cap,threads,expected", [
    (5, 0, 2, 5),    # 2+2+1 would idle a core for the last round: all five at once, the OS shares the cores
    (4, 0, 2, 2),    # whole rounds: one network per core
    (3, 0, 16, 3),   # fewer networks than cores: each gets threads // 3 intra-op threads
    (5, 1, 2, 1),    # the memory cap wins
    (10, 3, 2, 3),
])
def test_worker_count_balances_rounds_and_keeps_the_cap(n, cap, threads, expected):
    assert ev.worker_count(n, cap, threads) == expected


def test_micro_batches_give_the_same_training(ctx, syn):
    settings = resolve_params("fast", ctx.registry.get("protocols", "fast").params, dict(epochs=1))
    dsa = DSA()
    trained = []
    for micro in (0, 2):
        net, g = ev.init_network(ctx, 0)
        ev._train_one(net, g, syn.images, syn.labels, dsa, settings, 0.01, micro=micro)
        trained.append(list(net.parameters()))
    for a, b in zip(*trained):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_max_parallel_threads(ctx, syn, monkeypatch):
    import threading

    active, peak, lock = [0], [0], threading.Lock()
    real = ev._train_one

    def spy(*a, **k):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return real(*a, **k)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(ev, "_train_one", spy)
    r = ctx.evaluate(syn, "fast", parallel="threads", epochs=1, n_models=4, max_parallel=1)
    assert peak[0] == 1 and r.details["workers"] == 1 and len(r.accuracies) == 4


def test_max_parallel_stacked(ctx, syn, monkeypatch):
    sizes = []
    real = StackedConvNet.from_nets

    def spy(nets):
        sizes.append(len(nets))
        return real(nets)

    monkeypatch.setattr(ev.StackedConvNet, "from_nets", staticmethod(spy))
    r = ctx.evaluate(syn, "fast", impl="fast", parallel="stacked", epochs=1, n_models=5, max_parallel=2)
    assert sizes == [2, 2, 1] and len(r.accuracies) == 5 and r.details["max_parallel"] == 2


def test_use_syn_lr(ctx, syn):
    syn.lr = 0.02
    assert ctx.evaluate(syn, "fast", epochs=1, n_models=1).details["lr"] == 0.02
    assert ctx.evaluate(syn, "fast", epochs=1, n_models=1, use_syn_lr=False).details["lr"] == 0.01


def test_seeded_results_repeat(ctx, syn):
    a = ctx.evaluate(syn, "fast", impl="loop", **TINY).accuracies
    assert ctx.evaluate(syn, "fast", impl="loop", **TINY).accuracies == a


def test_non_convnet_falls_back_to_loop(ctx, syn):
    reg = Registry()
    reg.add("models", ModelSpec("mlp", lambda c, k, s: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * s * s, k))), "t")
    for proto in ctx.registry.items["protocols"].values():
        reg.add("protocols", proto, "t")
    ctx.registry, ctx.model = reg, "mlp"
    r = ctx.evaluate(syn, "fast", **TINY)
    assert r.details["impl"] == "loop" and "fallback" in r.details


@pytest.mark.parametrize("overrides,match", [
    ({"impl": "gpu"}, "impl='gpu' is not allowed"),
    ({"parallel": "processes"}, "parallel='processes' is not allowed"),
    ({"n_models": 0}, "below the minimum"),
    ({"epochs": "ten"}, "not a valid int"),
    ({"max_parallel": -1}, "below the minimum"),
    ({"bogus": 1}, "unknown setting 'bogus'"),
    ({"dsa_strategy": "color_blur"}, "unknown DSA augmentation 'blur'"),
])
def test_bad_settings(ctx, syn, overrides, match):
    with pytest.raises(DDBenchError, match=match):
        ctx.evaluate(syn, "fast", **{**TINY, **overrides})


def test_bad_synthetic_sets(ctx, syn):
    with pytest.raises(DDBenchError, match="shape"):
        ctx.evaluate(SyntheticSet(torch.zeros(2, 3, 12, 12), torch.zeros(2, dtype=torch.long)), "fast", **TINY)
    with pytest.raises(DDBenchError, match="labels must lie"):
        ctx.evaluate(SyntheticSet(syn.images, syn.labels + 5), "fast", **TINY)
    syn.lr = -1.0
    with pytest.raises(DDBenchError, match="lr=-1.0"):
        ctx.evaluate(syn, "fast", **TINY)


@pytest.mark.parametrize("impl", ["loop", "fast"])
def test_zca_evaluation_whitens_the_set_and_the_test_set_alike(ctx, syn, monkeypatch, impl):
    # Issue 12.10: never train in one space and test in another; eval.zca=true is MTT's --zca evaluation.
    from ddbench.host.zca import fit_zca

    seen = {}
    real_test = ev.test_accuracy

    def spy(net, run_ctx, batch, *precision):
        seen["test"] = run_ctx.dataset
        return real_test(net, run_ctx, batch, *precision)

    monkeypatch.setattr(ev, "test_accuracy", spy)
    real_prepare = ev.prepare

    def spy_prepare(s, run_ctx, settings):
        seen["syn"] = s.images.clone()
        return real_prepare(s, run_ctx, settings)

    monkeypatch.setattr(ev, "prepare", spy_prepare)
    r = ctx.evaluate(syn, "fast", impl=impl, zca=True, **TINY)
    assert len(r.accuracies) == 2
    zca = fit_zca(ctx.dataset, 0.1, ctx.cache_dir)
    torch.testing.assert_close(seen["syn"], zca.from_normalised(syn.images, ctx.dataset))
    torch.testing.assert_close(seen["test"].test_x, zca.from_normalised(ctx.dataset.test_x, ctx.dataset))
    assert seen["test"].name == "tiny+zca"


# ----------------------------------------------------------------------------------------------- precision
def test_precision_auto_resolves_by_cpu_flags(monkeypatch):
    monkeypatch.setattr(ev, "native_bf16", lambda: True)
    assert ev.resolve_precision("auto", "cpu") == "bf16"
    assert ev.resolve_precision("auto", torch.device("meta")) == "fp32"  # not a CPU: fp32
    monkeypatch.setattr(ev, "native_bf16", lambda: False)
    assert ev.resolve_precision("auto", "cpu") == "fp32"  # an AVX2-only CPU keeps fp32
    assert ev.resolve_precision("bf16", "cpu") == "bf16" and ev.resolve_precision("fp32", "cpu") == "fp32"


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    for flags, expected in (("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 amx_bf16", True), ("fpu avx2 avx512f", False)):
        fake = tmp_path / "cpuinfo"
        fake.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(fake if p == "/proc/cpuinfo" else p, *a, **k))
        assert ev.native_bf16() is expected
        monkeypatch.setattr(builtins, "open", real_open)


@pytest.mark.parametrize("impl", ["loop", "fast"])
def test_bf16_trains_in_bf16_and_is_recorded(ctx, syn, impl, monkeypatch):
    seen = []
    real_conv = torch.nn.Conv2d._conv_forward

    def spy(self, x, w, b):
        out = real_conv(self, x, w, b)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", spy)
    r = ctx.evaluate(syn, "fast", impl=impl, precision="bf16", **TINY)
    assert r.details["precision"] == "bf16" and set(seen) == {torch.bfloat16}
    seen.clear()
    r = ctx.evaluate(syn, "fast", impl=impl, precision="fp32", **TINY)
    assert r.details["precision"] == "fp32" and set(seen) == {torch.float32}


def test_bf16_keeps_fp32_weights_and_stays_near_fp32(ctx, syn):
    """bf16 autocast changes the arithmetic, not the training: fp32 master weights, and after one step the
    weights are where fp32 puts them up to bf16 rounding (a wrong loss scale or a skipped step would not be)."""
    settings = resolve_params("protocol fast", ctx.registry.get("protocols", "fast").params, {"epochs": 0})
    prepared = ev.prepare(syn, ctx, settings)
    trained = {}
    for precision in ("fp32", "bf16"):
        net, gen = ev.init_network(ctx, 0)
        start = [p.detach().clone() for p in net.parameters()]
        ev._train_one(net, gen, *prepared, {**settings, "precision": precision}, 0.01)
        assert all(p.dtype == torch.float32 for p in net.parameters())
        trained[precision] = torch.cat([(p.detach() - s).flatten() for p, s in zip(net.parameters(), start)])
    d32, d16 = trained["fp32"], trained["bf16"]
    assert d32.norm() > 0
    # bf16 keeps 8 mantissa bits; at 12 px the deepest instance norm sees 1-2 pixels and amplifies the rounding
    # (measured 9 %); a skipped or doubled step would be 100 %
    assert (d16 - d32).norm() / d32.norm() < 0.2
    assert (d16 - d32).norm() > 0  # and it did run in bf16


def test_precision_is_compared_like_the_implementation():
    """Runs that differ only in precision share a cell (the role is NOT_COMPARED), as runs of the loop and fast
    implementations do; the dsa and fast protocols declare it."""
    from ddbench.core.roles import NOT_COMPARED, PRECISION

    assert PRECISION in NOT_COMPARED
    assert ev._params(1, "x")["precision"].role == PRECISION
