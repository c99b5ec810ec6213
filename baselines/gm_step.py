"""The pieces of one DC/DSA iteration (VICO-UoE/DatasetCondensation main.py, utils.py), shared by the `dc` and
`dsa-gm` methods and their objectives (gm.py): the gradient distance, one class's matching term, the loops of
get_loops, and `Step`, one iteration with the run's draws and CPU layout (docs/baselines.md#speed)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ddbench.api import DDBenchError, RunContext
from ddbench.helpers import generator, seeded

from ._common import make_dsa
from .workers import map_workers

# utils.py: get_loops(ipc) -> (outer_loop, inner_loop), "empirically good" values; other IPCs exit there
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}

BN_REAL_PER_CLASS = 16  # main.py: BNSizePC = 16 real images per class set BatchNorm statistics

EPS = 0.000001  # utils.py distance_wb: norm product + 0.000001

METRICS = ("ours", "mse", "cos")  # main.py --dis_metric


def layer_distance(gwr: torch.Tensor, gws: torch.Tensor) -> torch.Tensor:
    """utils.py distance_wb: sum over output units of 1 - cos(real, syn) of that unit's gradient row.

    Conv weights (out, in, h, w) and layer-norm weights (C, h, w) are flattened per output unit, linear
    weights are rows already; 1-D tensors (biases, norm affine parameters) count 0, as in the reference.
    """
    shape = gwr.shape
    if len(shape) == 1:
        return gws.new_zeros(())
    if len(shape) > 2:
        gwr, gws = gwr.reshape(shape[0], -1), gws.reshape(shape[0], -1)
    cos = (gwr * gws).sum(-1) / (gwr.norm(dim=-1) * gws.norm(dim=-1) + EPS)
    return (1 - cos).sum()


def gradient_distance(gw_syn: Sequence[torch.Tensor], gw_real: Sequence[torch.Tensor],
                      metric: str = "ours") -> torch.Tensor:
    """utils.py match_loss: 'ours' (per-layer, per-unit cosine), 'mse' or 'cos' over all gradients flattened."""
    if metric == "ours":
        return torch.stack([layer_distance(r, s) for r, s in zip(gw_real, gw_syn)]).sum()
    real = torch.cat([g.reshape(-1) for g in gw_real])
    syn = torch.cat([g.reshape(-1) for g in gw_syn])
    if metric == "mse":
        return ((syn - real) ** 2).sum()
    if metric == "cos":
        return 1 - (real * syn).sum() / (real.norm() * syn.norm() + EPS)
    raise DDBenchError(f"dis_metric={metric!r} is not allowed; choose one of {', '.join(METRICS)}")


def loss_gradients(net: torch.nn.Module, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                   micro_batch: int = 0, create_graph: bool = False,
                   denominator: int | None = None) -> list[torch.Tensor]:
    """Gradients of the mean cross-entropy over (x, y) w.r.t. `params`, summed over chunks of `micro_batch`
    (0: one chunk). `denominator` is the batch the mean is over (default len(x): a chunk of a larger batch
    passes the whole batch's size)."""
    n = denominator or len(x)
    total: list[torch.Tensor] | None = None
    for xp, yp in zip(x.split(micro_batch or len(x)), y.split(micro_batch or len(x))):
        loss = F.cross_entropy(net(xp), yp, reduction="sum") / n
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        total = list(grads) if total is None else [a + b for a, b in zip(total, grads)]
    return total


def match_class(net: torch.nn.Module, real_x: torch.Tensor, real_y: torch.Tensor, syn_x: torch.Tensor,
                syn_y: torch.Tensor, metric: str = "ours",
                augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                micro_batch: int = 0) -> torch.Tensor:
    """One class's term of main.py's loss: the distance between the network's loss gradients on real and on
    synthetic images (the real ones constant), differentiable w.r.t. `syn_x`.

    `augment`, if given, is applied to both batches (DSA: one siamese draw, the same transform for both).
    """
    params = [q for q in net.parameters() if q.requires_grad]
    if augment is not None:
        real_x, syn_x = augment(real_x), augment(syn_x)
    gw_real = [g.detach() for g in loss_gradients(net, params, real_x, real_y, micro_batch)]
    gw_syn = loss_gradients(net, params, syn_x, syn_y, micro_batch, create_graph=True)
    return gradient_distance(gw_syn, gw_real, metric)


def loops_for(ctx: RunContext) -> tuple[int, int]:
    """(outer_loop, inner_loop): the settings if non-zero, else utils.py get_loops(ipc)."""
    p = ctx.params
    outer, inner = LOOPS.get(ctx.ipc, (0, 0))
    return p["outer_loop"] or outer, p["inner_loop"] or inner


class Step:
    """One main.py iteration (a fresh network, its outer and inner loops), with the run's draws and layout."""

    def __init__(self, ctx: RunContext, name: str, dsa: bool, train_x: torch.Tensor, idx_by_class: list[torch.Tensor]):
        p = ctx.params
        self.ctx, self.name, self.train_x, self.idx_by_class = ctx, name, train_x, idx_by_class
        self.dsa = make_dsa(p.get("dsa_strategy", "none")) if dsa else None
        self.loops = loops_for(ctx)
        cpu = torch.device(ctx.device).type == "cpu"
        self.micro_batch = p["micro_batch"] if cpu else 0  # whole batches on an accelerator
        self.workers = (p["workers"] or torch.get_num_threads()) if cpu else 1

    def network(self, it: int) -> torch.nn.Module:
        with seeded(self.ctx.seed, f"{self.name}-net", it):
            net = self.ctx.build_model()  # a fresh random network every iteration (main.py get_network)
        return net.to(self.ctx.device).train()

    def iteration(self, it: int, image_syn: torch.Tensor, labels: torch.Tensor,
                  opt_img: torch.optim.Optimizer) -> float:
        """Runs iteration `it` (updating `image_syn` through `opt_img`); main.py's logged loss: the matching
        loss summed over classes and outer loops, divided by num_classes * outer_loop."""
        p = self.ctx.params
        gen = generator(self.ctx.seed, self.name, it)
        net = self.network(it)
        opt_net = torch.optim.SGD(net.parameters(), lr=p["lr_net"])  # main.py: no momentum
        outer, inner = self.loops
        total = 0.0
        for ol in range(outer):
            freeze_batchnorm(net, self.train_x, self.idx_by_class, gen)
            draws = self.draws(gen)
            loss, grad = self.match(net, draws, image_syn)
            opt_img.zero_grad()
            image_syn.grad = grad
            opt_img.step()
            total += float(loss)
            if ol == outer - 1:
                break
            self.train_network(net, opt_net, image_syn.detach(), labels, inner, gen)
        return total / (len(self.idx_by_class) * outer)

    def draws(self, gen: torch.Generator) -> list[tuple[torch.Tensor, object]]:
        """Per class: its real-image indices (main.py get_images: a random batch_real of the class) and its
        siamese DSA draw (None for DC)."""
        out = []
        for idx in self.idx_by_class:
            pick = idx[torch.randperm(len(idx), generator=gen)[: self.ctx.params["batch_real"]]]
            params = self.dsa.sample(self.train_x[:1], gen, siamese=True) if self.dsa is not None else None
            out.append((pick, params))
        return out

    def match(self, net, draws, image_syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss summed over classes, its gradient w.r.t. the synthetic images); classes on worker threads.
        A class's term depends on its own synthetic images only, so per-class gradients concatenate."""
        ipc, dev = self.ctx.ipc, image_syn.device
        syn = image_syn.detach()
        metric = self.ctx.params["dis_metric"]

        def one(c: int) -> tuple[torch.Tensor, torch.Tensor]:
            pick, params = draws[c]
            leaf = syn[c * ipc:(c + 1) * ipc].clone().requires_grad_(True)
            real = self.train_x[pick.to(dev)]
            augment = (lambda x: self.dsa.apply(x, params)) if params is not None else None
            y_real = torch.full((len(real),), c, dtype=torch.long, device=dev)
            y_syn = torch.full((ipc,), c, dtype=torch.long, device=dev)
            loss = match_class(net, real, y_real, leaf, y_syn, metric, augment, self.micro_batch)
            grad, = torch.autograd.grad(loss, leaf)
            return loss.detach(), grad

        results = map_workers(one, list(range(len(draws))), self.workers)
        return torch.stack([r[0] for r in results]).sum(), torch.cat([r[1] for r in results])

    def train_network(self, net, opt_net, images: torch.Tensor, labels: torch.Tensor, epochs: int,
                      gen: torch.Generator) -> None:
        """main.py's inner loop: `epochs` epochs of utils.py epoch('train', ...) on the synthetic set,
        shuffled batches of batch_train, DSA (per sample, not siamese) on every batch for DSA."""
        net.train()
        params = list(net.parameters())
        for _ in range(epochs):
            for batch in torch.randperm(len(images), generator=gen).split(self.ctx.params["batch_train"]):
                x, y = images[batch.to(images.device)], labels[batch.to(labels.device)]
                if self.dsa is not None:
                    x = self.dsa.apply(x, self.dsa.sample(x, gen))
                grads = self.batch_gradients(net, params, x, y)
                for q, g in zip(params, grads):
                    q.grad = g
                opt_net.step()

    def batch_gradients(self, net, params, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Gradients of the batch's mean loss; on CPU its micro-batches are shared among the workers."""
        mb = self.micro_batch
        chunks = list(zip(x.split(mb or len(x)), y.split(mb or len(x))))
        n_workers = min(self.workers, len(chunks))
        if n_workers <= 1:
            return loss_gradients(net, params, x, y, mb)
        groups = [chunks[w::n_workers] for w in range(n_workers)]

        def one(group):
            total = None
            for xp, yp in group:
                g = loss_gradients(net, params, xp, yp, 0, denominator=len(x))
                total = g if total is None else [a + b for a, b in zip(total, g)]
            return total

        parts = map_workers(one, groups, n_workers)
        return [sum(gs) for gs in zip(*parts)]


def freeze_batchnorm(net: torch.nn.Module, train_x: torch.Tensor, idx_by_class: list[torch.Tensor],
                     gen: torch.Generator) -> None:
    """main.py: a network with BatchNorm gets its running statistics from BNSizePC (16) real images per class
    in train mode, then every BatchNorm layer is put in eval mode for the matching. Nothing for other nets
    (the ConvNet's instance norm has no statistics), and no draw is made then."""
    bns = [m for m in net.modules() if "BatchNorm" in m._get_name()]
    if not bns:
        return
    picks = [idx[torch.randperm(len(idx), generator=gen)[:BN_REAL_PER_CLASS]] for idx in idx_by_class]
    net.train()
    with torch.no_grad():
        net(train_x[torch.cat(picks).to(train_x.device)])
    for m in bns:
        m.eval()


def reference_iteration_loss(ctx: RunContext, name: str, dsa: bool, it: int, image_syn: torch.Tensor,
                             train_x: torch.Tensor, idx_by_class: list[torch.Tensor]) -> torch.Tensor:
    """main.py's first matching step of iteration `it` written plainly (class by class, whole batches, one
    autograd graph through every class, the reference's match_loss loop): what tests compare `Step.match` with."""
    step = Step(ctx, name, dsa, train_x, idx_by_class)
    gen = generator(ctx.seed, name, it)
    net = step.network(it)
    freeze_batchnorm(net, train_x, idx_by_class, gen)
    draws = step.draws(gen)
    params = list(net.parameters())
    ipc = ctx.ipc
    loss = image_syn.new_zeros(())
    for c, (pick, dp) in enumerate(draws):
        real, syn = train_x[pick], image_syn[c * ipc:(c + 1) * ipc]
        if dp is not None:
            real, syn = step.dsa.apply(real, dp), step.dsa.apply(syn, dp)
        lab_real = torch.full((len(real),), c, dtype=torch.long)
        gw_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), lab_real), params)]
        gw_syn = torch.autograd.grad(F.cross_entropy(net(syn), torch.full((ipc,), c, dtype=torch.long)), params,
                                     create_graph=True)
        for gr, gs in zip(gw_real, gw_syn):
            loss = loss + layer_distance(gr, gs)
    return loss
