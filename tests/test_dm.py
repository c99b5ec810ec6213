"""DM baseline: cited defaults, the objective goes down, beats its init, resumes exactly, bad input."""
from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_dataset
from ddbench.api import DDBenchError, SyntheticSet
from ddbench_baselines import dm as dm_module
from ddbench.helpers import derive_seed, seeded
from ddbench_baselines._common import init_images


pytestmark = pytest.mark.usefixtures("one_thread")


FAST = dict(iterations=8, batch_real=12, checkpoint_every=3)


def test_registered_with_cited_paper_defaults(registry):
    method = registry.get("methods", "dm")
    assert registry.owners["methods"]["dm"] == "dm"
    for key, param in method.params.items():
        assert param.source, key
    defaults = {k: p.default for k, p in method.params.items()}
    assert defaults["iterations"] == 20000 and defaults["lr_img"] == 1.0 and defaults["batch_real"] == 256
    assert defaults["momentum"] == 0.5 and defaults["init"] == "real"
    assert defaults["dsa_strategy"] == "color_crop_cutout_flip_scale_rotate"


def _dm_objective(images: torch.Tensor, ctx, n_nets: int = 4) -> float:
    """The DM loss with full class means (no sampling, no augmentation) averaged over fixed embedders."""
    ds, ipc = ctx.dataset, ctx.ipc
    total = 0.0
    for k in range(n_nets):
        with seeded("objective", k):
            net = ctx.build_model().eval()
        with torch.no_grad():
            er, es = net.embed(ds.train_x), net.embed(images)
            for c in range(ds.num_classes):
                total += float(((er[ds.train_y == c].mean(0) - es[c * ipc:(c + 1) * ipc].mean(0)) ** 2).sum())
    return total / n_nets


def test_loss_goes_down(make_ctx):
    method, ctx = make_ctx("dm", ipc=1, dsa_strategy="none", **FAST)
    method.validate(ctx)
    init, _ = init_images(ctx, "real")
    syn = method.distill(ctx)
    assert syn.images.shape == (3, 1, 28, 28) and syn.labels.tolist() == [0, 1, 2]
    assert len(syn.meta["losses"]) == FAST["iterations"]
    assert _dm_objective(syn.images, ctx) < 0.7 * _dm_objective(init, ctx)
    # with DSA on (the default) the training loss also falls
    method, ctx = make_ctx("dm", ipc=1, **FAST)
    losses = method.distill(ctx).meta["losses"]
    assert sum(losses[-3:]) < sum(losses[:3])


def test_beats_its_initialisation_on_held_out_data(make_ctx):
    ds = make_tiny_dataset(num_classes=3, per_class=20, test_per_class=30)
    # noisier training images: one real image per class is a poor summary, the class mean a good one
    ds.train_x = ds.train_x + 2.0 * torch.randn(ds.train_x.shape, generator=torch.Generator().manual_seed(5))
    method, ctx = make_ctx("dm", dataset=ds, ipc=1, iterations=25, batch_real=20, dsa_strategy="none")
    syn = method.distill(ctx)
    init, labels = init_images(ctx, "real")
    base = ctx.evaluate(SyntheticSet(init, labels), "fast", epochs=20, n_models=2).mean
    got = ctx.evaluate(syn, "fast", epochs=20, n_models=2).mean
    assert got > base + 10, (base, got)


def test_resumes_from_checkpoint_exactly(make_ctx, tmp_path, monkeypatch):
    method, ctx = make_ctx("dm", ipc=2, **FAST)
    full = method.distill(ctx)

    # a second run in a fresh work dir, interrupted during iteration 5 (after the checkpoint at 3)
    method, ctx2 = make_ctx("dm", ipc=2, **FAST)
    ctx2.work_dir = tmp_path / "other"
    real_generator = dm_module.generator

    def failing(*keys):
        if keys[1] == "dm" and keys[2] == 5:
            raise KeyboardInterrupt
        return real_generator(*keys)

    monkeypatch.setattr(dm_module, "generator", failing)
    with pytest.raises(KeyboardInterrupt):
        method.distill(ctx2)
    assert (ctx2.work_dir / dm_module.CHECKPOINT).is_file()
    assert not list(ctx2.work_dir.glob("*.tmp"))
    monkeypatch.setattr(dm_module, "generator", real_generator)
    messages = []
    ctx2.log = messages.append
    resumed = method.distill(ctx2)
    assert resumed.meta["resumed_from"] == 3
    assert resumed.generation_seconds is None  # the first session's seconds are not known
    assert full.generation_seconds == pytest.approx(full.meta["seconds_this_session"], abs=1e-3)
    assert any("resuming from iteration 3" in m for m in messages)
    torch.testing.assert_close(resumed.images, full.images)
    assert resumed.meta["losses"] == pytest.approx(full.meta["losses"])

    # a finished run resumes at its end and does no work
    again = method.distill(ctx2)
    assert again.meta["resumed_from"] == FAST["iterations"]
    torch.testing.assert_close(again.images, full.images)


def test_corrupt_or_foreign_checkpoint_is_not_used(make_ctx):
    method, ctx = make_ctx("dm", ipc=1, iterations=2, batch_real=8)
    (ctx.work_dir / dm_module.CHECKPOINT).write_bytes(b"not a checkpoint")
    messages = []
    ctx.log = messages.append
    syn = method.distill(ctx)
    assert syn.meta["resumed_from"] is None
    assert any("unreadable" in m for m in messages)
    # settings changed (lr_img): the old checkpoint is ignored, with a message
    method, ctx2 = make_ctx("dm", ipc=1, iterations=2, batch_real=8, lr_img=0.5)
    ctx2.work_dir = ctx.work_dir
    ctx2.log = messages.append
    assert method.distill(ctx2).meta["resumed_from"] is None
    assert any("other settings" in m for m in messages)
    # a checkpoint of a longer run is not the state of a shorter one
    method, ctx3 = make_ctx("dm", ipc=1, iterations=1, batch_real=8, lr_img=0.5)
    ctx3.work_dir = ctx.work_dir
    ctx3.log = messages.append
    assert method.distill(ctx3).meta["resumed_from"] is None
    assert any("past iterations=1" in m for m in messages)


def test_noise_init_and_cuda_free_defaults(make_ctx):
    method, ctx = make_ctx("dm", ipc=1, iterations=1, batch_real=4, init="noise")
    syn = method.distill(ctx)
    assert torch.isfinite(syn.images).all() and syn.images.device.type == "cpu"


def test_ipc_larger_than_a_class_is_an_error(make_ctx):
    method, ctx = make_ctx("dm", ipc=21)  # the tiny dataset has 20 images per class
    with pytest.raises(DDBenchError) as err:
        method.validate(ctx)
    msg = str(err.value)
    assert "--ipc 21" in msg and "20 real training images" in msg and "3 classes" in msg and "\n" not in msg


def test_bad_settings_are_errors(make_ctx):
    with pytest.raises(DDBenchError, match="init"):
        make_ctx("dm", init="zeros")
    with pytest.raises(DDBenchError, match="batch_real"):
        make_ctx("dm", batch_real=0)
    method, ctx = make_ctx("dm", dsa_strategy="color_blur")
    with pytest.raises(DDBenchError, match="blur"):
        method.validate(ctx)


def test_seeds_are_stable():
    assert derive_seed(0, "dm", 1) == derive_seed(0, "dm", 1) != derive_seed(0, "dm", 2)


# ---- the two layouts (issue 13): same objective as main_DM.py's loop, up to float summation order

@pytest.mark.parametrize("strategy", ["color_crop_cutout_flip_scale_rotate", "none"])
@pytest.mark.parametrize("impl,micro_batch,workers", [("chunked", 5, 1), ("chunked", 5, 2), ("chunked", 0, 2),
                                                     ("batched", 16, 0)])
def test_layouts_match_the_reference_loop(make_ctx, strategy, impl, micro_batch, workers):
    """Loss and gradient of both layouts against `reference_loss` (main_DM.py's class-by-class loop, whole
    batches, plain autograd), over iterations whose DSA draws pick different groups for different classes."""
    ds = make_tiny_dataset(num_classes=4, per_class=20)
    method, ctx = make_ctx("dm", dataset=ds, ipc=3, batch_real=13, dsa_strategy=strategy, impl=impl,
                           micro_batch=micro_batch, workers=workers)
    idx = dm_module.class_indices(ds)
    dsa = dm_module.make_dsa(strategy)
    syn = torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for it in range(4):
        leaf = syn.clone().requires_grad_(True)
        want = dm_module.reference_loss(ctx, it, leaf, ds.train_x, idx, dsa)
        want_grad, = torch.autograd.grad(want, leaf)
        loss, grad = dm_module._iteration(ctx, it, syn, ds.train_x, idx, dsa, impl)
        torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, want_grad, rtol=1e-4, atol=1e-6 * float(want_grad.abs().max()))


def test_dsa_draws_differ_between_classes():
    """The layout test above is only meaningful if one iteration's classes draw different DSA groups."""
    from ddbench.host.augment import DSA

    g = dm_module.generator(0, "dm", 0)
    ops = {DSA().sample(torch.zeros(1, 1, 28, 28), g, siamese=True).op for _ in range(8)}
    assert len(ops) > 1


def test_impl_auto_is_chunked_on_cpu_batched_on_cuda():
    assert dm_module.resolve_impl("auto", "cpu") == "chunked"
    assert dm_module.resolve_impl("auto", "cuda") == "batched"
    assert dm_module.resolve_impl("batched", "cpu") == "batched"


def test_layout_settings_do_not_invalidate_a_checkpoint(make_ctx):
    _, a = make_ctx("dm", impl="chunked", micro_batch=4)
    method, b = make_ctx("dm", impl="batched", micro_batch=16, workers=1)
    assert method._fingerprint(a) == method._fingerprint(b)
    _, c = make_ctx("dm", batch_real=8)
    assert method._fingerprint(a) != method._fingerprint(c)


def test_distill_with_either_layout_gives_the_same_images(make_ctx, tmp_path):
    method, ctx = make_ctx("dm", ipc=2, iterations=4, batch_real=12, impl="chunked", micro_batch=5)
    chunked = method.distill(ctx)
    method, ctx = make_ctx("dm", ipc=2, iterations=4, batch_real=12, impl="batched")
    ctx.work_dir = tmp_path / "batched"
    ctx.work_dir.mkdir()
    batched = method.distill(ctx)
    assert chunked.meta["impl"] == "chunked" and batched.meta["impl"] == "batched"
    torch.testing.assert_close(chunked.images, batched.images, rtol=1e-4, atol=1e-4)


def test_keep_freed_memory_is_idempotent_and_harmless():
    from ddbench_baselines._common import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() == first  # a second call changes nothing
    assert isinstance(first, bool)
    x = torch.randn(4 << 20)  # 16 MB: still allocates and frees normally
    assert float((x * 0).sum()) == 0.0
