"""DC / DSA gradient matching: the distance by hand, matching pulls gradients together, init, resume, layouts,
bad settings, and a run through the command line."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_dataset
from ddbench.api import DDBenchError
from ddbench_baselines import gm, gm_step

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(iterations=5, batch_real=8, checkpoint_every=2, outer_loop=2, inner_loop=2, batch_train=4)


def test_registered_with_cited_paper_defaults(registry):
    for name in ("dc", "dsa-gm"):
        method = registry.get("methods", name)
        assert registry.owners["methods"][name] == "gm"
        assert all(p.source for p in method.params.values())
        d = {k: p.default for k, p in method.params.items()}
        assert (d["iterations"], d["lr_img"], d["lr_net"], d["batch_real"], d["batch_train"], d["momentum"]) == \
            (1000, 0.1, 0.01, 256, 256, 0.5)
        assert d["dis_metric"] == "ours" and d["outer_loop"] == 0 and d["inner_loop"] == 0
    assert registry.get("methods", "dc").params["init"].default == "noise"  # main.py --init default
    assert "dsa_strategy" not in registry.get("methods", "dc").params
    dsa = registry.get("methods", "dsa-gm").params
    assert dsa["init"].default == "real" and dsa["dsa_strategy"].default == "color_crop_cutout_flip_scale_rotate"
    assert gm.LOOPS[1] == (1, 1) and gm.LOOPS[10] == (10, 50) and gm.LOOPS[50] == (50, 10)


# ---- the distance (utils.py distance_wb / match_loss)

def test_layer_distance_by_hand():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    syn = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    # row 0: cos 1 -> 1 - 2/(2 + 1e-6); row 1: cos 1/sqrt(2)
    want = (1 - 2 / (2 + 1e-6)) + (1 - 1 / (math.sqrt(2) + 1e-6))
    assert float(gm_step.layer_distance(real, syn)) == pytest.approx(want, rel=1e-6)
    # a conv weight (out, in, h, w) is compared per output channel, over in*h*w
    conv_r = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]).reshape(2, 1, 2, 2)
    conv_s = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0]).reshape(2, 1, 2, 2)
    assert float(gm_step.layer_distance(conv_r, conv_s)) == pytest.approx(1.0 + (1 - 3 / (3 + 1e-6)), rel=1e-6)
    # biases and norm parameters count nothing
    assert float(gm_step.layer_distance(torch.ones(3), -torch.ones(3))) == 0.0
    total = gm_step.gradient_distance([syn, conv_s, -torch.ones(3)], [real, conv_r, torch.ones(3)], "ours")
    assert float(total) == pytest.approx(want + 1.0 + (1 - 3 / (3 + 1e-6)), rel=1e-6)
    # mse and cos over everything flattened
    assert float(gm_step.gradient_distance([syn], [real], "mse")) == pytest.approx(1 + 0 + 1 + 0)
    assert float(gm_step.gradient_distance([syn], [real], "cos")) == pytest.approx(1 - 3 / (math.sqrt(6) * math.sqrt(2) + 1e-6))


def test_loss_gradients_in_chunks_equal_the_whole_batch():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.randn(7, 1, 3, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    params = list(net.parameters())
    whole = torch.autograd.grad(F.cross_entropy(net(x), y), params)
    for got, want in zip(gm_step.loss_gradients(net, params, x, y, micro_batch=3), whole):
        torch.testing.assert_close(got, want)


def test_matching_drives_the_synthetic_gradient_toward_the_real_one():
    """A fixed network, one class: descending match_class on the synthetic images lowers the distance (a sum of
    1 - cos between the real and synthetic gradient rows) well below where it started."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3))
    real = torch.randn(32, 1, 6, 6, generator=g) + 1.0
    y_real, y_syn = torch.zeros(32, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    syn = torch.randn(2, 1, 6, 6, generator=g).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    losses = []
    for _ in range(30):
        loss = gm_step.match_class(net, real, y_real, syn, y_syn)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], losses
    assert all(math.isfinite(v) for v in losses)


# ---- the method

def test_init_real_picks_real_images_of_each_class(make_ctx):
    _, ctx = make_ctx("dsa-gm", ipc=3)
    images, labels, prov = gm.initial_images(ctx)
    assert prov is None
    ds = ctx.dataset
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for img, c in zip(images, labels):
        same = (ds.train_x == img).flatten(1).all(1).nonzero().flatten()
        assert len(same) == 1 and int(ds.train_y[same[0]]) == int(c)
    assert len({tuple(x.flatten()[:5].tolist()) for x in images}) == 9  # distinct images
    _, ctx = make_ctx("dc", ipc=3)  # main.py default: noise
    noise, _, _ = gm.initial_images(ctx)
    assert not any(((ds.train_x == x).flatten(1).all(1)).any() for x in noise)


@pytest.mark.parametrize("name", ["dc", "dsa-gm"])
def test_distill_lowers_the_matching_loss(make_ctx, name):
    method, ctx = make_ctx(name, ipc=1, iterations=12, batch_real=16, init="noise", lr_img=0.5)
    method.validate(ctx)
    syn = method.distill(ctx)
    losses = syn.meta["losses"]
    assert syn.images.shape == (3, 1, 28, 28) and syn.labels.tolist() == [0, 1, 2]
    assert len(losses) == 12 and (syn.meta["outer_loop"], syn.meta["inner_loop"]) == (1, 1)
    assert sum(losses[-4:]) < sum(losses[:4]), losses


@pytest.mark.parametrize("name", ["dc", "dsa-gm"])
@pytest.mark.parametrize("micro_batch,workers", [(0, 1), (3, 1), (3, 2)])
def test_match_equals_the_plain_reference_loop(make_ctx, name, micro_batch, workers):
    """Step.match (chunks, worker threads) against main.py's loop written plainly: loss and image gradient."""
    ds = make_tiny_dataset(num_classes=4, per_class=20)
    _, ctx = make_ctx(name, dataset=ds, ipc=2, batch_real=9, micro_batch=micro_batch, workers=workers,
                      outer_loop=1, inner_loop=1)
    idx = gm.class_indices(ds)
    syn = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for it in range(3):
        leaf = syn.clone().requires_grad_(True)
        want = gm_step.reference_iteration_loss(ctx, name, name == "dsa-gm", it, leaf, ds.train_x, idx)
        want_grad, = torch.autograd.grad(want, leaf)
        step = gm_step.Step(ctx, name, name == "dsa-gm", ds.train_x, idx)
        gen = gm_step.generator(ctx.seed, name, it)
        loss, grad = step.match(step.network(it), step.draws(gen), syn)
        torch.testing.assert_close(loss, want.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grad, want_grad, rtol=1e-3, atol=1e-5 * float(want_grad.abs().max()))


def test_inner_step_on_workers_equals_the_whole_batch(make_ctx):
    _, ctx = make_ctx("dsa-gm", ipc=2, micro_batch=2, workers=2)
    step = gm_step.Step(ctx, "dsa-gm", True, ctx.dataset.train_x, gm.class_indices(ctx.dataset))
    net = step.network(0)
    params = list(net.parameters())
    x, y = ctx.dataset.train_x[:7], ctx.dataset.train_y[:7]
    want = torch.autograd.grad(F.cross_entropy(net(x), y), params)
    for got, ref in zip(step.batch_gradients(net, params, x, y), want):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


def test_batchnorm_networks_get_frozen_statistics(make_ctx):
    method, ctx = make_ctx("dc", ipc=1, iterations=2, batch_real=8, init="real")
    ctx.model = "convnet-bn"
    step = gm_step.Step(ctx, "dc", False, ctx.dataset.train_x, gm.class_indices(ctx.dataset))
    net = step.network(0)
    gm_step.freeze_batchnorm(net, ctx.dataset.train_x, step.idx_by_class, torch.Generator().manual_seed(0))
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns) and all(int(m.num_batches_tracked) == 1 for m in bns)
    syn = method.distill(ctx)
    assert torch.isfinite(syn.images).all()


def test_resumes_from_checkpoint_exactly(make_ctx, tmp_path, monkeypatch):
    method, ctx = make_ctx("dsa-gm", ipc=2, **FAST)
    full = method.distill(ctx)

    method, ctx2 = make_ctx("dsa-gm", ipc=2, **FAST)
    ctx2.work_dir = tmp_path / "other"
    ctx2.work_dir.mkdir()
    real_generator = gm_step.generator

    def failing(*keys):
        if keys[1] == "dsa-gm" and keys[2] == 3:
            raise KeyboardInterrupt
        return real_generator(*keys)

    monkeypatch.setattr(gm_step, "generator", failing)
    with pytest.raises(KeyboardInterrupt):
        method.distill(ctx2)
    assert (ctx2.work_dir / method.checkpoint).is_file() and not list(ctx2.work_dir.glob("*.tmp"))
    monkeypatch.setattr(gm_step, "generator", real_generator)
    messages = []
    ctx2.log = messages.append
    resumed = method.distill(ctx2)
    assert resumed.meta["resumed_from"] == 2 and any("resuming from iteration 2" in m for m in messages)
    torch.testing.assert_close(resumed.images, full.images)
    assert resumed.meta["losses"] == pytest.approx(full.meta["losses"])
    again = method.distill(ctx2)  # finished: resumes at its end, no work
    assert again.meta["resumed_from"] == FAST["iterations"]
    torch.testing.assert_close(again.images, full.images)
    # other settings: the checkpoint is not used
    method, ctx3 = make_ctx("dsa-gm", ipc=2, **{**FAST, "lr_img": 0.2})
    ctx3.work_dir, ctx3.log = ctx2.work_dir, messages.append
    assert method.distill(ctx3).meta["resumed_from"] is None and any("other settings" in m for m in messages)


def test_image_updates_set_the_iterations_per_ipc(make_ctx):
    method, ctx = make_ctx("dc", ipc=1, iterations=7, image_updates=3, batch_real=4)
    assert gm.iterations_for(ctx) == 3
    messages = []
    ctx.log = messages.append
    syn = method.distill(ctx)
    assert len(syn.meta["losses"]) == 3 and syn.meta["iterations"] == 3 and "3 iterations" in messages[0]
    _, ctx = make_ctx("dc", ipc=2, outer_loop=4, inner_loop=1, image_updates=10)
    assert gm.iterations_for(ctx) == 3  # ceil(10 / 4)
    _, ctx = make_ctx("dc", ipc=2, outer_loop=4, inner_loop=1, iterations=5)
    assert gm.iterations_for(ctx) == 5


def test_cpu_preset_and_paper_preset():
    from ddbench.run.runner import RunRequest, registry_for, resolve
    from ddbench.store.config import PACKAGED, load_config

    cfg = load_config(str(PACKAGED))
    reg = registry_for(cfg)
    for name in ("dc", "dsa-gm"):
        preset = resolve(RunRequest(method=name, ipc=10), cfg, reg).method_params
        paper = resolve(RunRequest(method=name, ipc=10, preset="paper"), cfg, reg).method_params
        assert (preset["image_updates"], preset["batch_real"], preset["inner_loop"], preset["init"]) == (100, 32, 5, "real")
        assert (paper["image_updates"], paper["iterations"], paper["batch_real"], paper["inner_loop"]) == (0, 1000, 256, 0)
        assert paper["init"] == ("noise" if name == "dc" else "real")


def test_layout_settings_do_not_change_the_fingerprint(make_ctx):
    method, a = make_ctx("dc", micro_batch=4, workers=1)
    _, b = make_ctx("dc", micro_batch=0, workers=2)
    _, c = make_ctx("dc", batch_real=8)
    assert method._fingerprint(a) == method._fingerprint(b) != method._fingerprint(c)


def test_bad_settings_are_one_line_errors(make_ctx):
    for name, key, value, says in [("dc", "init", "zeros", "init"), ("dc", "batch_real", 0, "batch_real"),
                                   ("dsa-gm", "dis_metric", "l1", "dis_metric"), ("dsa-gm", "dsa_strategy", "color_blur", "blur"),
                                   ("dc", "dsa_strategy", "crop", "unknown setting 'dsa_strategy' for method dc")]:
        with pytest.raises(DDBenchError, match=says) as err:
            make_ctx(name, **{key: value})
        assert "\n" not in str(err.value)
    method, ctx = make_ctx("dc", ipc=2)  # get_loops has no IPC 2
    with pytest.raises(DDBenchError) as err:
        method.validate(ctx)
    assert "--ipc 2" in str(err.value) and "outer_loop" in str(err.value) and "\n" not in str(err.value)
    method, ctx = make_ctx("dc", ipc=2, outer_loop=2, inner_loop=3)
    method.validate(ctx)
    method, ctx = make_ctx("dc", ipc=21, outer_loop=1, inner_loop=1)  # 20 images per class
    with pytest.raises(DDBenchError, match="--ipc 21"):
        method.validate(ctx)


def test_runs_through_the_command_line(tmp_path, tiny_plugin_config, capsys):
    from ddbench.cli import main

    out = tmp_path / "out"
    argv = ["run", "--method", "dc", "--ipc", "1", "--no-eval", "--dataset", "tiny", "--config", str(tiny_plugin_config),
            "--out", str(out), "--set", "iterations=2", "--set", "batch_real=4", "--json", "--no-progress"]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["status"] == "ok" and result["method"] == "dc" and result["images"] == 3
    syn = torch.load(result["artifact"], weights_only=False)
    assert len(syn["meta"]["losses"]) == 2 and syn["meta"]["method"] == "DC"
    assert main(["run", "--method", "dsa-gm", "--ipc", "2", "--no-eval", "--dataset", "tiny", "--config",
                 str(tiny_plugin_config), "--out", str(out), "--no-progress"]) == 2
    assert "get_loops" in capsys.readouterr().err


def test_warm_start_from_a_stored_set(make_ctx, tmp_path):
    """init=PATH (docs/baselines.md#warm-starts): the run starts from the stored images and records where from."""
    method, ctx = make_ctx("dc", ipc=1, iterations=0)
    stored = method.distill(ctx)
    path = tmp_path / "synset.pt"
    torch.save({"images": stored.images + 1.0, "labels": stored.labels, "meta": {}}, path)
    method, ctx = make_ctx("dsa-gm", ipc=1, iterations=0, init=str(path))
    method.validate(ctx)
    syn = method.distill(ctx)
    torch.testing.assert_close(syn.images, stored.images + 1.0)
    assert syn.meta["init_provenance"]["path"] == str(path.absolute())
