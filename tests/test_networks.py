"""ConvNet shapes, registration, and the stacked (fast-evaluation) form."""
import pytest
import torch

from ddbench.api import DDBenchError
from ddbench.default_plugins.convnet_models import ConvNet, StackedConvNet, build_convnet, feature_size


@pytest.mark.parametrize("c,size,depth,side", [(1, 28, 3, 4), (3, 32, 3, 4), (3, 64, 4, 4)])
def test_feature_map_is_128x4x4(c, size, depth, side):
    assert feature_size(c, size, depth) == side
    net = build_convnet(c, 10, size)
    assert net.depth == depth
    x = torch.randn(2, c, size, size)
    assert net.embed(x).shape == (2, 128 * side * side)
    assert net(x).shape == (2, 10)


def test_reference_layers():
    net = ConvNet(1, 10, 28)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.features if isinstance(m, torch.nn.GroupNorm)]
    assert [c.padding for c in convs] == [(3, 3), (1, 1), (1, 1)]
    assert all(n.num_groups == n.num_channels == 128 and n.affine for n in norms)
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in net.features) == 3


def test_registered(registry):
    assert {"convnet", "convnet-d3", "convnet-d4"} <= set(registry.names("models"))
    assert registry.get("models", "convnet-d4").build(3, 200, 64).depth == 4


def test_too_small_image_is_refused():
    with pytest.raises(DDBenchError, match="too small"):
        ConvNet(3, 10, 4, depth=4)


def test_stacked_matches_separate_networks():
    torch.manual_seed(0)
    nets = [ConvNet(1, 5, 28) for _ in range(3)]
    stacked = StackedConvNet.from_nets(nets)
    xs = torch.randn(3, 4, 1, 28, 28)
    out = stacked(xs.transpose(0, 1).reshape(4, 3, 28, 28))
    shared = stacked.forward_shared(xs[0])
    for i, net in enumerate(nets):
        torch.testing.assert_close(out[i], net(xs[i]), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(shared[i], net(xs[0]), atol=1e-4, rtol=1e-4)
    copies = stacked.to_nets([ConvNet(1, 5, 28) for _ in range(3)])
    for a, b in zip(nets, copies):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 7, 9), (1, 1, 2, 2), (2, 4, 5, 4)])
def test_avg_pool_2x2_is_avg_pool2d(shape):
    """The ConvNet's pooling equals nn.AvgPool2d(2, 2) (values and input gradients), odd sizes included."""
    from ddbench.default_plugins.convnet_models import avg_pool_2x2

    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = avg_pool_2x2(x), torch.nn.functional.avg_pool2d(x2, 2)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(x.grad, x2.grad)
