"""Generator-side refine (ddbench_minmax/noise_refine.py): the DSR start optimised through the DDIM chain with a
registered objective's gradient. Tiny shapes: the test UNet at 12 px, 20 training timesteps."""
from __future__ import annotations

import re
import time

import pytest
import torch

from ddbench.api import DDBenchError, SampleRequest
from ddbench_minmax import noise_refine, refine
from ddbench_minmax.sampler import DSRSampler
from ddbench_minmax.train import from_signed_pixels
from test_minmax import SIZE, TINY, tiny_ds, tiny_model, tiny_arch  # noqa: F401 - tiny_arch is an autouse fixture

pytestmark = pytest.mark.usefixtures("one_thread")

K = 3


def _request(ipc=2, batch_size=12, strength=0.7, **kw) -> SampleRequest:
    protos = torch.rand(K, ipc, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5)) * 2 - 1
    levers = {k: kw.pop(k) for k in list(kw) if k in DSRSampler.params}
    base = dict(num_classes=K, steps=3, image_shape=(1, SIZE, SIZE), ipc=ipc, guidance=2.0, scheduler="ddim",
                batch_size=batch_size, seed=7)
    return SampleRequest(**{**base, **kw}, settings={"strength": strength, **levers},
                         inputs={"prototypes": protos} if strength < 1 else {})


def _dm(make_ctx, labels):
    _, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(K), refine="dm",
                      refine_settings="batch_real=4,dsa_strategy=none", **TINY)
    obj, settings = refine.objective(ctx)
    return ctx, obj.bind(ctx, labels, settings), settings


@pytest.mark.parametrize("batch_size, strength", [(12, 0.7), (3, 0.7), (12, 1.0)])
def test_zero_iterations_are_exactly_the_sampled_images(make_ctx, batch_size, strength):
    """One batch or two (batch_size 3 = one round per batch), from noised prototypes or from pure noise."""
    den = tiny_model(K)
    r = _request(batch_size=batch_size, strength=strength)
    plain = DSRSampler().generate(den, r)
    ctx, step, _ = _dm(make_ctx, plain.labels)
    out = noise_refine.optimise(den, r, step, lambda x: from_signed_pixels(ctx.dataset, x), 0, 1.0, 0.5, "dm")
    assert out.losses == [] and not out.stopped_at_deadline
    assert torch.equal(out.labels.cpu(), plain.labels)
    assert torch.equal(out.images.cpu(), from_signed_pixels(ctx.dataset, plain.images))


def test_the_matching_loss_falls_and_only_the_start_moves(make_ctx):
    """With the objective held at one draw (iteration 0's embedder and real batch), SGD on the start descends it; the
    denoiser's weights are untouched and keep their requires_grad."""
    den = tiny_model(K)
    before = {k: v.clone() for k, v in den.state_dict().items()}
    r = _request()
    plain = DSRSampler().generate(den, r)
    ctx, step, _ = _dm(make_ctx, plain.labels)
    fixed = lambda it, images: step(0, images)  # noqa: E731 - one fixed function of the images
    out = noise_refine.optimise(den, r, fixed, lambda x: from_signed_pixels(ctx.dataset, x), 6, 0.5, 0.5, "dm")
    assert len(out.losses) == 6 and out.losses[-1] < 0.9 * out.losses[0], out.losses
    final_loss, _ = step(0, out.images)
    assert final_loss < out.losses[0]
    assert not torch.equal(out.images, from_signed_pixels(ctx.dataset, plain.images))
    assert all(torch.equal(before[k], v) for k, v in den.state_dict().items())
    assert all(p.requires_grad for p in den.parameters())
    # the prototypes as the target move the set too (the noise held)
    moved = noise_refine.optimise(den, r, fixed, lambda x: from_signed_pixels(ctx.dataset, x), 2, 0.5, 0.5, "dm",
                                  target="prototypes")
    assert len(moved.losses) == 2 and not torch.equal(moved.images, from_signed_pixels(ctx.dataset, plain.images))


def test_the_deadline_stops_it():
    den = tiny_model(K)
    r = _request()
    calls = []

    def sleepy(it, images):
        calls.append(it)
        time.sleep(0.05)
        return float(images.square().sum()), 2 * images

    t0 = time.perf_counter()
    out = noise_refine.optimise(den, r, sleepy, lambda x: x, 100000, 0.1, 0.5, "sleepy", deadline=t0 + 0.5,
                                safety=1.1)
    elapsed = time.perf_counter() - t0
    assert out.stopped_at_deadline and 1 <= len(out.losses) < 10 and elapsed <= 0.5 + 0.05, (len(out.losses), elapsed)
    # an expected iteration longer than the time left: none starts, and the set is the plain sample
    calls.clear()
    out = noise_refine.optimise(den, r, sleepy, lambda x: x, 10, 0.1, 0.5, "sleepy",
                                deadline=time.perf_counter() + 0.1, expected=0.5)
    assert out.stopped_at_deadline and out.losses == [] and calls == []
    assert torch.equal(out.images, DSRSampler().generate(den, r).images)


def test_what_it_cannot_run_is_refused_in_one_line():
    den = tiny_model(K)
    for kw, message in ((dict(scheduler="dpm++"), "scheduler='dpm++' is not allowed for noise refine"),
                        (dict(mode_guidance=0.1), "mode_guidance=0.1 is not allowed for noise refine")):
        r = _request(**kw)
        with pytest.raises(DDBenchError, match=re.escape(message)):
            noise_refine.optimise(den, r, None, lambda x: x, 1, 0.1, 0.5, "dm")
    with pytest.raises(DDBenchError, match="target='pixels' is not allowed"):
        noise_refine.optimise(den, _request(), None, lambda x: x, 1, 0.1, 0.5, "dm", target="pixels")
    with pytest.raises(DDBenchError, match="target=prototypes needs prototypes"):
        noise_refine.optimise(den, _request(strength=1.0), None, lambda x: x, 1, 0.1, 0.5, "dm", target="prototypes")


def test_the_loop_runs_at_the_thread_count_it_is_given_and_restores_it():
    den = tiny_model(K)
    seen = []

    def step(it, images):
        seen.append(torch.get_num_threads())
        return float(images.square().sum()), 2 * images

    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    noise_refine.optimise(den, _request(ipc=1), step, lambda x: x, 1, 0.1, 0.5, "dm", threads=other)
    assert seen == [other] and torch.get_num_threads() == before
