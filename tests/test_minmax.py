"""minmax-diffusion: losses, sampler, policies, cache, bad input -- all on tiny shapes."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from conftest import make_tiny_dataset
from ddbench.api import DDBenchError, resolve_params
from ddbench_minmax import model as mm_model
from ddbench.api import PlanRequest, SampleRequest, Throughput
from ddbench_minmax.cache import DenoiserCache
from ddbench_minmax.losses import ClassMemory, cosine_similarity, minmax_losses, nn_cosine_distance
from ddbench_minmax.model import DenoiserConfig, build_denoiser, guided_eps
from ddbench_minmax.policy import Calibrated, FixedSteps, MaxImages, fit_curve
from ddbench_minmax.sampler import DSRSampler
from ddbench_minmax.train import TrainSpec, train_phase

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


TINY = dict(base_steps=3, finetune_steps=2, batch_size=6, steps=3, min_steps=2, checkpoint_every=2, sample_batch=12,
            quality=False, max_ipc=100000)  # tiny shapes plan more images per class than the real cap allows


def tiny_model(k=3, arch="unet", seed=0):
    torch.manual_seed(seed)
    return build_denoiser(DenoiserConfig(arch=arch, channels=1, image_size=SIZE, num_classes=k, num_train_timesteps=20,
                                          net=mm_model.arch_config(arch, SIZE)))


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
    """A stand-in denoiser whose every call costs a fixed wall time (per image with per_image=True)."""

    def __init__(self, seconds: float, per_image: bool = False):
        super().__init__()
        self.seconds, self.per_image = seconds, per_image
        self.config = DenoiserConfig(arch="unet", channels=1, image_size=4, num_classes=4, num_train_timesteps=20)

    def forward(self, x, t, y):
        time.sleep(self.seconds * (x.shape[0] if self.per_image else 1))
        return torch.zeros_like(x)


def test_sampler_is_balanced_and_seeded():
    model = tiny_model()
    s = DSRSampler()
    req = SampleRequest(num_classes=3, steps=2, image_shape=(1, SIZE, SIZE), ipc=5, batch_size=6, seed=3, guidance=2.0)
    a, b = s.generate(model, req), s.generate(model, req)
    assert torch.bincount(a.labels).tolist() == [5, 5, 5]
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.abs().max() <= 1.0 and a.stats["images"] == 15 and a.stats["guidance"] == 2.0
    c = s.generate(model, SampleRequest(**{**req.__dict__, "seed": 4}))
    assert not torch.equal(a.images, c.images)
    d = s.generate(model, SampleRequest(**{**req.__dict__, "ipc": 2, "scheduler": "dpm++"}))
    assert torch.bincount(d.labels).tolist() == [2, 2, 2]


def test_guidance_scale_one_is_the_conditional_model():
    model = tiny_model().eval()
    x, t, y = torch.randn(4, 1, SIZE, SIZE), torch.tensor([3, 7, 11, 19]), torch.tensor([0, 2, 1, 0])
    with torch.no_grad():
        assert torch.equal(guided_eps(model, x, t, y, 1.0), model(x, t, y))
        eps_c, eps_u = model(x, t, y), model(x, t, torch.full_like(y, 3))
        assert torch.allclose(guided_eps(model, x, t, y, 4.0), eps_u + 4.0 * (eps_c - eps_u), atol=1e-5)


def test_null_class_is_an_extra_label_never_a_real_one(make_ctx):
    model = tiny_model(k=3)
    assert model.config.null_class == 3
    assert model.net.class_embedding.num_embeddings == 4  # 3 classes + the null class
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=2, **TINY)
    syn = method.distill(ctx)
    assert syn.labels.max().item() < 3 and syn.per_class(3) == [2, 2, 2]


def test_guidance_costs_count_in_the_throughput():
    s = DSRSampler()
    model = SlowModel(0.002, per_image=True)
    plain = s.measure(model, 4, (1, 4, 4), 8, guidance=1.0, repeats=1)
    guided = s.measure(model, 4, (1, 4, 4), 8, guidance=4.0, repeats=1)
    # both branches in one call of twice the batch: about half the images per second
    assert guided.images_per_second(10) < 0.7 * plain.images_per_second(10)


def test_budget_is_honoured_and_classes_stay_equal():
    s = DSRSampler()
    model = SlowModel(0.01)
    thr = s.measure(model, 4, (1, 4, 4), 8, repeats=1)
    budget = 0.5

    def run():
        t0 = time.perf_counter()
        out = s.generate(model, SampleRequest(num_classes=4, steps=5, image_shape=(1, 4, 4), batch_size=8,
                                              deadline=t0 + budget, throughput=thr))
        return out, time.perf_counter() - t0

    out, elapsed = run()
    assert elapsed <= budget
    counts = torch.bincount(out.labels, minlength=4).tolist()
    assert len(set(counts)) == 1 and counts[0] >= 1
    # a device that slows down mid-run: the per-step guard still ends inside the budget
    model.seconds = 0.05
    out, elapsed = run()
    assert elapsed <= budget + 0.06
    assert len(set(torch.bincount(out.labels, minlength=4).tolist())) == 1


def test_sampler_refuses_bad_steps():
    s = DSRSampler()
    with pytest.raises(DDBenchError, match=r"steps=0 .*\[1, 20\]"):
        s.generate(SlowModel(0), SampleRequest(num_classes=2, steps=0, image_shape=(1, 4, 4), ipc=1))
    with pytest.raises(DDBenchError, match=r"steps=21"):
        s.generate(SlowModel(0), SampleRequest(num_classes=2, steps=21, image_shape=(1, 4, 4), ipc=1))


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
    with pytest.raises(DDBenchError, match="guidance=0.5 is below the minimum 1"):
        make_ctx("minmax-diffusion", dataset=tiny_ds(), guidance=0.5)
    with pytest.raises(DDBenchError, match="trainable='some' is not allowed; choose one of difffit, all"):
        make_ctx("minmax-diffusion", dataset=tiny_ds(), trainable="some")
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **{**TINY, "steps": 1001})
    with pytest.raises(DDBenchError, match=r"steps=1001 is not allowed; it must lie in \[1, 1000\]"):
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
    assert syn.meta["generator"]["base"]["source"] == "trained"  # the tiny data has no shipped base
    assert syn.meta["policy"]["steps"] == 3 and "3" in syn.meta["throughput_images_per_s"]
    # images are in the dataset's normalised space: denormalised they lie in [0, 1]
    assert ds.denormalise(syn.images).min() >= -1e-5 and ds.denormalise(syn.images).max() <= 1 + 1e-5
    syn2 = method.distill(ctx)
    assert syn2.meta["generator"]["finetune"]["cache"] == "hit"
    assert torch.allclose(syn.images, syn2.images, atol=1e-5)


def test_lambda_variants_share_the_cached_base(make_ctx, tmp_path):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1, **TINY)
    a = method.distill(ctx)
    method, ctx2 = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1,
                            **{**TINY, "lambda_pos": 0.0, "embedding": "random-convnet", "trainable": "all"})
    b = method.distill(ctx2)
    assert a.meta["generator"]["base"]["sha256"] == b.meta["generator"]["base"]["sha256"]
    assert b.meta["generator"]["finetune"]["cache"] == "miss"
    assert a.meta["generator"]["finetune"]["key"] != b.meta["generator"]["finetune"]["key"]


def test_quality_figures_are_recorded(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=make_tiny_dataset(num_classes=3, per_class=64, size=SIZE),
                           ipc=2, **{**TINY, "quality": True, "embedding": "classifier"})
    syn = method.distill(ctx)
    q = syn.meta["quality"]
    assert 0 <= q["class_accuracy"] <= 100 and q["fd"] >= 0 and q["images"] == 6
    assert set(q["class_accuracy_per_class"]) == {"0", "1", "2"}


def test_frechet_distance_is_zero_for_equal_statistics_and_grows_with_a_shift():
    from ddbench.helpers import frechet_distance

    f = torch.randn(200, 5, dtype=torch.float64)
    mu, cov = f.mean(0), torch.cov(f.T)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(mu + 1, cov, mu, cov) == pytest.approx(5.0, rel=1e-6)


def test_distill_under_budget(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=3.0, **{**TINY, "policy": "max-images"})
    method.validate(ctx)
    syn = method.distill(ctx)
    counts = syn.per_class(3)
    assert len(set(counts)) == 1 and counts[0] >= 1
    assert syn.meta["sampler"]["seconds"] <= 3.0 and syn.meta["budget_honoured"]
    assert syn.meta["policy"]["steps"] == 2


def test_budget_guidance_applies_under_a_budget_only(make_ctx):
    """`budget_guidance` sets the scale of budget runs (measured throughput included); fixed-IPC runs keep `guidance`."""
    from ddbench_minmax.settings import guidance_of

    _, budget_ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=3.0, **{**TINY, "guidance": 2.0,
                                                                                     "budget_guidance": 1.0})
    _, ipc_ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **{**TINY, "guidance": 2.0, "budget_guidance": 1.0})
    _, unset_ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=3.0, **{**TINY, "guidance": 2.0})
    assert (guidance_of(budget_ctx), guidance_of(ipc_ctx), guidance_of(unset_ctx)) == (1.0, 2.0, 2.0)
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=3.0,
                           **{**TINY, "policy": "max-images", "guidance": 4.0, "budget_guidance": 1.0})
    method.validate(ctx)
    syn = method.distill(ctx)
    assert syn.meta["sampler"]["guidance"] == 1.0 and syn.meta["budget_honoured"]


def test_dit_backbone_behind_the_same_interface(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1, **{**TINY, "arch": "dit"})
    syn = method.distill(ctx)
    assert syn.per_class(3) == [1, 1, 1]


def test_cache_round_trip_and_corruption(make_ctx, tmp_path):
    model = tiny_model()
    cache = DenoiserCache(tmp_path / "k")
    cache.save(model, {"hello": 1})
    loaded, meta = cache.load()
    x, t, y = torch.randn(2, 1, SIZE, SIZE), torch.tensor([3, 7]), torch.tensor([0, 2])
    assert torch.allclose(model(x, t, y), loaded(x, t, y), atol=1e-6) and meta["hello"] == 1
    assert loaded.config == model.config

    # A corrupted cached generator of a run: rebuilt by default, a clear error on request.
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1, **TINY)
    syn = method.distill(ctx)
    root = syn.meta["generator"]["finetune"]["cache_path"]
    _corrupt(f"{root}/generator/diffusion_pytorch_model.safetensors")
    method, ctx_err = make_ctx("minmax-diffusion", dataset=tiny_ds(), ipc=1, **{**TINY, "on_corrupt_cache": "error"})
    ctx_err.cache_dir = ctx.cache_dir
    with pytest.raises(DDBenchError, match="cached fine-tuned generator is corrupt: .*sha256.*on_corrupt_cache=rebuild"):
        method.distill(ctx_err)
    syn2 = method.distill(ctx)
    assert syn2.meta["generator"]["finetune"]["cache"] == "miss"  # rebuilt
    assert method.distill(ctx).meta["generator"]["finetune"]["cache"] == "hit"


def _corrupt(path) -> None:
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"garbage!")


def test_training_resumes_from_its_checkpoint(tmp_path):
    ds = tiny_ds()
    data = ds.train_x.clamp(-1, 1)
    spec = TrainSpec(steps=4, batch_size=6, lr=1e-3, ema_decay=0.999, lambda_pos=0.002, lambda_neg=0.008,
                     memory_size=8, checkpoint_every=2, seed=5, precision="fp32")

    ref, _ = train_phase(tiny_model(), data, ds.train_y, spec, tmp_path / "ref.pt", progress=False)

    class Interrupt(Exception):
        pass

    calls = {"n": 0}
    model = tiny_model()
    orig = model.forward

    def flaky(x, t, y):
        calls["n"] += 1
        if calls["n"] == 3:  # dies during step 3, after the checkpoint at step 2
            raise Interrupt
        return orig(x, t, y)

    model.forward = flaky
    ckpt = tmp_path / "resumed.pt"
    with pytest.raises(Interrupt):
        train_phase(model, data, ds.train_y, spec, ckpt, progress=False)
    assert ckpt.is_file()
    logs = []
    resumed, _ = train_phase(tiny_model(), data, ds.train_y, spec, ckpt, progress=False, log=logs.append)
    assert any("resuming" in m and "step 2/4" in m for m in logs)
    for a, b in zip(ref.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_difffit_trains_only_biases_norms_and_the_class_embedding(tmp_path):
    ds = tiny_ds()
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    spec = TrainSpec(steps=2, batch_size=6, lr=1e-2, seed=1, trainable="difffit", precision="fp32")
    tuned, stats = train_phase(model, ds.train_x.clamp(-1, 1), ds.train_y, spec, progress=False)
    changed = {n for n, p in tuned.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.endswith(".bias") or "norm" in n or "class_embedding" in n for n in changed)
    assert any("class_embedding" in n for n in changed)
    assert stats["trainable_parameters"] < sum(p.numel() for p in model.parameters()) / 5


def test_thread_governor_follows_the_faster_thread_count():
    from ddbench_minmax.train import ThreadGovernor

    before = torch.get_num_threads()
    try:
        gov = ThreadGovernor(2, probe_every=10, probe_len=2)
        cost = {2: 1.0, 1: 0.6}  # contended: 2 threads slower than 1
        used = []
        for step in range(40):
            n = gov.choose(step)
            used.append(n)
            gov.record(cost[n])
        assert used[-5:] == [1] * 5 and 2 in used[10:12]  # settled on 1, still probes 2 now and then
        cost = {2: 0.3, 1: 0.6}  # the other process ended: back to 2 threads after the next probe
        for step in range(40, 80):
            gov.record(cost[gov.choose(step)])
        assert gov.choose(85) == 2 and gov.summary()["switches"] >= 3
    finally:
        torch.set_num_threads(before)


def test_plugins_are_registered(registry):
    assert "minmax-diffusion" in registry.names("methods")
    assert "dsr" in registry.names("samplers")
    assert {"fixed-steps", "max-images", "calibrated"} <= set(registry.names("policies"))
    method = registry.get("methods", "minmax-diffusion")
    assert method.supports_budget
    for key, p in method.params.items():
        assert p.source and "REFERENCE" not in p.source and "issue" not in p.source, key
    resolve_params("m", method.params, {"pilot_steps": "5,10"})


# --------------------------------------------------------------------------------------------------
# The shipped base
# --------------------------------------------------------------------------------------------------


def test_shipped_base_loads_and_its_sha256_is_checked():
    from ddbench_minmax.shipped import load_verified, shipped_cache
    from ddbench.store.identity import file_sha256

    cache = shipped_cache("fashion-mnist")
    model, meta = load_verified(cache)
    assert meta["sha256"] == file_sha256(cache.generator_dir / "diffusion_pytorch_model.safetensors")
    assert model.config.num_classes == 10 and model.config.null_class == 10 and model.config.image_size == 28
    assert meta["recipe"]["p_uncond"] > 0 and meta["train"]["steps"] > 0 and meta["command"].startswith("python -m")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.isfinite(guided_eps(model, x, torch.tensor([10, 900]), torch.tensor([0, 9]), 4.0)).all()


def test_a_corrupt_shipped_base_is_one_line_error(tmp_path):
    import shutil

    from ddbench_minmax.shipped import load_verified, shipped_cache

    copy = tmp_path / "fashion-mnist"
    shutil.copytree(shipped_cache("fashion-mnist").root, copy)
    _corrupt(copy / "generator" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(DDBenchError) as err:
        load_verified(DenoiserCache(copy))
    msg = str(err.value)
    assert "\n" not in msg and "sha256" in msg and "base=train" in msg
    (copy / "meta.json").write_text("{not json")
    with pytest.raises(DDBenchError, match="unreadable"):
        load_verified(DenoiserCache(copy))


def test_shipped_quality_classifier_is_used_for_its_data(tmp_path, registry):
    from ddbench.helpers import reference_classifier
    from ddbench.run.runner import load_dataset
    from ddbench.store.identity import dataset_fingerprint

    ds = load_dataset(registry, "fashion-mnist", None, False)
    spec = registry.get("models", "convnet")
    clf = reference_classifier(ds, lambda: spec.build(1, 10, 28), tmp_path, dataset_fingerprint(ds), log=None)
    assert clf.meta["file"].endswith("reference-classifier.pt") and clf.test_acc > 80  # loaded, not trained
    assert not (tmp_path / "minmax-diffusion").exists()
