"""minmax-diffusion `refine`: a registered matching objective (the `objectives` plugin kind: dm, and gradient
matching dc / dsa-gm) run on the generated set, looked up by name, counted inside --budget; refine_iterations=0 is
exactly no refine."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_dataset
from ddbench.api import DDBenchError
from ddbench.host.plugins import load_plugins
from ddbench_baselines import dm as dm_module
from ddbench_baselines import gm as gm_module
from ddbench_minmax import refine
from ddbench_minmax.checks import PluginOutputError
from test_minmax import TINY, tiny_ds, tiny_arch  # noqa: F401 - tiny_arch is an autouse fixture

pytestmark = pytest.mark.usefixtures("one_thread")

FAST_DM = "batch_real=4"  # 4 real images per class per iteration: tiny shapes
# gradient matching at tiny shapes: 4 real images per class, 2 image updates per network with 1 inner epoch
# (get_loops has no entry for the tests' 2 images per class)
FAST_GM = "batch_real=4,outer_loop=2,inner_loop=1,batch_train=4"
FAST = {"dm": FAST_DM, "dsa-gm": FAST_GM}


def test_the_dm_objective_is_registered_with_cited_defaults(registry):
    obj = registry.get("objectives", "dm")
    assert registry.owners["objectives"]["dm"] == "dm" and obj.source
    assert obj.params["lr"].default == 1.0 and "lr_img 1.0" in obj.params["lr"].source
    assert obj.params["momentum"].default == 0.5 and obj.params["batch_real"].default == 256
    with pytest.raises(DDBenchError, match="unknown objective 'nope'; valid: dc, dm, dsa-gm"):
        registry.get("objectives", "nope")


def test_the_gradient_matching_objectives_are_registered_with_the_methods_defaults(registry):
    """dc and dsa-gm (baselines/gm.py) register their matching as objectives: main.py's --lr_img 0.1 and the
    method's own Params (same defaults, same sources); DSA's augmentation only for dsa-gm."""
    for name in ("dc", "dsa-gm"):
        obj, method = registry.get("objectives", name), registry.get("methods", name)
        assert registry.owners["objectives"][name] == "gm" and "DatasetCondensation main.py" in obj.source
        assert obj.params["lr"].default == 0.1 and "--lr_img 0.1" in obj.params["lr"].source
        for key in gm_module.OBJECTIVE_KEYS + ("momentum",):
            assert obj.params[key] is method.params[key]
    assert "dsa_strategy" in registry.get("objectives", "dsa-gm").params
    assert "dsa_strategy" not in registry.get("objectives", "dc").params


def test_an_unknown_objective_is_refused_naming_the_allowed_ones(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="nope", **TINY)
    with pytest.raises(DDBenchError) as err:
        method.validate(ctx)
    assert str(err.value) == "refine='nope' is not allowed; choose one of none, dc, dm, dsa-gm"


def test_bad_objective_settings_are_refused_before_any_work(make_ctx):
    for settings, message in (("batch_real=0", "batch_real='0' is below the minimum 1"),
                              ("nope=3", "unknown setting 'nope' for objective dm"),
                              ("dsa_strategy=color_blur", "unknown DSA augmentation 'blur'")):
        method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dm", refine_settings=settings, **TINY)
        with pytest.raises(DDBenchError, match=message):
            method.validate(ctx)
    with pytest.raises(DDBenchError, match="KEY=VALUE"):
        make_ctx("minmax-diffusion", refine="dm", refine_settings="batch_real")


@pytest.mark.parametrize("name", ["dm", "dsa-gm"])
def test_refine_iterations_zero_equals_no_refine_exactly(make_ctx, name):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **TINY)
    plain = method.distill(ctx)
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine=name, refine_iterations=0,
                           refine_settings=FAST[name], **TINY)
    method.validate(ctx)
    zero = method.distill(ctx)
    assert torch.equal(zero.images, plain.images) and torch.equal(zero.labels, plain.labels)
    assert "refine" not in zero.meta
    if name != "dm":
        return
    # while iterations > 0 move the images, with DM's own loss going down
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dm", refine_iterations=4,
                           refine_settings=f"{FAST_DM},dsa_strategy=none", **TINY)
    refined = method.distill(ctx)
    r = refined.meta["refine"]
    assert r["objective"] == "dm" and r["iterations_done"] == 4 and r["settings"]["lr"] == 1.0
    assert not torch.equal(refined.images, plain.images) and torch.equal(refined.labels, plain.labels)
    assert r["losses"][-1] < r["losses"][0]
    assert refined.generation_seconds >= refined.meta["sampler"]["seconds"] + r["seconds"] - 0.002  # meta rounds to ms


def test_refine_lr_overrides_the_objectives_lr(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dm", refine_iterations=1, refine_lr=0.0,
                           refine_settings=FAST_DM, **TINY)
    plain_method, plain_ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **TINY)
    assert torch.equal(method.distill(ctx).images, plain_method.distill(plain_ctx).images)  # lr 0: nothing moves
    with pytest.raises(DDBenchError, match="both set the lr"):
        method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dm", refine_lr=0.5,
                               refine_settings="lr=0.1", **TINY)
        method.validate(ctx)


def test_the_dm_objective_takes_a_class_interleaved_set(make_ctx):
    """A generated set comes in rounds (0, 1, 2, 0, 1, 2...): the objective gives the loss and gradient of the same
    set laid out class-major, in the caller's order."""
    ds = make_tiny_dataset(num_classes=3, per_class=20)
    method, ctx = make_ctx("dm", dataset=ds, ipc=2, batch_real=5)
    settings = {k: ctx.params[k] for k in dm_module.OBJECTIVE_KEYS}
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    interleaved = torch.arange(3).repeat(2)
    order = torch.argsort(interleaved, stable=True)
    loss_i, grad_i = dm_module.DMObjective().bind(ctx, interleaved, settings)(1, x)
    loss_c, grad_c = dm_module.DMStep(ctx, interleaved[order], settings)(1, x[order])
    assert loss_i == pytest.approx(loss_c, rel=1e-6)
    torch.testing.assert_close(grad_i[order], grad_c)
    for bad in (torch.tensor([0, 0, 1, 1, 2]), torch.eye(3), torch.tensor([0, 1, 3])):
        with pytest.raises(DDBenchError, match="the dm objective"):
            dm_module.DMObjective().bind(ctx, bad, settings)


def test_dm_runs_the_same_code_as_its_objective(make_ctx):
    method, ctx = make_ctx("dm", ipc=1, iterations=3, batch_real=6)
    syn = method.distill(ctx)
    _, ctx2 = make_ctx("dm", ipc=1, iterations=3, batch_real=6)
    from ddbench_baselines._common import init_images

    images, labels = init_images(ctx2, "real")
    obj = dm_module.DMObjective()
    settings = {k: ctx2.params[k] for k in dm_module.OBJECTIVE_KEYS} | {"lr": 1.0, "momentum": 0.5}
    out, losses, _ = refine.optimise(obj.bind(ctx2, labels, settings), images, 3, 1.0, 0.5, "dm")
    torch.testing.assert_close(out, syn.images)
    assert [loss / 3 for loss in losses] == pytest.approx(syn.meta["losses"])


class _Sleepy:
    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def __call__(self, it, images):
        self.calls += 1
        time.sleep(self.seconds)
        return 1.0, torch.zeros_like(images)


def test_the_loop_starts_no_iteration_predicted_past_the_deadline():
    step = _Sleepy(0.05)
    t0 = time.perf_counter()
    _, losses, stopped = refine.optimise(step, torch.zeros(3, 1, 4, 4), 100, 1.0, 0.5, "sleepy",
                                         deadline=t0 + 0.3, expected=0.05, safety=1.1)
    assert stopped and 1 <= len(losses) < 6 and time.perf_counter() - t0 <= 0.3 + 0.02
    # an expected iteration longer than the time left: not even the first one starts
    step = _Sleepy(0.05)
    _, losses, stopped = refine.optimise(step, torch.zeros(3, 1, 4, 4), 10, 1.0, 0.5, "sleepy",
                                         deadline=time.perf_counter() + 0.1, expected=0.2)
    assert stopped and losses == [] and step.calls == 0


def test_a_broken_objective_fails_the_run_naming_it():
    def wrong(it, images):
        return 0.0, torch.zeros(1)

    with pytest.raises(PluginOutputError, match="objective 'broken' returned a gradient of shape"):
        refine.optimise(wrong, torch.zeros(3, 1, 4, 4), 2, 1.0, 0.5, "broken")


@pytest.mark.parametrize("name", ["dm", "dsa-gm"])
def test_refine_is_counted_inside_the_budget(make_ctx, name):
    budget = 3.0
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=budget, refine=name, refine_iterations=3,
                           refine_settings=FAST[name], **{**TINY, "policy": "max-images"})
    method.validate(ctx)
    syn = method.distill(ctx)
    r, meta = syn.meta["refine"], syn.meta
    assert meta["refine_reserve_seconds"] > 0 and meta["refine_planned_ipc"] >= 1
    # the sampling stopped early enough to leave refine its reserve, and the whole run fits the budget
    assert meta["sampler"]["seconds"] <= budget - meta["refine_reserve_seconds"] + 0.05
    # all iterations, unless the machine ran slower than measured and the deadline stopped the loop (said so)
    assert 1 <= r["iterations_done"] <= 3 and (r["iterations_done"] == 3 or r["stopped_at_deadline"])
    assert meta["sampler"]["seconds"] + r["seconds"] <= syn.generation_seconds <= budget and meta["budget_honoured"]
    counts = syn.per_class(3)
    assert len(set(counts)) == 1 and syn.ipc == counts[0] >= 1
    # without refine the same budget samples more images
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=budget, **{**TINY, "policy": "max-images"})
    assert method.distill(ctx).ipc > syn.ipc


def test_a_refine_longer_than_the_budget_is_refused_before_any_work(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=0.5, refine="dm", refine_iterations=100000,
                           refine_settings=FAST_DM, **{**TINY, "policy": "max-images"})
    with pytest.raises(DDBenchError) as err:
        method.validate(ctx)
    assert "refine=dm with refine_iterations=100000 needs about" in str(err.value) and "\n" not in str(err.value)


def _guide_example() -> str:
    """The example objective of docs/plugins.md (the code block of its `register_objectives` section)."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    section = guide[guide.index("### `register_objectives(register)`"):]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_another_registered_objective_is_used_by_name(make_ctx, tmp_path, monkeypatch):
    """A later objective (e.g. gradient matching) is added by registering it; refine finds it by name. The
    plugin is the guide's example, loaded through plugins.toml `modules` as a user's would be."""
    (tmp_path / "pull_to_mean.py").write_text(_guide_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_plugins(modules=["pull_to_mean"])
    assert not registry.failed and registry.names("objectives") == ["dc", "dm", "dsa-gm", "pull-to-mean"]
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="pull-to-mean", refine_iterations=40,
                           refine_lr=0.5, **TINY)
    ctx.registry = registry
    method.validate(ctx)
    syn = method.distill(ctx)
    assert syn.meta["refine"]["objective"] == "pull-to-mean" and syn.meta["refine"]["settings"]["lr"] == 0.5
    ds = ctx.dataset
    means = torch.stack([ds.train_x[ds.train_y == c].mean(0) for c in range(ds.num_classes)])
    torch.testing.assert_close(syn.images, means[syn.labels], atol=1e-4, rtol=0)  # lr 0.5 on |x-m|^2: one step lands


def test_refine_equals_dm_warm_started_from_the_unrefined_set(make_ctx, tmp_path):
    """The two items meet: DM from the stored unrefined set (init=PATH) for N iterations gives exactly the images
    refine=dm gives after sampling, because both run the one registered DM step with the same draws."""
    from ddbench.store.synsets import save_synset

    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **TINY)
    plain = method.distill(ctx)
    path = tmp_path / "synset.pt"
    save_synset(plain, path)
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dm", refine_iterations=3,
                           refine_settings=FAST_DM, **TINY)
    refined = method.distill(ctx)
    dm, dctx = make_ctx("dm", dataset=tiny_ds(), ipc=2, init=str(path), iterations=3, batch_real=4)
    dctx.work_dir = tmp_path / "dm-work"
    dctx.work_dir.mkdir()
    dm.validate(dctx)
    warm = dm.distill(dctx)
    order = torch.argsort(refined.labels, stable=True)
    assert torch.equal(warm.images, refined.images[order]) and torch.equal(warm.labels, refined.labels[order])


# ---- gradient matching (dc, dsa-gm) as the objective


def test_refine_dsa_gm_lowers_its_matching_loss_on_a_tiny_set(make_ctx):
    """With the network held still (lr_net=0, one network for all 8 updates) and the whole class as the real batch
    (8 of 8, DSA off), the matching loss is one fixed function of the pixels: refine descends it. With DSA on, the
    same refine moves the images and keeps them finite."""
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **TINY)
    plain = method.distill(ctx)
    still = "batch_real=8,outer_loop=8,inner_loop=1,lr_net=0,dsa_strategy=none"
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dsa-gm", refine_iterations=8,
                           refine_settings=still, refine_lr=1.0, **TINY)
    method.validate(ctx)
    refined = method.distill(ctx)
    r = refined.meta["refine"]
    assert r["objective"] == "dsa-gm" and r["iterations_done"] == 8 and r["settings"]["outer_loop"] == 8
    assert r["losses"][-1] < 0.9 * r["losses"][0], r["losses"]
    assert not torch.equal(refined.images, plain.images) and torch.equal(refined.labels, plain.labels)
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dsa-gm", refine_iterations=2,
                           refine_settings=FAST_GM, **TINY)
    augmented = method.distill(ctx)
    assert augmented.meta["refine"]["settings"]["dsa_strategy"] == "color_crop_cutout_flip_scale_rotate"
    assert torch.isfinite(augmented.images).all() and not torch.equal(augmented.images, plain.images)


@pytest.mark.parametrize("name", ["dc", "dsa-gm"])
def test_refine_equals_the_gradient_matching_method_warm_started_from_the_unrefined_set(make_ctx, tmp_path, name):
    """refine=dc|dsa-gm runs the method's own Step pieces: the method from the stored unrefined set (init=PATH),
    2 networks of outer_loop 2 with an inner epoch between updates, gives exactly the images of refine with
    4 image updates, and its logged losses are refine's summed per network / (classes * outer_loop)."""
    from ddbench.store.synsets import save_synset

    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **TINY)
    plain = method.distill(ctx)
    path = tmp_path / "synset.pt"
    save_synset(plain, path)
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine=name, refine_iterations=4,
                           refine_settings=FAST_GM, **TINY)
    refined = method.distill(ctx)
    gm, gctx = make_ctx(name, dataset=tiny_ds(), ipc=2, init=str(path), iterations=2, batch_real=4, outer_loop=2,
                        inner_loop=1, batch_train=4)
    gctx.work_dir = tmp_path / "gm-work"
    gctx.work_dir.mkdir()
    gm.validate(gctx)
    warm = gm.distill(gctx)
    order = torch.argsort(refined.labels, stable=True)
    assert torch.equal(warm.images, refined.images[order]) and torch.equal(warm.labels, refined.labels[order])
    steps = refined.meta["refine"]["losses"]
    assert warm.meta["losses"] == pytest.approx([(steps[0] + steps[1]) / 6, (steps[2] + steps[3]) / 6])


def test_gradient_matching_refine_needs_loops_it_can_resolve(make_ctx):
    """get_loops has no IPC 2; under --budget the IPC is unknown until sampling: both are refused before any work,
    with one line naming the setting to give."""
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dsa-gm", refine_settings="batch_real=4",
                           **TINY)
    with pytest.raises(DDBenchError) as err:
        method.validate(ctx)
    assert "no loops for 2 images per class" in str(err.value) and "refine_settings=outer_loop" in str(err.value)
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=5.0, refine="dc",
                           refine_settings="outer_loop=1", **{**TINY, "policy": "max-images"})
    with pytest.raises(DDBenchError, match="under --budget needs outer_loop and inner_loop") as err:
        method.validate(ctx)
    assert "\n" not in str(err.value)
    with pytest.raises(DDBenchError, match="unknown DSA augmentation 'blur'"):
        method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dsa-gm",
                               refine_settings=f"{FAST_GM},dsa_strategy=color_blur", **TINY)
        method.validate(ctx)
    with pytest.raises(DDBenchError, match="unknown setting 'dsa_strategy' for objective dc"):
        method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), refine="dc",
                               refine_settings=f"{FAST_GM},dsa_strategy=none", **TINY)
        method.validate(ctx)


def test_the_gm_step_takes_a_class_interleaved_set(make_ctx):
    """Rounds (0, 1, 2, 0, 1, 2): the same loss as the class-major set and the gradient in the caller's order."""
    ds = make_tiny_dataset(num_classes=3, per_class=20)
    obj = gm_module.GMObjective(gm_module.GradientMatching("dsa-gm", dsa=True))
    _, ctx = make_ctx("dsa-gm", dataset=ds, ipc=2)
    from ddbench.api import resolve_params

    settings = resolve_params("objective", obj.params, {"batch_real": 5, "outer_loop": 2, "inner_loop": 1})
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    interleaved = torch.arange(3).repeat(2)
    order = torch.argsort(interleaved, stable=True)
    a, b = obj.bind(ctx, interleaved, settings), obj.bind(ctx, interleaved[order], settings)
    for it in range(2):
        loss_i, grad_i = a(it, x)
        loss_c, grad_c = b(it, x[order])
        assert loss_i == pytest.approx(loss_c, rel=1e-5)
        torch.testing.assert_close(grad_i[order], grad_c)
    with pytest.raises(DDBenchError, match="the dsa-gm objective needs every class equally often"):
        obj.bind(ctx, torch.tensor([0, 0, 1, 1, 2]), settings)


# --------------------------------------------------------------------------------------------------
# The budget track at equal count: policy fixed-ipc (refine gets what the sampling leaves) and DM under --budget
# --------------------------------------------------------------------------------------------------


def test_fixed_ipc_holds_the_count_and_refine_fills_the_rest_of_the_budget(make_ctx):
    budget = 3.0
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=2, budget=budget, refine="dm",
                           refine_iterations=100000, refine_settings=FAST_DM, **{**TINY, "policy": "fixed-ipc"})
    method.validate(ctx)
    syn = method.distill(ctx)
    meta, r = syn.meta, syn.meta["refine"]
    assert meta["policy"]["policy"] == "fixed-ipc" and meta["policy"]["mode"] == "ipc"
    assert syn.ipc == 2 and syn.per_class(3) == [2, 2, 2]  # the count asked for, not what the budget could hold
    # refine ran until the deadline (the cap of 100000 iterations is far away), and the run fits the budget
    assert r["stopped_at_deadline"] and r["iterations_done"] >= 1
    assert syn.generation_seconds <= budget and meta["budget_honoured"]
    assert syn.generation_seconds > budget * 0.5  # the seconds the sampling left were spent, not dropped


def test_fixed_ipc_refuses_a_budget_too_small_for_the_count_before_any_work(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1000, budget=0.2,
                           **{**TINY, "policy": "fixed-ipc", "max_ipc": 1000})
    with pytest.raises(DDBenchError) as err:
        method.validate(ctx)
    msg = str(err.value)
    assert "budget=0.2s is too small to sample the 1000 images per class --ipc asks for" in msg and "\n" not in msg


def test_fixed_ipc_without_a_budget_is_the_fixed_steps_policy():
    from test_minmax import _req
    from ddbench_minmax.policy import FixedIpc, FixedSteps

    a, b = FixedIpc().decide(_req(None)), FixedSteps().decide(_req(None))
    assert (a.steps, a.ipc, a.mode) == (b.steps, b.ipc, b.mode) == (20, 10, "ipc")
    d = FixedIpc().decide(_req(100.0))  # 10 images/class x 10 classes x 20 steps x 0.01 s = 20 s of 100
    assert (d.steps, d.ipc, d.mode) == (20, 10, "ipc") and "the rest goes to" in d.reason
    with pytest.raises(DDBenchError, match=r"too small to sample the 10 images per class .* about 20s"):
        FixedIpc().decide(_req(19.0))


def test_dm_under_a_budget_keeps_the_ipc_and_stops_at_the_deadline(make_ctx):
    budget = 1.5
    method, ctx = make_ctx("dm", dataset=tiny_ds(), ipc=2, budget=budget, iterations=100000, batch_real=4)
    method.validate(ctx)
    syn = method.distill(ctx)
    meta = syn.meta
    assert syn.ipc == 2 and syn.per_class(3) == [2, 2, 2]
    assert meta["stopped_at_deadline"] and 1 <= meta["iterations_done"] < 100000
    assert meta["iterations_done"] == len(meta["losses"])
    assert syn.generation_seconds <= budget and meta["budget_honoured"]
    assert not (ctx.work_dir / dm_module.CHECKPOINT).exists()  # a budget run leaves no checkpoint to resume


def test_dm_without_a_budget_runs_every_iteration(make_ctx):
    method, ctx = make_ctx("dm", dataset=tiny_ds(), ipc=1, iterations=3, batch_real=4)
    syn = method.distill(ctx)
    assert syn.ipc is None and len(syn.meta["losses"]) == 3
    assert "stopped_at_deadline" not in syn.meta
    # no budget: the loop's seconds are still declared, for the report's accuracy-per-second axis
    assert syn.generation_seconds == pytest.approx(syn.meta["seconds_this_session"], abs=1e-3)


@pytest.mark.parametrize("policy, scale", [("fixed-ipc", 3.0), ("max-images", 1.0)])
def test_budget_guidance_is_for_budgets_that_buy_images(make_ctx, policy, scale):
    from ddbench_minmax.settings import guidance_of

    _, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=5.0,
                      **{**TINY, "policy": policy, "guidance": 3.0, "budget_guidance": 1.0})
    assert guidance_of(ctx) == scale


def test_the_deadline_rule_stops_before_an_iteration_that_would_end_past_it():
    # the one rule of DM's budget loop, refine and noise refine (ddbench.helpers.Deadline), on a clock the test sets
    from ddbench.helpers import BUDGET_SAFETY, Deadline

    now = [0.0]
    d = Deadline(10.0, BUDGET_SAFETY, expected=1.0, clock=lambda: now[0])
    assert d.allows() and not d.stopped  # 0 + 1.0 * 1.1 <= 10
    with d.timing():
        now[0] += 2.0  # an iteration of 2 s: the slowest so far
    assert (d.last, d.slowest) == (2.0, 2.0)
    now[0] = 7.7
    assert d.allows()  # 7.7 + 2 * 1.1 = 9.9
    assert not d.allows(reserve=0.1)  # what must run after the loop counts: 7.7 + 2.1 * 1.1 > 10
    assert d.stopped and not d.allows()  # a stopped loop stays stopped
    late = Deadline(10.0, 1.0, clock=lambda: 8.5)
    with late.timing():
        pass
    assert late.allows() and not Deadline(10.0, 1.5, expected=1.1, clock=lambda: 8.5).allows()  # 8.5 + 1.65 > 10
    assert Deadline(None, clock=lambda: 1e9).allows(reserve=1e9)  # no budget, no stop
