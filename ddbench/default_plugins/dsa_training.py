"""Training pieces of the `dsa` and `fast` protocols (dsa_protocols.py): the arithmetic of the forward passes, the
reference's lr schedule, and the stacked implementation's training and test passes (N ConvNets as one
`StackedConvNet`, each with its own batches and DSA draws from its own generator, as the loop makes them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..api import RunContext
from ..helpers import DSAParams
from .convnet_models import StackedConvNet


def autocast(precision: str, device):
    """The forward passes' arithmetic: bf16 autocast (convolutions and linear layers cast their inputs to bf16, so
    the norm, ReLU and pooling after them run on bf16 activations; parameters and their gradients stay fp32, and
    the loss is taken on fp32 logits), or plain fp32."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lr_decay_epoch(epochs: int) -> int:
    """utils.py evaluate_synset: lr_schedule = [Epoch//2 + 1]."""
    return epochs // 2 + 1


def stacked_batch(images, labels, idx, dsa, gens) -> tuple[torch.Tensor, torch.Tensor]:
    """Network n's batch images[idx[n]] with its own DSA draw; returns (B, N*C, H, W) and labels (N, B)."""
    xs = images[idx]  # (N, B, C, H, W)
    if dsa is not None:
        params: list[DSAParams] = [dsa.sample(xs[n], generator=g) for n, g in enumerate(gens)]
        xs = dsa.apply_stacked(xs, params)
    n, b, c, h, w = xs.shape
    return xs.transpose(0, 1).reshape(b, n * c, h, w), labels[idx]


def stacked_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over networks of each network's mean cross-entropy: network n's gradient is that of its own loss."""
    n, b = out.shape[:2]
    return F.cross_entropy(out.reshape(n * b, -1), y.reshape(n * b, *y.shape[2:]), reduction="sum") / b


def train_stacked(stacked: StackedConvNet, gens, images, labels, dsa, settings, lr, bar=None) -> list[float]:
    """The loop's training, for the N stacked networks at once (same draws from each network's generator)."""
    epochs, bs = settings["epochs"], settings["batch_size"]
    mom, wd = settings["momentum"], settings["weight_decay"]
    n_img, n_net = images.shape[0], stacked.n
    # SGD is element-wise, so one optimizer over the stacked parameters is N independent optimizers.
    optimizer = torch.optim.SGD(stacked.parameters(), lr=lr, momentum=mom, weight_decay=wd)
    stacked.train()
    correct = torch.zeros(n_net, dtype=torch.long, device=images.device)
    for ep in range(epochs + 1):
        perms = torch.stack([torch.randperm(n_img, generator=g) for g in gens]).to(images.device)
        for start in range(0, n_img, bs):
            idx = perms[:, start:start + bs]
            x, y = stacked_batch(images, labels, idx, dsa, gens)
            with autocast(settings.get("precision", "fp32"), images.device):
                out = stacked(x).float()  # (N, B, K)
            loss = stacked_loss(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ep == epochs:
                target = y if y.ndim == 2 else y.argmax(-1)
                correct += (out.argmax(-1) == target).sum(1)
        if ep == lr_decay_epoch(epochs):
            lr *= 0.1
            optimizer = torch.optim.SGD(stacked.parameters(), lr=lr, momentum=mom, weight_decay=wd)
        if bar is not None:
            bar.update(n_net)
    return [100.0 * int(c) / n_img for c in correct]


@torch.inference_mode()
def test_accuracy_stacked(stacked: StackedConvNet, ctx: RunContext, batch: int, precision: str = "fp32") -> list[float]:
    stacked.eval()
    x_all, y_all = ctx.dataset.test_x, ctx.dataset.test_y
    correct = torch.zeros(stacked.n, dtype=torch.long)
    for s in range(0, x_all.shape[0], batch):
        x = x_all[s:s + batch].to(ctx.device, torch.float32)
        y = y_all[s:s + batch].to(ctx.device)
        with autocast(precision, ctx.device):
            out = stacked.forward_shared(x)
        correct += (out.argmax(-1) == y).sum(1).cpu()
    return [100.0 * int(c) / x_all.shape[0] for c in correct]
