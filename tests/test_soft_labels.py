"""The `soft` protocol: KL loss, a teacher trained once on the real data and cached with its accuracy, students
that learn the teacher's labels of augmented batches, on tiny data."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ddbench.api import DDBenchError, RunContext, SyntheticSet, resolve_params
from ddbench.default_plugins import soft_label_protocol as SL
from ddbench.host.plugins import load_plugins

from conftest import make_tiny_dataset


@pytest.fixture(scope="module")
def registry():
    return load_plugins(modules=["ddbench.default_plugins.soft_label_protocol", "ddbench.default_plugins.crossarch_models"])


@pytest.fixture
def ctx(registry, tmp_path):
    logs: list[str] = []
    c = RunContext(dataset=make_tiny_dataset(num_classes=3, per_class=20), ipc=2, seed=0, device=torch.device("cpu"),
                   params={}, model="convnet", registry=registry, work_dir=tmp_path / "work",
                   cache_dir=tmp_path / "cache", progress=False, log=logs.append)
    c.logs = logs  # type: ignore[attr-defined]
    return c


def settings(registry, **kw):
    base = {"teacher_epochs": 3, "teacher_batch": 16, "teacher_step": 2, "epochs": 4, "n_models": 2, "batch_size": 8}
    return resolve_params("protocol soft", registry.get("protocols", "soft").params, base | kw)


def random_real(ds, ipc=2):
    idx = torch.cat([ds.indices_of_class(c)[:ipc] for c in range(ds.num_classes)])
    return SyntheticSet(ds.train_x[idx].clone(), ds.train_y[idx].clone())


def test_kl_loss_matches_its_definition():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    T = 2.0
    q = F.softmax(t / T, 1)
    manual = (q * (q.log() - F.log_softmax(s / T, 1))).sum(1).mean()
    assert SL.kl_loss(s, t, T, False) == pytest.approx(float(manual), rel=1e-5)
    assert SL.kl_loss(s, t, T, True) == pytest.approx(float(manual) * T * T, rel=1e-5)
    assert SL.kl_loss(t, t, 1.0, False) == pytest.approx(0.0, abs=1e-6)
    assert SL.kl_loss(s, t, T, False) >= 0


def test_defaults_cite_their_sources(registry):
    proto = registry.get("protocols", "soft")
    assert all(p.source and "REFERENCE" not in p.source for p in proto.params.values())
    assert proto.params["epochs"].default == 300 and proto.params["temperature"].default == 1.0


def test_teacher_trained_once_cached_and_recorded(registry, ctx, one_thread):
    st = settings(registry)
    proto = registry.get("protocols", "soft")
    first = proto.evaluate(random_real(ctx.dataset), ctx, st)
    teacher = first.details["teacher"]
    assert not teacher["cached"] and 0.0 <= teacher["accuracy"] <= 100.0
    assert SL.teacher_path(ctx, st).is_file()
    assert len(first.accuracies) == 2 and all(0.0 <= a <= 100.0 for a in first.accuracies)
    assert first.details["impl"] == "soft" and len(first.details["teacher_agreement"]) == 2

    again = proto.evaluate(random_real(ctx.dataset), ctx, st)
    assert again.details["teacher"]["cached"] is True
    assert again.details["teacher"]["accuracy"] == teacher["accuracy"]
    assert again.accuracies == first.accuracies  # same seeds, same teacher: the same students
    assert any("from" in m for m in ctx.logs)


def test_teacher_cache_is_keyed_by_its_settings_and_architecture(registry, ctx):
    a = SL.teacher_path(ctx, settings(registry))
    assert SL.teacher_path(ctx, settings(registry, teacher_epochs=4)) != a
    assert SL.teacher_path(ctx, settings(registry, teacher_model="mlp")) != a
    assert SL.teacher_path(ctx, settings(registry, epochs=9, temperature=4.0)) == a  # student settings: same teacher
    other = dataclasses.replace(ctx, dataset=make_tiny_dataset(seed=1))
    assert SL.teacher_path(other, settings(registry)) != a  # other data, other teacher


def test_soft_labels_lift_random_images(registry, ctx, one_thread):
    """DD-Ranking's point, in miniature: on separable data, 2 random real images per class trained 30 epochs
    with DSA score higher when a good teacher labels each augmented batch than with their hard labels."""
    from ddbench.default_plugins.dsa_protocols import evaluate as hard_evaluate

    st = settings(registry, teacher_epochs=15, epochs=30, n_models=3, dsa=True)
    soft = registry.get("protocols", "soft").evaluate(random_real(ctx.dataset), ctx, st)
    hard_settings = resolve_params("protocol dsa", registry.get("protocols", "dsa").params,
                                   {"epochs": 30, "n_models": 3, "impl": "loop", "batch_size": 8})
    hard = hard_evaluate(random_real(ctx.dataset), ctx, hard_settings)
    assert soft.details["teacher"]["accuracy"] > 90.0
    assert soft.mean > hard.mean
    assert min(soft.details["teacher_agreement"]) > 50.0


def test_other_architectures_and_bad_teacher(registry, ctx, one_thread):
    ctx.model = "mlp"
    st = settings(registry, teacher_epochs=1, epochs=0, n_models=1)
    result = registry.get("protocols", "soft").evaluate(random_real(ctx.dataset), ctx, st)
    assert result.details["teacher"]["model"] == "mlp"
    with pytest.raises(DDBenchError, match="unknown model 'nope'; valid: .*resnet18"):
        registry.get("protocols", "soft").evaluate(random_real(ctx.dataset), ctx, settings(registry, teacher_model="nope"))


def test_unreadable_teacher_is_retrained(registry, ctx, one_thread):
    st = settings(registry, teacher_epochs=1, epochs=0, n_models=1)
    path = SL.teacher_path(ctx, st)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    result = registry.get("protocols", "soft").evaluate(random_real(ctx.dataset), ctx, st)
    assert result.details["teacher"]["cached"] is False
    assert any("unreadable" in m for m in ctx.logs)


def test_bad_settings_are_refused(registry):
    with pytest.raises(DDBenchError, match="temperature=0.0 is below the minimum"):
        settings(registry, temperature=0.0)
    with pytest.raises(DDBenchError, match="unknown setting 'temp' for protocol soft"):
        settings(registry, temp=2.0)


def test_students_in_threads_match_one_after_another(registry, ctx):
    """Each student's draws depend only on (seed, index): training them at once changes nothing but time."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        proto = registry.get("protocols", "soft")
        together = proto.evaluate(random_real(ctx.dataset), ctx, settings(registry, n_models=2, max_parallel=0))
        torch.set_num_threads(1)  # one thread per student either way: the same arithmetic, bit for bit
        serial = proto.evaluate(random_real(ctx.dataset), ctx, settings(registry, n_models=2, max_parallel=1))
    finally:
        torch.set_num_threads(before)
    assert together.details["workers"] == 2 and serial.details["workers"] == 1
    assert together.accuracies == serial.accuracies
