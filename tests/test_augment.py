"""DSA: reference semantics of each op, seeding, siamese sharing, gradients."""
import math

import pytest
import torch

from ddbench.api import DDBenchError
from ddbench.host.augment import DEFAULT_PARAMS, DSA, DSAParams


def x_batch(n=4, c=3, s=16, seed=0):
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed))


def only(op, **kw):
    return DSA(op, **kw)


def test_reference_values():
    assert DEFAULT_PARAMS == {"aug_mode": "S", "prob_flip": 0.5, "ratio_scale": 1.2, "ratio_rotate": 15.0,
                              "ratio_crop_pad": 0.125, "ratio_cutout": 0.5, "brightness": 1.0,
                              "saturation": 2.0, "contrast": 0.5}
    assert DSA().groups == ["color", "crop", "cutout", "flip", "scale", "rotate"]


def test_seed_reproducible_and_shape_kept():
    x = x_batch()
    a = DSA()(x, torch.Generator().manual_seed(3))
    b = DSA()(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)


def test_mode_s_picks_one_group_each_call():
    dsa, g, x = DSA(), torch.Generator().manual_seed(0), x_batch()
    ops = {dsa.sample(x, g).op for _ in range(200)}
    assert ops == set(dsa.groups)
    assert DSA(aug_mode="M").sample(x, g).op == "+".join(dsa.groups)


def test_siamese_same_params_same_output():
    dsa = DSA()
    x = x_batch()
    for seed in range(6):
        p = dsa.sample(x, torch.Generator().manual_seed(seed))
        assert torch.equal(dsa.apply(x, p), dsa.apply(x.clone(), p))
        shared = dsa.sample(x, torch.Generator().manual_seed(seed), siamese=True)
        assert shared.batch == 1
        y = dsa.apply(x[:1].expand(5, -1, -1, -1), shared)  # identical images, shared params -> identical outputs
        assert torch.allclose(y, y[:1].expand_as(y))
        assert dsa.apply(x_batch(7), p.first()).shape == (7, 3, 16, 16)


def test_wrong_batch_refused():
    dsa = DSA()
    p = dsa.sample(x_batch(4), torch.Generator().manual_seed(0))
    with pytest.raises(DDBenchError, match="batch of 4"):
        dsa.apply(x_batch(3), p)


def test_gradient_flows_through_every_op():
    for op in ["color", "crop", "cutout", "flip", "scale", "rotate"]:
        x = x_batch().requires_grad_(True)
        only(op)(x, torch.Generator().manual_seed(1)).square().sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, op


def test_flip_flips_with_prob():
    x = x_batch(64)
    p = only("flip").sample(x, torch.Generator().manual_seed(0))
    y = only("flip").apply(x, p)
    f = p.ops[0][1]["flip"]
    assert torch.equal(y[f], x[f].flip(3)) and torch.equal(y[~f], x[~f])
    assert 10 < int(f.sum()) < 54


def test_crop_shifts_with_zero_fill_within_range():
    s = 16
    x = x_batch(32, s=s) + 10.0  # no zeros in the input
    dsa = only("crop")
    p = dsa.sample(x, torch.Generator().manual_seed(0))
    y = dsa.apply(x, p)
    shift = round(0.125 * s)
    tx, ty = p.ops[0][1]["tx"], p.ops[0][1]["ty"]
    assert int(tx.abs().max()) <= shift and int(ty.abs().max()) <= shift and int(tx.abs().max()) == shift
    for i in range(32):
        a, b = int(tx[i]), int(ty[i])
        expected = torch.zeros_like(x[i])
        src = x[i][:, max(a, 0):s + min(a, 0), max(b, 0):s + min(b, 0)]
        expected[:, max(-a, 0):max(-a, 0) + src.shape[1], max(-b, 0):max(-b, 0) + src.shape[2]] = src
        assert torch.equal(y[i], expected)


def test_cutout_zeros_a_square_of_half_size():
    s = 16
    x = x_batch(16, s=s) + 10.0
    dsa = only("cutout")
    p = dsa.sample(x, torch.Generator().manual_seed(0))
    y = dsa.apply(x, p)
    side = round(0.5 * s)
    for i in range(16):
        zero = (y[i, 0] == 0)
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        ox, oy = int(p.ops[0][1]["ox"][i]), int(p.ops[0][1]["oy"][i])
        assert rows.tolist() == [r for r in range(ox - side // 2, ox - side // 2 + side) if 0 <= r < s]
        assert cols.tolist() == [c for c in range(oy - side // 2, oy - side // 2 + side) if 0 <= c < s]
        assert int(zero.sum()) == len(rows) * len(cols)
        assert torch.equal(y[i][:, ~zero], x[i][:, ~zero])


def test_color_formulas():
    x = x_batch(8)
    dsa = only("color")
    p = dsa.sample(x, torch.Generator().manual_seed(0))
    v = p.ops[0][1]
    col = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
    e = x + (col(v["brightness"]) - 0.5) * 1.0
    m = e.mean(1, keepdim=True)
    e = (e - m) * (col(v["saturation"]) * 2.0) + m
    m = e.mean([1, 2, 3], keepdim=True)
    e = (e - m) * (col(v["contrast"]) + 0.5) + m
    torch.testing.assert_close(dsa.apply(x, p), e)


def test_scale_and_rotate_ranges_and_identity():
    x = x_batch(256)
    g = torch.Generator().manual_seed(0)
    s = only("scale").sample(x, g).ops[0][1]
    assert 1 / 1.2 <= float(s["sx"].min()) and float(s["sy"].max()) <= 1.2
    r = only("rotate").sample(x, g).ops[0][1]["theta"]
    assert float(r.abs().max()) <= 15 / 180 * math.pi and float(r.abs().max()) > 14 / 180 * math.pi
    ident = DSAParams([("scale", {"sx": torch.ones(1), "sy": torch.ones(1)})], 1)
    torch.testing.assert_close(only("scale").apply(x, ident), x, atol=1e-5, rtol=0)
    ident = DSAParams([("rotate", {"theta": torch.zeros(1)})], 1)
    torch.testing.assert_close(only("rotate").apply(x, ident), x, atol=1e-5, rtol=0)


def test_apply_stacked_equals_one_by_one():
    dsa = DSA()
    xs = torch.randn(6, 4, 1, 12, 12)
    g = torch.Generator().manual_seed(0)
    params = [dsa.sample(xs[i], g) for i in range(6)]
    out = dsa.apply_stacked(xs, params)
    for i in range(6):
        torch.testing.assert_close(out[i], dsa.apply(xs[i], params[i]))


def test_bad_strategy_and_params():
    with pytest.raises(DDBenchError, match="unknown DSA augmentation 'blur'"):
        DSA("color_blur")
    with pytest.raises(DDBenchError, match="unknown DSA parameter"):
        DSA(prob_flop=0.3)
    x = x_batch()
    assert torch.equal(DSA("none")(x), x)
