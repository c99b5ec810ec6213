"""The sampling levers beyond the seed paper: each, on a tiny model, changes the samples as specified."""
from __future__ import annotations

import pytest
import torch

from ddbench.api import DDBenchError, SampleRequest
from ddbench_minmax.prototypes import class_prototypes
from ddbench_minmax.sampler import DSRSampler
from test_minmax import SIZE, TINY, tiny_ds, tiny_model, tiny_arch  # noqa: F401  (tiny_arch: autouse fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _req(prototypes=None, **kw) -> SampleRequest:
    """A request; the levers (the sampler's params) go to its settings, the prototypes to its inputs."""
    levers = {k: kw.pop(k) for k in list(kw) if k in DSRSampler.params}
    base = dict(num_classes=3, steps=4, image_shape=(1, SIZE, SIZE), ipc=2, batch_size=6, seed=3, guidance=2.0)
    return SampleRequest(**{**base, **kw}, settings=levers, inputs={} if prototypes is None else {"prototypes": prototypes})


def _protos(k=3, m=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(k, m, 1, SIZE, SIZE, generator=g) * 2 - 1


def test_mode_guidance_zero_and_full_interval_equal_plain_sampling():
    model, s = tiny_model(), DSRSampler()
    plain = s.generate(model, _req())
    same = s.generate(model, _req(prototypes=_protos(), mode_guidance=0.0, guidance_interval=(0.0, 1.0)))
    assert torch.equal(plain.images, same.images)
    guided = s.generate(model, _req(prototypes=_protos(), mode_guidance=0.5))
    assert not torch.equal(plain.images, guided.images)


def test_mode_guidance_pulls_samples_toward_their_prototype():
    model, s, protos = tiny_model(), DSRSampler(), _protos()
    dist = {}
    for lam in (0.0, 0.5):
        out = s.generate(model, _req(prototypes=protos, mode_guidance=lam, mode_guidance_stop=1.0))
        # round r, class c sits at r*3 + c and uses prototype r % 2
        target = torch.stack([protos[c, r % 2] for r in range(2) for c in range(3)])
        dist[lam] = (out.images - target).pow(2).mean().item()
    assert dist[0.5] < dist[0.0]


def test_strength_starts_from_the_noised_prototype_and_runs_fewer_steps():
    model, s, protos = tiny_model(), DSRSampler(), _protos()
    low = s.generate(model, _req(prototypes=protos, strength=0.25))
    assert low.stats["steps_run"] == 1 and low.stats["strength"] == 0.25
    full = s.generate(model, _req(prototypes=protos, strength=1.0))
    assert full.stats["steps_run"] == 4
    target = torch.stack([protos[c, r % 2] for r in range(2) for c in range(3)])
    # one step from a lightly noised prototype stays closer to it than sampling from pure noise
    assert (low.images - target).pow(2).mean() < (full.images - target).pow(2).mean()


def test_limited_interval_guidance_outside_the_interval_is_unguided():
    model, s = tiny_model(), DSRSampler()
    unguided = s.generate(model, _req(guidance=1.0))
    empty_interval = s.generate(model, _req(guidance=3.0, guidance_interval=(0.0, 0.0)))  # t/T never 0 here
    assert torch.equal(unguided.images, empty_interval.images)
    partial = s.generate(model, _req(guidance=3.0, guidance_interval=(0.3, 0.7)))
    full = s.generate(model, _req(guidance=3.0))
    assert not torch.equal(partial.images, full.images) and not torch.equal(partial.images, unguided.images)


def test_levers_without_prototypes_or_out_of_range_are_one_line_errors():
    model, s = tiny_model(), DSRSampler()
    for bad in (dict(strength=0.5), dict(mode_guidance=0.1), dict(strength=0.0), dict(guidance_interval=(0.8, 0.2)),
                dict(prototypes=torch.zeros(3, 2, 1, SIZE + 1, SIZE))):
        with pytest.raises(DDBenchError) as e:
            s.generate(model, _req(**bad))
        assert "\n" not in str(e.value)


def test_kmeans_prototypes_are_seeded_class_means_of_the_data():
    x = torch.cat([torch.full((5, 1, 2, 2), -1.0), torch.full((5, 1, 2, 2), 1.0)])
    y = torch.tensor([0] * 5 + [1] * 5)
    p = class_prototypes(x, y, 2, 1, seed=0)
    assert p.shape == (2, 1, 1, 2, 2) and torch.allclose(p[0], x[0]) and torch.allclose(p[1], x[5])
    xr, yr = torch.randn(40, 1, 3, 3), torch.arange(40) % 2
    assert torch.equal(class_prototypes(xr, yr, 2, 3, seed=1), class_prototypes(xr, yr, 2, 3, seed=1))
    with pytest.raises(DDBenchError, match="fewer than"):
        class_prototypes(xr, yr, 2, 30, seed=1)


def test_distill_with_prototypes_records_the_levers(make_ctx):
    ds = tiny_ds()
    method, ctx = make_ctx("minmax-diffusion", dataset=ds, ipc=2, prototypes="kmeans", strength=0.7,
                           mode_guidance=0.1, **TINY)
    method.validate(ctx)
    syn = method.distill(ctx)
    assert syn.per_class(3) == [2, 2, 2]
    assert syn.meta["sampler"]["prototypes_per_class"] == 2 and syn.meta["sampler"]["strength"] == 0.7
    cached = list((ctx.cache_dir / "minmax-diffusion" / "prototypes").glob("*.pt"))
    assert len(cached) == 1  # made once from the training data, then reused
    again = method.distill(ctx)
    assert torch.allclose(syn.images, again.images, atol=1e-5)


def test_lever_settings_are_checked_in_validate(make_ctx):
    ds = tiny_ds()
    for bad, msg in ((dict(strength=0.5), "prototypes=kmeans"), (dict(guidance_interval=(0.9, 0.1)), "lo <= hi")):
        method, ctx = make_ctx("minmax-diffusion", dataset=ds, ipc=2, **{**TINY, **bad})
        with pytest.raises(DDBenchError, match=msg):
            method.validate(ctx)


def test_pool_over_generates_then_the_selector_keeps_ipc_per_class(make_ctx):
    ds = tiny_ds()
    method, ctx = make_ctx("minmax-diffusion", dataset=ds, ipc=2, pool=3, selector="k-center", selector_space="pixels",
                           **TINY)
    method.validate(ctx)
    syn = method.distill(ctx)
    assert syn.per_class(3) == [2, 2, 2] and syn.ipc == 2
    assert syn.meta["pool"] == 3 and syn.meta["pool_images"] == 18 and syn.meta["selector"] == "k-center"


def test_pool_under_a_budget_counts_the_selection(make_ctx):
    ds = tiny_ds()
    method, ctx = make_ctx("minmax-diffusion", dataset=ds, ipc=2, budget=30.0, pool=2, selector="random",
                           selector_space="pixels", **TINY)
    method.validate(ctx)
    syn = method.distill(ctx)
    assert syn.meta["selection_reserve_seconds"] >= 0 and syn.meta["budget_honoured"]
    assert syn.meta["sampler"]["seconds"] + syn.meta["selection_seconds"] <= 30.0
    assert syn.ipc == syn.meta["pool_images"] // 3 // 2 and len(set(syn.per_class(3))) == 1


def test_an_unknown_selector_is_refused_before_any_work(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=2, pool=2, selector="nosuch", **TINY)
    with pytest.raises(DDBenchError, match="nosuch"):
        method.validate(ctx)


def test_a_third_party_sampler_with_a_lever_of_its_own_gets_its_settings(make_ctx, monkeypatch):
    """A new lever is a new entry in a sampler's `params`: the host's SampleRequest does not change (issue 29)."""
    from types import MappingProxyType

    from ddbench.api import Param, Sampler

    seen: list[tuple[dict, set]] = []

    class Jitter(Sampler):  # written against the documented surface only
        name = "jitter"
        params = MappingProxyType({"strength": DSRSampler.params["strength"],
                                   "jitter": Param(0.25, "a test lever", "noise added to the samples", min=0.0)})

        def measure(self, model, num_classes, image_shape, batch_size, guidance=1.0):
            return DSRSampler().measure(model, num_classes, image_shape, batch_size, guidance=guidance)

        def generate(self, model, request):
            seen.append((dict(request.settings), set(request.inputs)))
            out = DSRSampler().generate(model, request)
            out.images = out.images + request.settings["jitter"] * torch.randn_like(out.images)
            return out

    ds = tiny_ds()
    method, ctx = make_ctx("minmax-diffusion", dataset=ds, ipc=1, sampler="jitter", prototypes="kmeans", strength=0.7,
                           **TINY)
    monkeypatch.setitem(ctx.registry.items["samplers"], "jitter", Jitter())
    monkeypatch.setitem(ctx.registry.owners["samplers"], "jitter", "third")
    method.validate(ctx)
    syn = method.distill(ctx)
    assert syn.per_class(3) == [1, 1, 1]
    assert seen[-1] == ({"strength": 0.7, "jitter": 0.25}, {"prototypes"})  # its own lever at its default
    # a lever it does not declare is refused before any work, naming the plugin
    method, ctx = make_ctx("minmax-diffusion", dataset=ds, ipc=1, sampler="jitter", prototypes="kmeans",
                           mode_guidance=0.1, **TINY)
    monkeypatch.setitem(ctx.registry.items["samplers"], "jitter", Jitter())
    monkeypatch.setitem(ctx.registry.owners["samplers"], "jitter", "third")
    with pytest.raises(DDBenchError, match=r"sampler 'jitter' \(plugin 'third'\) does not honour mode_guidance=0.1"):
        method.validate(ctx)
