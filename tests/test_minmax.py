"""minmax-diffusion: losses, sampler, policies, cache, bad input -- all on tiny shapes."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from conftest import make_tiny_dataset
from ddbench.api import DDBenchError, resolve_params
from ddbench_minmax import model as mm_model
from ddbench_minmax.cache import GeneratorCache
from ddbench_minmax.losses import ClassMemory, cosine_similarity, minmax_losses, nn_cosine_distance
from ddbench_minmax.policy import Calibrated, FixedSteps, MaxImages, PlanRequest, fit_curve
from ddbench_minmax.sampler import DSRSampler, Throughput
from ddbench_minmax.train import PhaseSpec, train_phase

SIZE = 12  # a test-only generator size, registered by the fixture below


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def tiny_arch(monkeypatch):
    """A ~10k-parameter UNet / DiT at 12 px so every test runs in well under a second per step."""
    monkeypatch.setitem(mm_model.ARCH_CONFIGS["unet"], SIZE, dict(
        block_out_channels=(16, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")))
    monkeypatch.setitem(mm_model.ARCH_CONFIGS["dit"], SIZE, dict(
        num_layers=1, num_attention_heads=2, attention_head_dim=8, patch_size=2, norm_num_groups=8))


TINY = dict(base_steps=3, finetune_steps=2, batch_size=6, num_train_timesteps=20, steps=3, min_steps=2,
            checkpoint_every=2, sample_batch=12)


def tiny_ds(k=3):
    return make_tiny_dataset(num_classes=k, per_class=8, size=SIZE, test_per_class=4)


# --------------------------------------------------------------------------------------------------
# The min-max losses
# --------------------------------------------------------------------------------------------------


def test_losses_values_follow_the_reference_formula():
    real_mem, pseudo_mem = ClassMemory(64), ClassMemory(64)
    real_mem.push(0, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    pseudo_mem.push(0, torch.tensor([[1.0, 1.0]]))
    real_mem.push(1, torch.tensor([[1.0, 0.0]]))
    pseudo_mem.push(1, torch.tensor([[-1.0, 0.0]]))
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    pos, neg = minmax_losses(emb, emb, y, real_mem, pseudo_mem, 0.002, 0.008, update=False)
    # class 0: min cos over {e0}x{(1,0),(0,1)} = 0 -> 1 - 0; max cos with (1,1) = 1/sqrt2
    # class 1: e1=(0,1) vs (1,0): cos 0 -> 1 - 0; vs (-1,0): 0. Both divided by 2 classes in the batch.
    assert pos.item() == pytest.approx((1.0 + 1.0) * 0.002 / 2)
    assert neg.item() == pytest.approx((2 ** -0.5 + 0.0) * 0.008 / 2)


def test_representativeness_pulls_towards_the_farthest_real_sample():
    real_mem, pseudo_mem = ClassMemory(8), ClassMemory(8)
    near, far = torch.tensor([1.0, 0.1, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    real_mem.push(0, torch.stack([near, far]))
    pseudo_mem.push(0, torch.tensor([[0.0, 1.0, 0.0]]))
    e = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])
    before_far = cosine_similarity(e, far[None]).item()
    pos, _ = minmax_losses(e, e.detach(), y, real_mem, pseudo_mem, 1.0, 0.0, update=False)
    pos.backward()
    with torch.no_grad():
        e2 = e - 0.1 * e.grad
    assert e.grad[0, 2] < 0  # gradient descent increases the component towards the far sample
    assert cosine_similarity(e2, far[None]).item() > before_far


def test_diversity_pushes_away_from_the_nearest_earlier_sample():
    real_mem, pseudo_mem = ClassMemory(8), ClassMemory(8)
    near, far = torch.tensor([1.0, 0.2, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    real_mem.push(0, torch.tensor([[1.0, 1.0, 1.0]]))
    pseudo_mem.push(0, torch.stack([near, far]))
    e = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])
    _, neg = minmax_losses(e, e.detach(), y, real_mem, pseudo_mem, 0.0, 1.0, update=False)
    neg.backward()
    with torch.no_grad():
        e2 = e - 0.1 * e.grad
    assert cosine_similarity(e2, near[None]).item() < cosine_similarity(e.detach(), near[None]).item()
    # only the most similar memory entry drives the loss (max over the matrix)
    assert e.grad[0, 2].abs() < 1e-8


def test_memories_fill_after_the_loss_and_stay_fifo_bounded():
    real_mem, pseudo_mem = ClassMemory(3), ClassMemory(3)
    e = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    pos, neg = minmax_losses(e, torch.randn(4, 5), y, real_mem, pseudo_mem, 0.002, 0.008)
    assert pos.item() == 0 and neg.item() == 0  # memories were empty when the loss was computed
    assert len(real_mem) == 4 and len(pseudo_mem) == 4
    pos, neg = minmax_losses(e, torch.randn(4, 5), y, real_mem, pseudo_mem, 0.002, 0.008)
    assert pos.item() > 0 and neg.item() > 0
    assert real_mem.get(0).shape == (3, 5)  # capped at memory_size, oldest dropped
    assert not pseudo_mem.get(0).requires_grad


def test_diversity_figure():
    x = torch.randn(6, 1, 4, 4)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    assert nn_cosine_distance(x, y)["mean"] > 0.05
    dup = torch.cat([x[:1]] * 3 + [x[3:4]] * 3)
    assert nn_cosine_distance(dup, y)["mean"] == pytest.approx(0.0, abs=1e-5)


# --------------------------------------------------------------------------------------------------
# Sampler and policies
# --------------------------------------------------------------------------------------------------


class SlowModel(nn.Module):
    """A stand-in denoiser whose every call costs a fixed wall time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x, t, y):
        time.sleep(self.seconds)
        return torch.zeros_like(x)


def test_sampler_is_balanced_and_seeded():
    model = mm_model.build_denoiser("unet", 1, 3, SIZE)
    s = DSRSampler()
    kw = dict(image_shape=(1, SIZE, SIZE), num_train_timesteps=20, ipc=5, batch_size=6, seed=3)
    x1, y1, st = s.generate(model, 3, 2, **kw)
    x2, y2, _ = s.generate(model, 3, 2, **kw)
    assert torch.bincount(y1).tolist() == [5, 5, 5]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.abs().max() <= 1.0 and st["images"] == 15
    x3, _, _ = s.generate(model, 3, 2, **{**kw, "seed": 4})
    assert not torch.equal(x1, x3)
    x4, y4, _ = s.generate(model, 3, 2, **{**kw, "ipc": 2}, scheduler="dpm++")
    assert torch.bincount(y4).tolist() == [2, 2, 2]


def test_budget_is_honoured_and_classes_stay_equal():
    s = DSRSampler()
    model = SlowModel(0.01)
    thr = s.measure(model, 4, (1, 4, 4), 8, repeats=1)
    budget = 0.5
    t0 = time.perf_counter()
    x, y, st = s.generate(model, 4, 5, image_shape=(1, 4, 4), num_train_timesteps=20, deadline=t0 + budget,
                          batch_size=8, throughput=thr)
    elapsed = time.perf_counter() - t0
    assert elapsed <= budget
    counts = torch.bincount(y, minlength=4).tolist()
    assert len(set(counts)) == 1 and counts[0] >= 1
    # a device that slows down mid-run: the per-step guard still ends inside the budget
    model.seconds = 0.05
    t0 = time.perf_counter()
    x, y, st = s.generate(model, 4, 5, image_shape=(1, 4, 4), num_train_timesteps=20, deadline=t0 + budget,
                          batch_size=8, throughput=thr)
    assert time.perf_counter() - t0 <= budget + 0.06
    assert len(set(torch.bincount(y, minlength=4).tolist())) == 1


def test_sampler_refuses_bad_steps():
    s = DSRSampler()
    with pytest.raises(DDBenchError, match=r"steps=0 .*\[1, 20\]"):
        s.generate(SlowModel(0), 2, 0, image_shape=(1, 4, 4), num_train_timesteps=20, ipc=1)
    with pytest.raises(DDBenchError, match=r"steps=21"):
        s.generate(SlowModel(0), 2, 21, image_shape=(1, 4, 4), num_train_timesteps=20, ipc=1)


def _req(budget, **kw):
    thr = Throughput(a=0.0, b=0.01, num_classes=10, batch_size=100)  # 0.01 s per image per step
    base = dict(num_classes=10, budget=budget, ipc=10, steps=20, min_steps=5, max_steps=1000, throughput=thr,
                safety=1.0, log=lambda m: None)
    return PlanRequest(**{**base, **kw})


def test_policies_turn_a_budget_into_ipc():
    d = FixedSteps().decide(_req(100.0))
    assert (d.steps, d.ipc, d.mode) == (20, 50, "budget")  # 100 s / (0.01 s * 20 steps) = 500 images
    d = MaxImages().decide(_req(100.0))
    assert (d.steps, d.ipc) == (5, 200)
    d = FixedSteps().decide(_req(None))
    assert (d.steps, d.ipc, d.mode) == (20, 10, "ipc")


def test_budget_too_small_names_the_minimum():
    with pytest.raises(DDBenchError, match=r"too small .* minimum on this device is 2s"):
        FixedSteps().decide(_req(1.0))  # one image per class at 20 steps takes 10*20*0.01 = 2 s


def test_calibrated_policy_fits_and_picks_the_interior_optimum():
    def truth(s, i):  # quality saturates in S, IPC helps logarithmically
        import math
        return 40 + 8 * math.log(i) - 30 * math.exp(-(s - 1) / 6)

    req = _req(200.0, candidates=[5, 10, 20, 30, 50], pilot=lambda s: {i: truth(s, i) for i in (2, 10)})
    d = Calibrated().decide(req)
    assert d.curve["fit"]["rmse"] < 0.5
    # brute force over the same grid with the true curve
    best = max(range(5, 51), key=lambda s: truth(s, req.throughput.max_ipc(200.0, s)))
    assert abs(d.steps - best) <= 2 and 5 < d.steps < 50
    assert d.ipc == req.throughput.max_ipc(200.0, d.steps)
    assert d.curve["predicted"] and d.curve["pilot_points"]


def test_fit_falls_back_when_scipy_cannot_fit():
    predict, fit = fit_curve([(5, 2, 50.0), (10, 2, 50.0)])  # too few points for 4 parameters
    assert "form" in fit and isinstance(predict(7, 3), float)


# --------------------------------------------------------------------------------------------------
# Method: validate, distill, cache
# --------------------------------------------------------------------------------------------------


def test_bad_input_is_one_line_ddbench_error(make_ctx):
    with pytest.raises(DDBenchError, match="lambda_pos=-1"):
        make_ctx("minmax-diffusion", dataset=tiny_ds(), lambda_pos=-1)
    with pytest.raises(DDBenchError, match="lambda_neg"):
        make_ctx("minmax-diffusion", dataset=tiny_ds(), lambda_neg="-0.5")
    with pytest.raises(DDBenchError, match="steps"):
        make_ctx("minmax-diffusion", dataset=tiny_ds(), steps=0)
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **{**TINY, "steps": 21})
    with pytest.raises(DDBenchError, match=r"steps=21 is not allowed; it must lie in \[1, 20\]"):
        method.validate(ctx)
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **{**TINY, "policy": "nope"})
    with pytest.raises(DDBenchError, match="unknown polic.* 'nope'"):
        method.validate(ctx)
    method, ctx = make_ctx("minmax-diffusion", dataset=make_tiny_dataset(size=20), **TINY)
    with pytest.raises(DDBenchError, match="no unet generator configured for 20 px"):
        method.validate(ctx)
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=1e-4, **TINY)
    with pytest.raises(DDBenchError, match=r"budget=0.0001s is too small .* minimum"):
        method.validate(ctx)


def test_distill_fixed_ipc_then_cache_hit(make_ctx):
    ds = tiny_ds()
    method, ctx = make_ctx("minmax-diffusion", dataset=ds, ipc=2, **TINY)
    method.validate(ctx)
    syn = method.distill(ctx)
    assert syn.images.shape == (6, 1, SIZE, SIZE) and syn.per_class(3) == [2, 2, 2]
    assert syn.meta["generator"]["finetune"]["cache"] == "miss"
    assert syn.meta["policy"]["steps"] == 3 and "3" in syn.meta["throughput_images_per_s"]
    # images are in the dataset's normalised space: denormalised they lie in [0, 1]
    assert ds.denormalise(syn.images).min() >= -1e-5 and ds.denormalise(syn.images).max() <= 1 + 1e-5
    syn2 = method.distill(ctx)
    assert syn2.meta["generator"]["finetune"]["cache"] == "hit"
    assert torch.allclose(syn.images, syn2.images, atol=1e-5)


def test_lambda_variants_share_the_cached_base(make_ctx, tmp_path):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1, **TINY)
    a = method.distill(ctx)
    method, ctx2 = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1, **{**TINY, "lambda_pos": 0.0, "embedding": "convnet"})
    b = method.distill(ctx2)
    assert b.meta["generator"]["base"]["cache"] == "hit"
    assert b.meta["generator"]["finetune"]["cache"] == "miss"
    assert a.meta["generator"]["finetune"]["key"] != b.meta["generator"]["finetune"]["key"]


def test_distill_under_budget(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=3.0, **{**TINY, "policy": "max-images"})
    method.validate(ctx)
    syn = method.distill(ctx)
    counts = syn.per_class(3)
    assert len(set(counts)) == 1 and counts[0] >= 1
    assert syn.meta["sampler"]["seconds"] <= 3.0 and syn.meta["budget_honoured"]
    assert syn.meta["policy"]["steps"] == 2


def test_dit_backbone_behind_the_same_interface(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1, **{**TINY, "arch": "dit"})
    syn = method.distill(ctx)
    assert syn.per_class(3) == [1, 1, 1]


def test_cache_round_trip_and_corruption(make_ctx, tmp_path):
    model = mm_model.build_denoiser("unet", 1, 3, SIZE)
    cache = GeneratorCache(tmp_path, "k")
    cache.save(model, {"hello": 1})
    loaded, meta = cache.load("unet")
    x, t, y = torch.randn(2, 1, SIZE, SIZE), torch.tensor([3, 7]), torch.tensor([0, 2])
    assert torch.allclose(model(x, t, y), loaded(x, t, y), atol=1e-6) and meta["hello"] == 1
    assert (cache.generator_dir / "diffusion_pytorch_model.safetensors").is_file()

    # A corrupted cached generator of a run: rebuilt by default, a clear error on request.
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1, **TINY)
    syn = method.distill(ctx)
    root = syn.meta["generator"]["finetune"]["cache_path"]
    weights = f"{root}/generator/diffusion_pytorch_model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(100)
        f.write(b"garbage!")
    method, ctx_err = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1, **{**TINY, "on_corrupt_cache": "error"})
    ctx_err.cache_dir = ctx.cache_dir
    with pytest.raises(DDBenchError, match="cached generator is corrupt: .*sha256.*on_corrupt_cache=rebuild"):
        method.distill(ctx_err)
    syn2 = method.distill(ctx)
    assert syn2.meta["generator"]["finetune"]["cache"] == "miss"  # rebuilt
    assert method.distill(ctx).meta["generator"]["finetune"]["cache"] == "hit"


def test_training_resumes_from_its_checkpoint(tmp_path):
    ds = tiny_ds()
    data = ds.train_x.clamp(-1, 1)
    spec = PhaseSpec(steps=4, batch_size=6, lr=1e-3, ema_decay=0.999, lambda_pos=0.002, lambda_neg=0.008,
                     memory_size=8, embedding="x0", checkpoint_every=2, seed=5)

    def fresh():
        torch.manual_seed(0)
        return mm_model.build_denoiser("unet", 1, 3, SIZE)

    ref, _ = train_phase(fresh(), data, ds.train_y, spec, 20, GeneratorCache(tmp_path, "ref"), progress=False)

    class Interrupt(Exception):
        pass

    calls = {"n": 0}
    model = fresh()
    orig = model.forward

    def flaky(x, t, y):
        calls["n"] += 1
        if calls["n"] == 3:  # dies during step 3, after the checkpoint at step 2
            raise Interrupt
        return orig(x, t, y)

    model.forward = flaky
    cache = GeneratorCache(tmp_path, "resumed")
    with pytest.raises(Interrupt):
        train_phase(model, data, ds.train_y, spec, 20, cache, progress=False)
    assert cache.checkpoint_path.is_file()
    logs = []
    resumed, _ = train_phase(fresh(), data, ds.train_y, spec, 20, cache, progress=False, log=logs.append)
    assert any("resuming" in m and "step 2/4" in m for m in logs)
    for a, b in zip(ref.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_plugins_are_registered(registry):
    assert "minmax-diffusion" in registry.names("methods")
    assert "dsr" in registry.names("samplers")
    assert {"fixed-steps", "max-images", "calibrated"} <= set(registry.names("policies"))
    method = registry.get("methods", "minmax-diffusion")
    assert method.supports_budget
    assert all(p.source for p in method.params.values())
    resolve_params("m", method.params, {"pilot_steps": "5,10"})
