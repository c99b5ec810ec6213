"""minmax-diffusion under a budget on a busy machine: robust measurement, the first round always attempted,
caps, and a failed run (not bad input) when nothing fits; checks of the policy and sampler it calls."""
from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch

from ddbench.api import DDBenchError, Decision, PlanRequest, SampleRequest, SampleResult, Throughput
from ddbench_minmax.checks import BudgetNotMet, PluginOutputError, check_decision, check_samples
from ddbench_minmax.sampler import DSRSampler, _fit
from test_minmax import TINY, SlowModel, tiny_ds, tiny_arch  # noqa: F401 - tiny_arch is an autouse fixture

pytestmark = pytest.mark.usefixtures("one_thread")


def test_throughput_keeps_the_fastest_of_repeated_calls():
    # Three calls per size, one of each slowed 40x by another process: the fit sees the quiet calls.
    samples = [(4, 0.4), (8, 0.8), (4, 0.01), (8, 0.02), (4, 0.011), (8, 0.5)]
    thr = _fit(samples, 4, 8)
    assert thr.seconds(8, 1) == pytest.approx(0.02) and thr.seconds(4, 1) == pytest.approx(0.01)


def test_a_machine_slower_than_measured_still_gives_one_balanced_round():
    s = DSRSampler()
    model = SlowModel(0.001, per_image=True)
    thr = s.measure(model, 4, (1, 4, 4), 8, repeats=2)
    model.seconds = 0.02  # 20x slower than measured: one round of 4 images at 5 steps takes 0.4 s
    t0 = time.perf_counter()
    out = s.generate(model, SampleRequest(num_classes=4, steps=5, image_shape=(1, 4, 4), batch_size=8,
                                          deadline=t0 + 0.55, throughput=thr, safety=1.0))
    assert time.perf_counter() - t0 <= 0.55 + 0.05
    assert out.per_class(4) == [1, 1, 1, 1]  # the old first batch of 2 rounds (0.8 s) was abandoned: nothing


def test_ipc_and_deadline_together_cap_the_rounds():
    s = DSRSampler()
    model = SlowModel(0.0)
    thr = Throughput(a=0.0, b=1e-6, num_classes=4, batch_size=8)
    out = s.generate(model, SampleRequest(num_classes=4, steps=2, image_shape=(1, 4, 4), batch_size=8, ipc=3,
                                          deadline=time.perf_counter() + 5, throughput=thr))
    assert out.per_class(4) == [3, 3, 3, 3]


def _burn(seconds: float) -> None:
    os.sched_setaffinity(0, {0})
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_a_budget_run_beside_a_cpu_burning_process_gives_a_valid_set(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=2.0, **{**TINY, "policy": "max-images"})
    burner = multiprocessing.get_context("spawn").Process(target=_burn, args=(60.0,), daemon=True)
    burner.start()
    try:
        method.validate(ctx)
        syn = method.distill(ctx)
    finally:
        burner.terminate()
        burner.join()
    counts = syn.per_class(3)
    assert len(set(counts)) == 1 and counts[0] >= 1 and syn.ipc == counts[0]
    assert syn.generation_seconds <= 2.0 and syn.meta["budget_honoured"]


def test_a_budget_that_makes_nothing_is_a_failed_run_saying_the_slowdown(make_ctx, monkeypatch):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=2.0, **{**TINY, "policy": "max-images"})
    empty = SampleResult(torch.empty(0, 1, 12, 12), torch.empty(0, dtype=torch.long), {"slowdown_vs_measured": 12.5})
    monkeypatch.setattr(DSRSampler, "generate", lambda self, model, req: empty)
    with pytest.raises(BudgetNotMet, match=r"budget=2s gave no balanced round of 3 images .* ran 12.5x slower than "
                                           r"measured"):
        method.distill(ctx)


def test_a_budget_planning_more_than_max_ipc_is_refused_before_any_work(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=3600.0, **{**TINY, "max_ipc": 5})
    with pytest.raises(DDBenchError, match=r"budget=3600s plans \d+ images per class at S=3 .* above max_ipc=5"):
        method.validate(ctx)


def test_pilot_steps_are_checked_under_every_policy(make_ctx):
    method, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), **{**TINY, "pilot_steps": ()})
    with pytest.raises(DDBenchError, match=r"pilot_steps=\(\) is not allowed"):
        method.validate(ctx)


def _plan() -> PlanRequest:
    return PlanRequest(num_classes=3, budget=None, ipc=2, steps=3, min_steps=2, max_steps=20,
                       throughput=Throughput(0.0, 0.001, 3, 6))


@pytest.mark.parametrize("decision, message", [
    (None, "policy 'p' returned NoneType, expected ddbench.api.Decision"),
    (Decision("p", 0, "ipc", 2, ""), "policy 'p' chose steps=0; allowed: an integer in [1, 20]"),
    (Decision("p", 3, "ipc", 0, ""), "policy 'p' chose ipc=0; allowed: an integer >= 1"),
])
def test_a_broken_policy_decision_names_the_policy(decision, message):
    with pytest.raises(PluginOutputError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        check_decision(decision, "p", _plan())


def test_a_broken_sampler_result_names_the_sampler():
    x = torch.zeros(4, 1, 12, 12)
    assert check_samples(SampleResult(x[:3], torch.tensor([0, 1, 2])), "s", 3, (1, 12, 12)) == 1
    for out, message in [(None, "returned NoneType"), (SampleResult(x, torch.tensor([0, 1, 2, 2])), "unbalanced"),
                         (SampleResult(x[:, :, :8], torch.tensor([0, 1, 2, 0])), "images of shape (4, 1, 8, 12)")]:
        with pytest.raises(PluginOutputError) as info:
            check_samples(out, "s", 3, (1, 12, 12))
        assert str(info.value).startswith("sampler 's' ") and message in str(info.value)


def test_the_budget_check_takes_s_from_the_policys_contract_not_its_name():
    # check_budget tests the fewest steps the policy may sample at: `steps` where Policy.fixed_steps, else min_steps
    from types import SimpleNamespace

    from ddbench_minmax.policy import Calibrated, FixedIpc, FixedSteps, MaxImages
    from ddbench_minmax.settings import fewest_steps

    class Renamed(FixedSteps):  # a third party's fixed-S policy under another name
        name = "my-fixed"

    class DuckTyped:  # registered with decide() only: it may choose any S
        name = "fixed-steps-like"

    def fewest(policy) -> int:
        ctx = SimpleNamespace(registry=SimpleNamespace(get=lambda kind, name: policy),
                              params={"policy": policy.name, "steps": 10, "min_steps": 2})
        return fewest_steps(ctx)

    assert [fewest(p) for p in (FixedSteps(), FixedIpc(), Renamed(), MaxImages(), Calibrated(), DuckTyped())] == [
        10, 10, 10, 2, 2, 2]
