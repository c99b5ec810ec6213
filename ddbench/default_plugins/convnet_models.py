"""Network architectures (the `networks` plugin): the ConvNet family of the dataset-distillation literature.

`ConvNet` follows `networks.py: ConvNet` and `utils.py: get_default_convnet_setting` of the DC/DSA/DM
reference code (VICO-UoE/DatasetCondensation): width 128, ReLU, instance norm implemented as
`GroupNorm(128, 128, affine=True)`, 2x2 average pooling after every conv, 3x3 convs with padding 1 (the first
conv of a 1-channel network uses padding 3, so 28x28 inputs become 32x32 and the features are 128x4x4), and
a linear classifier on the flattened features. Depth 3 for 28-32 px images, depth 4 (`ConvNetD4`) for 64 px.

Registered architectures: `convnet` (depth chosen from the image size), `convnet-d3`, `convnet-d4`.

`StackedConvNet` holds N ConvNets of the same shape as one module (grouped convolutions, batched matmul) so
that the fast evaluation trains them together; `StackedConvNet.from_nets` / `to_nets` copy weights exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import hookimpl
from ..api import DDBenchError, ModelSpec

# utils.py: get_default_convnet_setting -> net_width 128, net_depth 3, relu, instancenorm, avgpooling.
DEFAULT_WIDTH = 128
DEFAULT_DEPTH = 3


def first_padding(channels: int) -> int:
    """networks.py: ConvNet._make_layers uses padding 3 for the first conv when channel == 1 (28 -> 32 px)."""
    return 3 if channels == 1 else 1


def feature_size(channels: int, image_size: int, depth: int) -> int:
    """Spatial side of the feature map after `depth` conv + 2x2 pool blocks."""
    side = image_size + 2 * first_padding(channels) - 2  # first 3x3 conv; later ones (padding 1) keep the size
    for _ in range(depth):
        side //= 2  # 2x2 average pooling
    return side


class ConvNet(nn.Module):
    """ConvNet-D{depth} of DC/DSA/DM: [conv3x3 -> instance norm -> ReLU -> avgpool2] x depth -> linear."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = DEFAULT_WIDTH,
                 depth: int = DEFAULT_DEPTH):
        super().__init__()
        if depth < 1 or width < 1:
            raise DDBenchError(f"ConvNet depth={depth} width={width}: both must be >= 1")
        side = feature_size(channels, image_size, depth)
        if side < 1:
            raise DDBenchError(f"image size {image_size} is too small for a depth-{depth} ConvNet; allowed: "
                               f">= {2 ** depth} px")
        layers: list[nn.Module] = []
        in_ch = channels
        for d in range(depth):
            layers += [
                nn.Conv2d(in_ch, width, kernel_size=3, padding=first_padding(channels) if d == 0 else 1),
                nn.GroupNorm(width, width, affine=True),  # 'instancenorm' in the reference code
                nn.ReLU(inplace=True),
                AvgPool2x2(),
            ]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * side * side, num_classes)
        self.channels, self.num_classes, self.image_size = channels, num_classes, image_size
        self.width, self.depth = width, depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (what DM matches)."""
        out = self.features(x)
        return out.reshape(out.size(0), -1)


def avg_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling, stride 2 (an odd last row or column is dropped, as `F.avg_pool2d(x, 2)` does), as
    the mean of the four strided quarter views. The same values up to float summation order (2e-7 in fp32), and
    faster on a CPU than `avg_pool2d`'s kernel at these sizes, forward and backward: a 16-image ConvNet training
    step took 12-13 % less time in fp32 and bf16 (docs/evaluation.md#precision)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    return (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) * 0.25


class AvgPool2x2(nn.AvgPool2d):
    """The reference's nn.AvgPool2d(kernel_size=2, stride=2), computed by `avg_pool_2x2`."""

    def __init__(self):
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool_2x2(x)


def depth_for(image_size: int) -> int:
    """Depth 3 up to 32 px (DC/DSA/DM), depth 4 for 64 px (Tiny-ImageNet, `ConvNetD4` in DM/MTT)."""
    return 3 if image_size <= 32 else 4


def build_convnet(channels: int, num_classes: int, image_size: int) -> ConvNet:
    return ConvNet(channels, num_classes, image_size, depth=depth_for(image_size))


def build_convnet_d3(channels: int, num_classes: int, image_size: int) -> ConvNet:
    return ConvNet(channels, num_classes, image_size, depth=3)


def build_convnet_d4(channels: int, num_classes: int, image_size: int) -> ConvNet:
    return ConvNet(channels, num_classes, image_size, depth=4)


@hookimpl
def register_models(register):
    register(ModelSpec("convnet", build_convnet,
                       "ConvNet of DC/DSA/DM: width 128, instance norm, depth 3 (<=32 px) or 4 (64 px)"))
    register(ModelSpec("convnet-d3", build_convnet_d3, "ConvNet, depth 3 (ConvNetD3)"))
    register(ModelSpec("convnet-d4", build_convnet_d4, "ConvNet, depth 4 (ConvNetD4)"))


# --------------------------------------------------------------------------------------------------
# N ConvNets as one module (fast evaluation)
# --------------------------------------------------------------------------------------------------


class StackedConvNet(nn.Module):
    """N ConvNets of one shape, computed together.

    Training input is (B, N*C, H, W): network n sees channels [n*C, (n+1)*C). Convolutions are grouped
    (groups=N), the instance norm is GroupNorm(N*width, N*width) (still one group per channel, so exactly
    the per-network norm), and the classifier is a batched matmul. Output (N, B, classes). Parameters are
    stored stacked along the output-channel axis, so an element-wise optimizer (SGD with momentum and
    weight decay) on them is exactly N independent optimizers.

    `forward_shared(x)` takes one (B, C, H, W) batch that every network sees (test inference): its first
    conv is an ordinary conv with N*width outputs, which avoids copying the input N times.
    """

    def __init__(self, n: int, channels: int, num_classes: int, image_size: int, width: int, depth: int):
        super().__init__()
        self.n, self.channels, self.num_classes, self.width, self.depth = n, channels, num_classes, width, depth
        self.pad0 = first_padding(channels)
        self.side = feature_size(channels, image_size, depth)
        nw = n * width
        self.conv_w = nn.ParameterList()
        self.conv_b = nn.ParameterList()
        self.norm_w = nn.ParameterList()
        self.norm_b = nn.ParameterList()
        in_ch = channels
        for _ in range(depth):
            self.conv_w.append(nn.Parameter(torch.empty(nw, in_ch, 3, 3)))
            self.conv_b.append(nn.Parameter(torch.empty(nw)))
            self.norm_w.append(nn.Parameter(torch.empty(nw)))
            self.norm_b.append(nn.Parameter(torch.empty(nw)))
            in_ch = width
        feat = width * self.side * self.side
        self.fc_w = nn.Parameter(torch.empty(n, num_classes, feat))
        self.fc_b = nn.Parameter(torch.empty(n, num_classes))

    @classmethod
    def from_nets(cls, nets: list[ConvNet]) -> "StackedConvNet":
        first = nets[0]
        for net in nets:
            if not isinstance(net, ConvNet) or (
                net.channels, net.num_classes, net.image_size, net.width, net.depth
            ) != (
                first.channels, first.num_classes, first.image_size, first.width, first.depth
            ):
                raise DDBenchError("StackedConvNet needs ConvNets of one shape")
        out = cls(len(nets), first.channels, first.num_classes, first.image_size, first.width, first.depth)
        out.to(next(first.parameters()).device)
        with torch.no_grad():
            for d in range(first.depth):
                out.conv_w[d].copy_(torch.cat([n.features[4 * d].weight for n in nets]))
                out.conv_b[d].copy_(torch.cat([n.features[4 * d].bias for n in nets]))
                out.norm_w[d].copy_(torch.cat([n.features[4 * d + 1].weight for n in nets]))
                out.norm_b[d].copy_(torch.cat([n.features[4 * d + 1].bias for n in nets]))
            out.fc_w.copy_(torch.stack([n.classifier.weight for n in nets]))
            out.fc_b.copy_(torch.stack([n.classifier.bias for n in nets]))
        return out

    def to_nets(self, nets: list[ConvNet]) -> list[ConvNet]:
        """Copy the stacked weights back into N ConvNets of the same shape."""
        w = self.width
        with torch.no_grad():
            for i, net in enumerate(nets):
                sl = slice(i * w, (i + 1) * w)
                for d in range(self.depth):
                    net.features[4 * d].weight.copy_(self.conv_w[d][sl])
                    net.features[4 * d].bias.copy_(self.conv_b[d][sl])
                    net.features[4 * d + 1].weight.copy_(self.norm_w[d][sl])
                    net.features[4 * d + 1].bias.copy_(self.norm_b[d][sl])
                net.classifier.weight.copy_(self.fc_w[i])
                net.classifier.bias.copy_(self.fc_b[i])
        return nets

    def _blocks(self, h: torch.Tensor, first_groups: int) -> torch.Tensor:
        nw = self.n * self.width
        for d in range(self.depth):
            h = F.conv2d(h, self.conv_w[d], self.conv_b[d], padding=self.pad0 if d == 0 else 1,
                         groups=first_groups if d == 0 else self.n)
            h = F.group_norm(h, nw, self.norm_w[d], self.norm_b[d])
            h = F.relu(h)
            h = avg_pool_2x2(h)
        return h

    def _classify(self, h: torch.Tensor) -> torch.Tensor:
        b = h.shape[0]
        # (B, N*W, s, s) -> (N, B, W*s*s), the per-network flattening order of ConvNet.embed
        feat = h.reshape(b, self.n, -1).transpose(0, 1)
        return torch.baddbmm(self.fc_b.unsqueeze(1), feat, self.fc_w.transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N*C, H, W), network n's batch in channels [n*C, (n+1)*C) -> logits (N, B, classes)."""
        return self._classify(self._blocks(x, self.n))

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) seen by every network -> logits (N, B, classes)."""
        w0 = self.conv_w[0]
        # One ordinary conv with N*width outputs = every network's first conv on the same input.
        h = F.conv2d(x, w0, self.conv_b[0], padding=self.pad0)
        nw = self.n * self.width
        h = avg_pool_2x2(F.relu(F.group_norm(h, nw, self.norm_w[0], self.norm_b[0])))
        for d in range(1, self.depth):
            h = F.conv2d(h, self.conv_w[d], self.conv_b[d], padding=1, groups=self.n)
            h = avg_pool_2x2(F.relu(F.group_norm(h, nw, self.norm_w[d], self.norm_b[d])))
        return self._classify(h)
