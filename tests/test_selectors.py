"""Selectors (ddbench.api.Selector, ddbench/default_plugins/selectors.py) and the pool helper
(ddbench/host/features.py), on tiny synthetic features."""
from __future__ import annotations

import pytest
import torch

from ddbench.api import DDBenchError, RunContext, Selector
from ddbench.host.features import embedder, features, select_pool

from conftest import make_tiny_dataset

BUILT_IN = ("random", "herding", "k-center", "k-means", "confidence")


def pool(n_per_class=(12, 9, 15), dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    feats = torch.randn(len(labels), dim, generator=g) + 3.0 * labels[:, None].float()
    logits = torch.randn(len(labels), len(n_per_class), generator=g)
    return feats, labels[torch.randperm(len(labels), generator=g)], logits


def covering_radius(x: torch.Tensor, picks: torch.Tensor) -> float:
    return float(torch.cdist(x, x[picks]).min(dim=1).values.max())


def test_the_built_ins_are_registered_and_cite_a_source(registry):
    assert set(BUILT_IN) <= set(registry.names("selectors"))
    for name in BUILT_IN:
        assert registry.get("selectors", name).source, name


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_selector_picks_k_distinct_items_of_each_class_deterministically(registry, name):
    sel = registry.get("selectors", name)
    feats, labels, logits = pool()
    a = sel.select(feats, labels, 3, seed=5, logits=logits)
    b = sel.select(feats, labels, 3, seed=5, logits=logits)
    assert torch.equal(a, b)
    assert len(set(a.tolist())) == 9
    assert labels[a].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # class-major, ascending class


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_selector_refuses_k_larger_than_a_class_pool(registry, name):
    feats, labels, logits = pool()
    with pytest.raises(DDBenchError) as err:
        registry.get("selectors", name).select(feats, labels, 10, seed=0, logits=logits)
    msg = str(err.value)
    assert "\n" not in msg and "k=10" in msg and "9 items of class 1" in msg and "k <= 9" in msg


def test_a_class_pick_does_not_depend_on_the_other_classes(registry):
    feats, labels, _ = pool()
    sel = registry.get("selectors", "k-center")
    whole = sel.select(feats, labels, 4, seed=1)
    only = (labels == 2).nonzero(as_tuple=True)[0]
    alone = only[sel.select(feats[only], labels[only], 4, seed=1)]
    assert torch.equal(whole[labels[whole] == 2], alone)


def test_random_and_k_center_change_with_the_seed(registry):
    feats, labels, _ = pool(n_per_class=(40, 40))
    for name in ("random", "k-center"):
        sel = registry.get("selectors", name)
        assert not torch.equal(sel.select(feats, labels, 3, seed=0), sel.select(feats, labels, 3, seed=1)), name


def test_herding_first_pick_is_the_item_nearest_the_class_mean(registry):
    feats, labels, _ = pool()
    picks = registry.get("selectors", "herding").select(feats, labels, 2, seed=0)
    for c in range(3):
        idx = (labels == c).nonzero(as_tuple=True)[0]
        nearest = idx[(feats[idx] - feats[idx].mean(0)).norm(dim=1).argmin()]
        assert int(picks[labels[picks] == c][0]) == int(nearest)


def test_herding_keeps_the_running_mean_closer_than_random_picks(registry):
    feats, labels, _ = pool(n_per_class=(200,), dim=8)
    mu = feats.mean(0)
    herd = registry.get("selectors", "herding").select(feats, labels, 10, seed=0)
    rand = registry.get("selectors", "random").select(feats, labels, 10, seed=0)
    assert (feats[herd].mean(0) - mu).norm() < 0.5 * (feats[rand].mean(0) - mu).norm()


def test_k_center_covering_radius_never_grows_with_k(registry):
    feats, labels, _ = pool(n_per_class=(60,), dim=3)
    sel = registry.get("selectors", "k-center")
    radii = [covering_radius(feats, sel.select(feats, labels, k, seed=3)) for k in range(1, 25)]
    assert all(b <= a for a, b in zip(radii, radii[1:])) and radii[-1] < radii[0]
    random_radius = covering_radius(feats, registry.get("selectors", "random").select(feats, labels, 10, seed=3))
    assert radii[9] < random_radius


def test_k_means_returns_k_distinct_items_even_with_duplicate_points(registry):
    feats = torch.cat([torch.zeros(6, 2), torch.ones(6, 2)])  # two points, six copies each
    labels = torch.zeros(12, dtype=torch.long)
    picks = registry.get("selectors", "k-means").select(feats, labels, 5, seed=0)
    assert len(set(picks.tolist())) == 5


def test_k_means_picks_one_item_per_well_separated_cluster(registry):
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    feats = (centers[:, None, :] + torch.randn(3, 30, 2, generator=g)).reshape(-1, 2)
    picks = registry.get("selectors", "k-means").select(feats, torch.zeros(90, dtype=torch.long), 3, seed=0)
    assert sorted((picks // 30).tolist()) == [0, 1, 2]


def test_confidence_puts_correct_confident_items_first(registry):
    labels = torch.zeros(4, dtype=torch.long)
    logits = torch.tensor([[1.0, 0.0], [0.0, 9.0], [5.0, 0.0], [3.0, 0.0]])  # item 1 is confident but wrong
    picks = registry.get("selectors", "confidence").select(torch.zeros(4, 1), labels, 4, seed=0, logits=logits)
    assert picks.tolist() == [2, 3, 0, 1]


def test_confidence_without_logits_is_refused(registry):
    with pytest.raises(DDBenchError, match="logits"):
        registry.get("selectors", "confidence").select(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), 1, 0)


@pytest.mark.parametrize("bad, match", [(0, "k=0"), (2.5, "k=2.5"), (True, "k=True")])
def test_bad_k_is_refused_in_one_line(registry, bad, match):
    feats, labels, _ = pool()
    with pytest.raises(DDBenchError, match=match):
        registry.get("selectors", "random").select(feats, labels, bad, 0)


def test_a_selector_breaking_its_contract_is_named():
    class Repeats(Selector):
        name = "repeats"

        def select_class(self, features, k, generator, label, logits=None):
            return torch.zeros(k, dtype=torch.long)

    feats, labels, _ = pool()
    with pytest.raises(RuntimeError, match="selector 'repeats' returned"):
        Repeats().select(feats, labels, 2, 0)


# ---- feature spaces and the pool helper -----------------------------------------------------------------------


def _ctx(registry, tmp_path, seed=0) -> RunContext:
    return RunContext(dataset=make_tiny_dataset(per_class=12), ipc=2, seed=seed, device=torch.device("cpu"), params={},
                      model="convnet", registry=registry, work_dir=tmp_path, cache_dir=tmp_path / "cache",
                      progress=False, log=lambda msg: None)


def test_feature_spaces_shapes_and_the_random_convnet_follows_the_seed(registry, tmp_path, one_thread):
    ctx = _ctx(registry, tmp_path)
    x = ctx.dataset.train_x[:5]
    assert features(ctx, x, "pixels").shape == (5, 28 * 28)
    a = features(ctx, x, "random-convnet")
    assert a.dtype == torch.float64 and a.shape[0] == 5
    assert torch.equal(a, features(ctx, x, "random-convnet"))
    assert not torch.equal(a, features(_ctx(registry, tmp_path, seed=1), x, "random-convnet"))
    with pytest.raises(DDBenchError, match="space='nope' is not allowed"):
        features(ctx, x, "nope")


def test_the_classifier_space_trains_once_and_caches(registry, tmp_path, one_thread):
    ctx = _ctx(registry, tmp_path)
    f = features(ctx, ctx.dataset.train_x[:4], "classifier")
    cached = list((tmp_path / "cache" / "reference-classifier").glob("tiny-*.pt"))
    assert f.shape[0] == 4 and len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    assert torch.equal(f, features(ctx, ctx.dataset.train_x[:4], "classifier"))
    assert cached[0].stat().st_mtime_ns == mtime


def test_select_pool_picks_per_class_in_the_named_space(registry, tmp_path, one_thread):
    ctx = _ctx(registry, tmp_path)
    ds = ctx.dataset
    idx = select_pool(ctx, ds.train_x, ds.train_y, 3, "herding", "pixels")
    assert ds.train_y[idx].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(idx, registry.get("selectors", "herding").select(
        embedder("pixels", ds, registry, tmp_path)(ds.train_x), ds.train_y, 3, 0))
    conf = select_pool(ctx, ds.train_x, ds.train_y, 2, "confidence", "pixels")  # logits of the reference classifier
    assert ds.train_y[conf].tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DDBenchError, match="k=13 is larger than the 12 items"):
        select_pool(ctx, ds.train_x, ds.train_y, 13, "k-means", "classifier")
    with pytest.raises(DDBenchError, match="unknown selector 'nope'"):
        select_pool(ctx, ds.train_x, ds.train_y, 1, "nope", "pixels")


def test_training_features_are_cached_and_a_hit_selects_as_a_miss(registry, tmp_path, one_thread):
    from ddbench.host.features import training_features

    ctx = _ctx(registry, tmp_path)
    first = training_features(ctx, "random-convnet")
    files = list((tmp_path / "cache" / "features").glob("tiny-random-convnet-*.pt"))
    assert len(files) == 1 and first.shape[0] == len(ctx.dataset.train_x)
    assert torch.equal(first, training_features(ctx, "random-convnet"))
    training_features(_ctx(registry, tmp_path, seed=1), "random-convnet")  # other weights, another entry
    assert len(list((tmp_path / "cache" / "features").glob("tiny-random-convnet-*.pt"))) == 2


def test_k_means_with_one_item_per_class_picks_herding_s_image(registry):
    feats, labels, _ = pool(n_per_class=(30, 25), dim=6)
    for seed in (0, 1):
        kmeans = registry.get("selectors", "k-means").select(feats, labels, 1, seed)
        assert torch.equal(kmeans, registry.get("selectors", "herding").select(feats, labels, 1, seed))
