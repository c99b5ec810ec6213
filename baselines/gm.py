"""DC and DSA: dataset condensation by per-class gradient matching (Zhao et al., ICLR 2021; Zhao & Bilen, ICML 2021).

Follows `main.py` and `utils.py` (match_loss, distance_wb, get_loops) of VICO-UoE/DatasetCondensation:

    for it in range(Iteration):
        net = fresh randomly initialised ConvNet; SGD(net, lr_net) without momentum
        for ol in range(outer_loop):                       # outer/inner loops from get_loops(ipc)
            (BatchNorm nets only: running statistics from 16 real images per class, then frozen)
            for every class c:
                real = batch_real random real images of c; syn = the ipc synthetic images of c
                DSA only: one siamese draw, the same transform for both batches
                loss += D(grad_w CE(net(syn)), grad_w CE(net(real)))   # match_loss, 'ours' distance
            SGD(lr_img, momentum 0.5) step on the synthetic images
            if ol == outer_loop - 1: break
            inner_loop epochs of training `net` on the synthetic set (batches of batch_train, shuffled;
            DSA only: a fresh per-sample augmentation of every batch)

`dc` is main.py `--method DC` (no augmentation, `--init noise` as its default), `dsa-gm` is `--method DSA
--init real --dsa_strategy color_crop_cutout_flip_scale_rotate` (the readme's DSA command). The name is not
`dsa` because `dsa` is the standard evaluation protocol (`--protocol dsa`) and `--method dsa --protocol dsa`
would read as one thing; `-gm` says what the method matches.

Differences from the reference, none of which changes the objective: every random draw of iteration `it`
(network, real batches, DSA, inner-loop shuffles) comes from a generator keyed by (run seed, method, it), so a
resumed run reproduces an uninterrupted one; evaluation is the host protocol's job. \
CPU layout (docs/baselines.md#speed):
classes run on worker threads with one intra-op thread each, real images go through the network in chunks of
`micro_batch` whose gradients are summed, and an inner-loop step's batch is split the same way; instance norm
acts per sample, so this is main.py's computation up to float summation order (tests/test_gm.py checks it
against `reference_iteration_loss`, the plain class-by-class loop).

Two pieces are kept small and separate for reuse: `initial_images` (the `init` setting) and `match_class`
(one class's gradient-matching distance, differentiable in the synthetic images). The `dc` and `dsa-gm`
objectives (`GMObjective`, the `objectives` plugin kind: minmax-diffusion's `refine=dsa-gm`) run the same
`Step` pieces one image update per call (`GMStep`), tested equal to a run of the method.
The iteration's pieces (`Step`, `match_class`, the distance, get_loops) are gm_step.py's.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from ddbench import hookimpl
from ddbench.api import DDBenchError, MatchStep, Method, Objective, Param, RunContext, SyntheticSet
from ddbench.helpers import check_strategy, config_hash, dataset_fingerprint, generator

from .dm import class_major  # the per-class layout check DM's objective uses, naming this objective
from .warm_start import check_init, init_param, initial_set
from .gm_step import LOOPS, METRICS, Step, freeze_batchnorm, loops_for
from ._common import (DSA_STRATEGY, Resumable, check_ipc_fits, class_indices, keep_freed_memory,
                      matching_seconds, progress)

REF = "VICO-UoE/DatasetCondensation main.py"
UTILS = "VICO-UoE/DatasetCondensation utils.py"
README = "VICO-UoE/DatasetCondensation readme.md"
WARM = "PATH and run:RUN_ID are ddbench's warm starts (docs/baselines.md#warm-starts)"
LAYOUT_KEYS = ("micro_batch", "workers")  # speed only: float order, not the run




# ----------------------------------------------------------------------------------------- the method
def initial_images(ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
    """(images, labels, provenance) of the initial synthetic set for the `init` setting, class-major labels.

    `real`: ipc random real images per class, the `random` baseline's draw with the same seed; `noise`:
    standard normal pixels in the normalised space (main.py --init, torch.randn); PATH or run:RUN_ID: a stored
    set (docs/baselines.md#warm-starts), whose provenance is returned (None for real / noise).
    """
    return initial_set(ctx, "init")


def iterations_for(ctx: RunContext) -> int:
    """`iterations`, or with `image_updates` > 0 the iterations that make that many synthetic-image updates
    (an iteration makes outer_loop of them): a budget that costs about the same at every IPC's loops."""
    updates = ctx.params["image_updates"]
    if not updates:
        return ctx.params["iterations"]
    return -(-updates // loops_for(ctx)[0])


class GradientMatching(Method):
    """main.py of DC/DSA; `dsa` picks the method (DSA: siamese augmentation in matching, DSA in the inner loop)."""

    def __init__(self, name: str, dsa: bool):
        self.name = name
        self.dsa = dsa
        self.checkpoint = f"{name.replace('-', '_')}_checkpoint.pt"
        if dsa:
            self.description = ("DSA (Zhao & Bilen, ICML 2021): gradient matching with differentiable siamese "
                                "augmentation, init real")
        else:
            self.description = "DC (Zhao et al., ICLR 2021): dataset condensation by per-class gradient matching"
        method = "DSA" if dsa else "DC"
        self.params = {
            "iterations": Param(1000, f"{REF}: --Iteration 1000", "outer iterations (a fresh network each)", min=0),
            "image_updates": Param(0, f"{REF}: --Iteration fixes the iterations at every IPC; 0 = off (the CPU "
                                   "preset's budget, plugins.toml)",
                                   "if > 0, replaces iterations: ceil(image_updates / outer_loop) iterations", min=0),
            "lr_img": Param(0.1, f"{REF}: --lr_img 0.1", "SGD learning rate on the synthetic images", min=0),
            "momentum": Param(0.5, f"{REF}: torch.optim.SGD([image_syn], lr=args.lr_img, momentum=0.5)", min=0, max=1),
            "lr_net": Param(0.01, f"{REF}: --lr_net 0.01 (SGD without momentum)", "inner-loop learning rate", min=0),
            "batch_real": Param(256, f"{REF}: --batch_real 256", "real images per class per matching step", min=1),
            "batch_train": Param(256, f"{REF}: --batch_train 256", "synthetic images per inner-loop batch", min=1),
            "init": (init_param(f"{README}: DSA command `--init real`; {WARM}", "real") if dsa else
                     init_param(f"{REF}: --init default 'noise' ({README}: the DC Table 1 command sets none); {WARM}",
                                "noise")),
            "outer_loop": Param(0, f"{UTILS}: get_loops (IPC 1/10/20/30/40/50: 1/10/20/30/40/50)",
                                "matching steps per network; 0 = get_loops(ipc)", min=0),
            "inner_loop": Param(0, f"{UTILS}: get_loops (IPC 1/10/20/30/40/50: 1/50/25/20/15/10)",
                                "epochs of network training on the synthetic set between matching steps; "
                                "0 = get_loops(ipc)", min=0),
            "dis_metric": Param("ours", f"{REF}: --dis_metric ours", "gradient distance (utils.py match_loss)",
                                choices=METRICS),
            "micro_batch": Param(16, "docs/baselines.md#speed (ddbench's layout, as DM's; exact up to float order)",
                                 "images per network call on CPU; 0 = whole batches", min=0),
            "workers": Param(0, "docs/baselines.md#speed (one worker per core, one intra-op thread each)",
                             "worker threads on CPU; 0 = torch.get_num_threads()", min=0),
            "checkpoint_every": Param(10, "docs/baselines.md#dc-and-dsa-gradient-matching (ddbench's resume "
                                      "granularity, not in the paper)",
                                      "iterations between checkpoints in the run's work_dir", min=1),
        }
        if dsa:
            self.params["dsa_strategy"] = Param(
                DSA_STRATEGY, f"{README}: --dsa_strategy {DSA_STRATEGY} (FashionMNIST, CIFAR)",
                "'none' disables DSA (= dc with init real)", check=check_strategy)
        self._method = method

    def validate(self, ctx: RunContext) -> None:
        check_ipc_fits(ctx)
        check_init(ctx, "init")
        outer, inner = loops_for(ctx)
        if not outer or not inner:
            raise DDBenchError(
                f"--ipc {ctx.ipc} has no loops in get_loops of {UTILS} (defined for IPC {', '.join(map(str, LOOPS))}); "
                f"set both, e.g. --set outer_loop=10 --set inner_loop=50")

    def _fingerprint(self, ctx: RunContext, init_sha256: str | None = None) -> str:
        # layout settings change float order only; a warm start's file enters by its content, as in DM
        p = {k: v for k, v in ctx.params.items()
             if k not in ("iterations", "image_updates", "checkpoint_every") + LAYOUT_KEYS}
        warm = {"init_sha256": init_sha256} if init_sha256 else {}
        return config_hash({"method": self.name, "params": p, "loops": loops_for(ctx), "ipc": ctx.ipc,
                            "seed": ctx.seed, "model": ctx.model, "data": dataset_fingerprint(ctx.dataset), **warm})

    def distill(self, ctx: RunContext) -> SyntheticSet:
        p, ds, dev = ctx.params, ctx.dataset, ctx.device
        if torch.device(dev).type == "cpu":
            keep_freed_memory()  # docs/baselines.md#speed: no page faults on every chunk's activations
        images, labels, provenance = initial_images(ctx)
        image_syn = images.to(dev).requires_grad_(True)
        labels = labels.to(dev)
        opt = torch.optim.SGD([image_syn], lr=p["lr_img"], momentum=p["momentum"])
        iterations = iterations_for(ctx)
        if p["image_updates"]:
            ctx.log(f"{self.name}: image_updates={p['image_updates']} -> {iterations} iterations of outer_loop "
                    f"{loops_for(ctx)[0]} (iterations={p['iterations']} is not used; --set image_updates=0 to use it)")
        ckpt_path = ctx.work_dir / self.checkpoint
        ckpt = Resumable(ctx, ckpt_path, self._fingerprint(ctx, provenance and provenance["sha256"]), self.name,
                         iterations, {"images": image_syn},
                         {"optimizer": opt}, {"labels": labels.cpu()})
        start = ckpt.resume()
        losses = ckpt.losses
        step = Step(ctx, self.name, self.dsa, ds.train_x.to(dev), class_indices(ds))
        t0 = time.perf_counter()
        bar = progress(range(start, iterations), ctx, self.name, total=iterations, initial=start)
        for it in bar:
            losses.append(step.iteration(it, image_syn, labels, opt))
            if ctx.progress:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if (it + 1) % p["checkpoint_every"] == 0 or it + 1 == iterations:
                ckpt.save(it + 1)
        if start == iterations and not ckpt_path.exists():
            ckpt.save(start)  # iterations=0: still leave a checkpoint
        outer, inner = step.loops
        meta = {"method": self._method, "iterations": iterations, "init": p["init"], "outer_loop": outer,
                "inner_loop": inner, **({"init_provenance": provenance} if provenance else {}), "losses": losses,
                "final_loss": losses[-1] if losses else None,
                "resumed_from": ckpt.resumed_from, "seconds_this_session": time.perf_counter() - t0}
        return SyntheticSet(image_syn.detach().cpu(), labels.cpu().clone(), meta=meta,
                            generation_seconds=matching_seconds(meta))


# ------------------------------------------------------------------------------------------ the objectives
OBJECTIVE_KEYS = ("batch_real", "batch_train", "lr_net", "outer_loop", "inner_loop", "dis_metric", "micro_batch",
                  "workers")


def _labels_class_major(num_classes: int, ipc: int, device) -> torch.Tensor:
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


class GMStep:
    """main.py's matching bound to one set, one synthetic-image update per call (what a caller's SGD applies):
    call k is outer step k % outer_loop of network k // outer_loop. Call 0 of a network draws it fresh with the
    generator of (seed, method, network index), as `Step.iteration` does; a later call first trains it for
    inner_loop epochs on the images it is given (main.py trains on the just-updated images between outer steps),
    then matches. So calls 0, 1, 2... make exactly the draws and updates of a run of the method (tested).

    The set may come in any class order (a generated set comes in rounds): it is matched class-major and the
    gradient returned in the caller's order. Calls must come in order within a network (state: the network)."""

    def __init__(self, ctx: RunContext, name: str, dsa: bool, labels: torch.Tensor, settings: dict):
        ds = ctx.dataset
        ipc, self.order = class_major(labels, ds.num_classes, name)
        self.ctx = replace(ctx, params=dict(settings), ipc=ipc)
        check_loops(self.ctx, name)
        self.step = Step(self.ctx, name, dsa, ds.train_x.to(ctx.device), class_indices(ds))
        self.name, self.labels = name, _labels_class_major(ds.num_classes, ipc, ctx.device)
        self.net: torch.nn.Module | None = None
        self.opt_net: torch.optim.Optimizer | None = None
        self.gen: torch.Generator | None = None
        self.last = -1

    def __call__(self, it: int, images: torch.Tensor) -> tuple[float, torch.Tensor]:
        outer, inner = self.step.loops
        network, ol = divmod(it, outer)
        x = (images if self.order is None else images[self.order.to(images.device)]).detach()
        if ol == 0:
            self.gen = generator(self.ctx.seed, self.name, network)
            self.net = self.step.network(network)
            self.opt_net = torch.optim.SGD(self.net.parameters(), lr=self.ctx.params["lr_net"])  # main.py: no momentum
        else:
            if it != self.last + 1:
                raise ValueError(f"the {self.name} objective's step {it} follows step {self.last}: call it in order")
            self.step.train_network(self.net, self.opt_net, x, self.labels, inner, self.gen)
        freeze_batchnorm(self.net, self.step.train_x, self.step.idx_by_class, self.gen)
        loss, grad = self.step.match(self.net, self.step.draws(self.gen), x)
        self.last = it
        if self.order is not None:
            back = torch.empty_like(grad)
            back[self.order.to(grad.device)] = grad
            grad = back
        return float(loss), grad


def check_loops(ctx: RunContext, name: str) -> None:
    """The objective's loops resolve at this set's IPC (get_loops covers IPC 1, 10, 20...50 only)."""
    outer, inner = loops_for(ctx)
    if not outer or not inner:
        raise DDBenchError(
            f"the {name} objective has no loops for {ctx.ipc} images per class (get_loops of {UTILS} covers IPC "
            f"{', '.join(map(str, LOOPS))}); set both, e.g. refine_settings=outer_loop=10,inner_loop=50")


class GMObjective(Objective):
    """DC's / DSA's gradient matching for other methods (`ctx.registry.get("objectives", "dsa-gm")`): the same
    `Step` pieces the method runs (`GMStep`), one image update per call; its settings are the method's."""

    def __init__(self, method: GradientMatching):
        self.name, self.dsa = method.name, method.dsa
        self.description = (f"{method._method}'s per-class gradient matching: a fresh ConvNet every outer_loop "
                            "image updates, trained inner_loop epochs on the set between them")
        self.source = ("Zhao & Bilen, ICML 2021" if method.dsa else "Zhao et al., ICLR 2021") + f"; {REF}, {UTILS}"
        keys = OBJECTIVE_KEYS + (("dsa_strategy",) if method.dsa else ())
        self.params = {"lr": Param(0.1, f"{REF}: --lr_img 0.1", "SGD learning rate on the images", min=0),
                       "momentum": method.params["momentum"], **{k: method.params[k] for k in keys}}

    def validate(self, ctx: RunContext, settings: dict) -> None:
        """Loops must resolve: at the run's IPC without a budget; under --budget the IPC is known only after
        sampling, so both are asked for."""
        sub = replace(ctx, params=dict(settings))
        if ctx.budget is None:
            check_loops(sub, self.name)
        elif not settings["outer_loop"] or not settings["inner_loop"]:
            raise DDBenchError(f"the {self.name} objective under --budget needs outer_loop and inner_loop (the "
                               "set's IPC is known only after sampling; get_loops covers IPC "
                               f"{', '.join(map(str, LOOPS))}); e.g. refine_settings=outer_loop=1,inner_loop=1")

    def bind(self, ctx: RunContext, labels: torch.Tensor, settings: dict) -> MatchStep:
        return GMStep(ctx, self.name, self.dsa, labels, settings)


METHODS = (GradientMatching("dc", dsa=False), GradientMatching("dsa-gm", dsa=True))


@hookimpl
def register_methods(register):
    for method in METHODS:
        register(method)


@hookimpl
def register_objectives(register):
    for method in METHODS:
        register(GMObjective(method))  # the method's own settings (the same Param objects)
