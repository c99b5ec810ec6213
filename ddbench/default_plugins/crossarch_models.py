"""Cross-architecture evaluation networks (the `architectures` plugin): MLP, LeNet, AlexNet, VGG-11, ResNet-18.

Each follows `networks.py` of the DC/DSA/DM reference code (VICO-UoE/DatasetCondensation), layer for layer,
so that a distilled set evaluated here on e.g. AlexNet means what it means in DC-BENCH
(justincui03/dc_benchmark) and DD-Ranking (NUS-HPC-AI-Lab/DD-Ranking), which use the same definitions:

- `mlp`: 2 hidden layers of 128, ReLU (`MLP`).
- `lenet`: conv5(6) - maxpool - conv5(16) - maxpool - fc 120 - fc 84 - fc (`LeNet`); the first conv pads by 2
  for 1-channel inputs (28 -> 28), by 0 otherwise (32 -> 28), as the reference.
- `alexnet`: the reference's small-image AlexNet, conv5(128) - conv5(192) - conv3(256, 192, 192), three
  max-pools, one linear layer (`AlexNet`); first conv padding 4 for 1 channel (28 -> 32), 2 otherwise.
- `vgg11` (instance norm, the reference's default `VGG11`) and `vgg11-bn` (`VGG11BN`): 3x3 convs
  64-M-128-M-256-256-M-512-512-M-512-512-M, each conv followed by its norm and ReLU; first conv padding 3 for
  1 channel (28 -> 32).
- `resnet18` (batch norm, the reference's `ResNet18BN`, DD-Ranking's ResNet-18-BN), `resnet18-in` (instance
  norm, `ResNet18`), `resnet18-ap` (`ResNet18_AP`: instance norm, strided convs replaced by a stride-1 conv and
  2x2 average pooling) and `resnet18bn-ap` (`ResNet18BN_AP`).

- ConvNet variants of `utils.py: get_network` (the DC-BENCH axes): `convnet-w32/-w64/-w256`, `convnet-d1/-d2`
  (the host's ConvNet, so the fast evaluation stacks them), and `convnet-bn/-ln/-gn/-nn` (norm), `convnet-as`
  (sigmoid), `convnet-al` (leaky ReLU), `convnet-mp` (max pooling), `convnet-np` (no pooling), whose depth
  follows the host's `convnet` (3 up to 32 px, 4 at 64 px).

"Instance norm" is `GroupNorm(C, C, affine=True)`, exactly as the reference writes it (and as the host's
ConvNet does).

What the reference hard-codes and we compute: its classifiers assume 28x28x1 or 32x32x3 inputs (MLP input
784 or 3072, LeNet 16*5*5, AlexNet 192*4*4, ResNet-AP 512*3*3 or 512*4*4, ResNet/VGG 512). Here every
classifier takes the flattened size of the features for the actual input, which is the same number at the
reference's two shapes and lets the same layers run on 64 px (Tiny-ImageNet) and 3-channel 28 px inputs. An
input too small for an architecture's pooling (e.g. VGG-11's five max-pools on a 3-channel 28 px image,
which has no padding to 32 px) is refused by `build` with a `DDBenchError` that says why, before anything runs.

Every module has `embed(x)`: the flattened features the classifier reads (for MLP and LeNet, the last hidden
layer's activations), which is what embedding-matching methods such as DM use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import hookimpl
from ..api import DDBenchError, ModelSpec

REF = "VICO-UoE/DatasetCondensation networks.py"
UTILS = "VICO-UoE/DatasetCondensation utils.py get_network"


def instance_norm(channels: int) -> nn.Module:
    """networks.py: `nn.GroupNorm(C, C, affine=True)` is the reference's 'instancenorm'."""
    return nn.GroupNorm(channels, channels, affine=True)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return instance_norm(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise DDBenchError(f"norm {kind!r} is not known; allowed: instance, batch")


class _Features(nn.Module):
    """A feature extractor plus a linear classifier sized from a probe of the actual input shape."""

    features: nn.Module
    classifier: nn.Module

    def _probe(self, name: str, channels: int, image_size: int, needs: str) -> int:
        """Flattened feature size for a (channels, image_size, image_size) input; DDBenchError if none."""
        was_training = self.training
        self.eval()  # batch norm on one probe image must not update running statistics
        try:
            with torch.no_grad():
                out = self.features(torch.zeros(1, channels, image_size, image_size))
        except (RuntimeError, ValueError):  # a pool past 1 px, or a norm over a single value
            out = None
        finally:
            self.train(was_training)
        if out is None or out.numel() == 0:
            raise DDBenchError(
                f"model {name!r} cannot take {channels}-channel {image_size} px images: {needs}"
            )
        return int(out.numel())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# --------------------------------------------------------------------------------------------------
# MLP, LeNet, AlexNet
# --------------------------------------------------------------------------------------------------


class MLP(_Features):
    """networks.py MLP: flatten - fc 128 - ReLU - fc 128 - ReLU - fc classes."""

    def __init__(self, channels: int, num_classes: int, image_size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * image_size * image_size, 128), nn.ReLU(inplace=True),
            nn.Linear(128, 128), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(128, num_classes)


class LeNet(_Features):
    """networks.py LeNet: conv5(6) ReLU maxpool, conv5(16) ReLU maxpool, fc 120, fc 84, fc classes."""

    def __init__(self, channels: int, num_classes: int, image_size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=2 if channels == 1 else 0), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Flatten(),
        )
        n = self._probe("lenet", channels, image_size, "two 5x5 convs and two 2x2 max-pools need >= 16 px "
                                                         "(>= 12 px with 1 channel, which is padded by 2)")
        self.features.extend([nn.Linear(n, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True)])
        self.classifier = nn.Linear(84, num_classes)


class AlexNet(_Features):
    """networks.py AlexNet (small-image variant): five convs, three 2x2 max-pools, one linear layer."""

    def __init__(self, channels: int, num_classes: int, image_size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, kernel_size=5, stride=1, padding=4 if channels == 1 else 2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
        )
        n = self._probe("alexnet", channels, image_size, "three 2x2 max-pools need >= 8 px")
        self.classifier = nn.Linear(n, num_classes)


# --------------------------------------------------------------------------------------------------
# VGG-11
# --------------------------------------------------------------------------------------------------

VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")  # networks.py cfg_vgg['VGG11']


class VGG11(_Features):
    """networks.py VGG('VGG11'): conv3-norm-ReLU blocks with five 2x2 max-pools, then a linear layer."""

    def __init__(self, channels: int, num_classes: int, image_size: int, norm: str = "instance"):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = channels
        for i, item in enumerate(VGG11_CFG):
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, item, kernel_size=3, padding=3 if channels == 1 and i == 0 else 1),
                           make_norm(norm, item), nn.ReLU(inplace=True)]
                in_ch = item
        # the reference's trailing AvgPool2d(kernel_size=1, stride=1) is the identity and is left out
        self.features = nn.Sequential(*layers)
        n = self._probe("vgg11" if norm == "instance" else "vgg11-bn", channels, image_size,
                        "five 2x2 max-pools need >= 32 px (a 1-channel 28 px image is padded to 32 by the first conv, "
                        "a 3-channel one is not)")
        self.classifier = nn.Linear(n, num_classes)


# --------------------------------------------------------------------------------------------------
# ResNet-18 and ResNet-18-AP
# --------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """networks.py BasicBlock / BasicBlock_AP. `ap`: stride-1 conv then 2x2 average pooling instead of a
    strided conv, and a shortcut of conv1x1 - avgpool - norm."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, ap: bool):
        super().__init__()
        self.stride, self.ap = stride, ap
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=1 if ap else stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if ap:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=1, bias=False),
                                              nn.AvgPool2d(2, 2), make_norm(norm, planes))
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                              make_norm(norm, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.ap and self.stride != 1:
            out = F.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _Stem(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = make_norm(norm, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))


class _AvgPool4(nn.Module):
    """networks.py ResNet.forward: `F.avg_pool2d(out, 4)` (the 4x4 map of 28/32 px inputs -> 1x1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4)


class ResNet18(_Features):
    """networks.py ResNet(BasicBlock, [2, 2, 2, 2]) and ResNet_AP: widths 64-128-256-512, a linear classifier."""

    def __init__(self, channels: int, num_classes: int, image_size: int, norm: str = "batch", ap: bool = False,
                 name: str = "resnet18"):
        super().__init__()
        blocks: list[nn.Module] = [_Stem(channels, norm)]
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for s in (stride, 1):
                blocks.append(BasicBlock(in_planes, planes, s, norm, ap))
                in_planes = planes
        if not ap:
            blocks.append(_AvgPool4())  # ResNet_AP's avg_pool2d(kernel_size=1) is the identity: nothing to add
        self.features = nn.Sequential(*blocks)
        needs = ("three 2x2 average pools need >= 8 px" if ap else
                 "three stride-2 stages and the final 4x4 average pool need >= 25 px")
        n = self._probe(name, channels, image_size, needs)
        self.classifier = nn.Linear(n, num_classes)


# --------------------------------------------------------------------------------------------------
# ConvNet variants (DC-BENCH's width / depth / norm / activation / pooling axes)
# --------------------------------------------------------------------------------------------------


def conv_norm(kind: str, width: int, side: int) -> nn.Module | None:
    """networks.py ConvNet._get_normlayer: layernorm over (C, H, W); groupnorm with 4 groups; none."""
    if kind == "instance":
        return instance_norm(width)
    if kind == "batch":
        return nn.BatchNorm2d(width)
    if kind == "layer":
        return nn.LayerNorm([width, side, side], elementwise_affine=True)
    if kind == "group":
        return nn.GroupNorm(4, width, affine=True)
    if kind == "none":
        return None
    raise DDBenchError(f"norm {kind!r} is not known; allowed: instance, batch, layer, group, none")


ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "sigmoid": nn.Sigmoid,
               "leakyrelu": lambda: nn.LeakyReLU(negative_slope=0.01)}
POOLS = {"avg": lambda: nn.AvgPool2d(2, 2), "max": lambda: nn.MaxPool2d(2, 2), "none": None}


class ConvNetVariant(_Features):
    """networks.py ConvNet with another norm, activation or pooling (get_network's ConvNetBN, ConvNetAS, ...):
    [conv3x3 - norm - act - pool] x depth - linear; first conv padding 3 for 1 channel (28 -> 32 px).

    Kept apart from the host's `ddbench.default_plugins.convnet_models.ConvNet` (instance norm, ReLU, average
    pooling), which the fast evaluation stacks; these train with the protocols' loop."""

    def __init__(self, channels: int, num_classes: int, image_size: int, depth: int, width: int = 128,
                 norm: str = "instance", act: str = "relu", pool: str = "avg", name: str = "convnet"):
        super().__init__()
        layers: list[nn.Module] = []
        side = image_size + 2 * (3 if channels == 1 else 1) - 2  # the first 3x3 conv's output side
        in_ch = channels
        for d in range(depth):
            layers.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=3 if channels == 1 and d == 0 else 1))
            if side < 1:
                break
            norm_layer = conv_norm(norm, width, side)
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(ACTIVATIONS[act]())
            if POOLS[pool] is not None:
                layers.append(POOLS[pool]())
                side //= 2
            in_ch = width
        self.features = nn.Sequential(*layers)
        n = self._probe(name, channels, image_size, f"{depth} 2x2 poolings need >= {2 ** depth} px")
        self.classifier = nn.Linear(n, num_classes)


def _variant(name: str, **kw):
    """A ConvNetVariant builder; depth as the host's `convnet` (3 up to 32 px, 4 at 64 px) unless given."""

    def build(c: int, k: int, s: int) -> nn.Module:
        from .convnet_models import depth_for

        return ConvNetVariant(c, k, s, depth=depth_for(s), name=name, **kw)

    return build


def _host_convnet(width: int | None = None, depth: int | None = None):
    """Width/depth variants are the host's ConvNet itself, so the fast evaluation stacks them too."""

    def build(c: int, k: int, s: int) -> nn.Module:
        from .convnet_models import DEFAULT_WIDTH, ConvNet, depth_for

        return ConvNet(c, k, s, width=width or DEFAULT_WIDTH, depth=depth or depth_for(s))

    return build


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """One registered architecture: its name, how to build it, and where it comes from."""

    name: str
    make: Callable[[int, int, int], nn.Module]
    source: str
    description: str

    def build(self, channels: int, num_classes: int, image_size: int) -> nn.Module:
        if channels < 1 or num_classes < 1 or image_size < 1:
            raise DDBenchError(f"model {self.name!r}: channels={channels}, classes={num_classes}, "
                               f"image size={image_size}; all must be >= 1")
        return self.make(channels, num_classes, image_size)

    def spec(self) -> ModelSpec:
        return ModelSpec(self.name, self.build, f"{self.description} ({self.source})")


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("mlp", MLP, f"{REF}: MLP", "MLP, 2 hidden layers of 128, ReLU"),
    Architecture("lenet", LeNet, f"{REF}: LeNet", "LeNet-5: conv5(6), conv5(16), max-pools, fc 120-84"),
    Architecture("alexnet", AlexNet, f"{REF}: AlexNet",
                 "AlexNet for small images: 5 convs (128-192-256-192-192), 3 max-pools"),
    Architecture("vgg11", VGG11, f"{REF}: VGG11", "VGG-11 with instance norm"),
    Architecture("vgg11-bn", lambda c, k, s: VGG11(c, k, s, norm="batch"), f"{REF}: VGG11BN", "VGG-11 with batch norm"),
    Architecture("resnet18", lambda c, k, s: ResNet18(c, k, s, "batch", False, "resnet18"), f"{REF}: ResNet18BN",
                 "ResNet-18 with batch norm"),
    Architecture("resnet18-in", lambda c, k, s: ResNet18(c, k, s, "instance", False, "resnet18-in"), f"{REF}: ResNet18",
                 "ResNet-18 with instance norm"),
    Architecture("resnet18-ap", lambda c, k, s: ResNet18(c, k, s, "instance", True, "resnet18-ap"),
                 f"{REF}: ResNet18_AP", "ResNet-18-AP: instance norm, average pooling instead of strided convs"),
    Architecture("resnet18bn-ap", lambda c, k, s: ResNet18(c, k, s, "batch", True, "resnet18bn-ap"),
                 f"{REF}: ResNet18BN_AP", "ResNet-18-AP with batch norm"),
    # ConvNet variants: VICO-UoE/DatasetCondensation utils.py get_network (ConvNetW32 ... ConvNetNP)
    Architecture("convnet-w32", _host_convnet(width=32), f"{UTILS}: ConvNetW32", "ConvNet, width 32"),
    Architecture("convnet-w64", _host_convnet(width=64), f"{UTILS}: ConvNetW64", "ConvNet, width 64"),
    Architecture("convnet-w256", _host_convnet(width=256), f"{UTILS}: ConvNetW256", "ConvNet, width 256"),
    Architecture("convnet-d1", _host_convnet(depth=1), f"{UTILS}: ConvNetD1", "ConvNet, depth 1"),
    Architecture("convnet-d2", _host_convnet(depth=2), f"{UTILS}: ConvNetD2", "ConvNet, depth 2"),
    Architecture("convnet-bn", _variant("convnet-bn", norm="batch"), f"{UTILS}: ConvNetBN", "ConvNet, batch norm"),
    Architecture("convnet-ln", _variant("convnet-ln", norm="layer"), f"{UTILS}: ConvNetLN", "ConvNet, layer norm"),
    Architecture("convnet-gn", _variant("convnet-gn", norm="group"), f"{UTILS}: ConvNetGN",
                 "ConvNet, group norm (4 groups)"),
    Architecture("convnet-nn", _variant("convnet-nn", norm="none"), f"{UTILS}: ConvNetNN", "ConvNet, no norm"),
    Architecture("convnet-as", _variant("convnet-as", act="sigmoid"), f"{UTILS}: ConvNetAS",
                 "ConvNet, sigmoid activations"),
    Architecture("convnet-al", _variant("convnet-al", act="leakyrelu"), f"{UTILS}: ConvNetAL",
                 "ConvNet, leaky ReLU (0.01)"),
    Architecture("convnet-mp", _variant("convnet-mp", pool="max"), f"{UTILS}: ConvNetMP", "ConvNet, max pooling"),
    Architecture("convnet-np", _variant("convnet-np", pool="none"), f"{UTILS}: ConvNetNP", "ConvNet, no pooling"),
)


@hookimpl
def register_models(register):
    for arch in ARCHITECTURES:
        register(arch.spec())


__all__ = ["ARCHITECTURES", "Architecture", "MLP", "LeNet", "AlexNet", "VGG11", "ResNet18",
           "BasicBlock", "ConvNetVariant"]
