"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Follows `main_DM.py` of VICO-UoE/DatasetCondensation (the ConvNet branch, i.e. instance norm):

    for it in range(Iteration):
        net = fresh randomly initialised ConvNet, parameters frozen
        for every class c:
            real = batch_real random real images of c; syn = the ipc synthetic images of c
            one DSA draw (seeded), applied to both batches (siamese, params shared across the batch)
            loss += || mean(embed(real)) - mean(embed(syn)) ||^2
        SGD(lr_img, momentum 0.5) step on the synthetic images

Differences from the reference script, none of which changes the objective: real and synthetic batches
of all classes go through the embedder in one call (instance norm makes samples independent); every
random draw of iteration `it` comes from a generator seeded by (run seed, it), so a run interrupted
and resumed from its checkpoint gives exactly the images of an uninterrupted run; the reference
evaluates every 2000 iterations, here evaluation is the host protocol's job, after distillation.
"""
from __future__ import annotations

import time

import torch

from ddbench import hookimpl
from ddbench.api import DDBenchError, Method, Param, RunContext, SyntheticSet

from ._common import (
    DSA_STRATEGY,
    Resumable,
    check_ipc_fits,
    class_indices,
    dataset_fingerprint,
    fingerprint,
    generator,
    init_images,
    make_dsa,
    progress,
    seeded,
)

REF = "VICO-UoE/DatasetCondensation main_DM.py"
CHECKPOINT = "dm_checkpoint.pt"


class DM(Method):
    name = "dm"
    description = "Distribution Matching (Zhao & Bilen, WACV 2023): match mean ConvNet embeddings of real and synthetic images"
    params = {
        "iterations": Param(20000, f"{REF}: --Iteration 20000", "image updates", min=0),
        "lr_img": Param(1.0, f"{REF}: --lr_img 1.0", "SGD learning rate on the synthetic images", min=0),
        "momentum": Param(0.5, f"{REF}: torch.optim.SGD([image_syn], lr=args.lr_img, momentum=0.5)", min=0, max=1),
        "batch_real": Param(256, f"{REF}: --batch_real 256", "real images per class per iteration", min=1),
        "init": Param("real", f"{REF}: --init real", "initial synthetic images", choices=("real", "noise")),
        "dsa_strategy": Param(DSA_STRATEGY, f"{REF}: --dsa_strategy {DSA_STRATEGY}", "'none' disables DSA"),
        "checkpoint_every": Param(
            500, "docs/baselines.md (ddbench's resume granularity, not in the paper): iterations between checkpoints in the run's work_dir", min=1
        ),
    }

    def validate(self, ctx: RunContext) -> None:
        check_ipc_fits(ctx)
        strategy = ctx.params["dsa_strategy"]
        if strategy not in ("none", "None", ""):
            from ddbench.augment import DSA

            try:
                DSA(strategy=strategy)
            except DDBenchError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise DDBenchError(f"dsa_strategy={strategy!r} is not valid: {exc}; e.g. {DSA_STRATEGY} or none") from None

    # ----------------------------------------------------------------------------------------------

    def _fingerprint(self, ctx: RunContext) -> str:
        p = {k: v for k, v in ctx.params.items() if k not in ("iterations", "checkpoint_every")}
        return fingerprint({"method": "dm", "params": p, "ipc": ctx.ipc, "seed": ctx.seed, "model": ctx.model,
                            "data": dataset_fingerprint(ctx.dataset)})

    def distill(self, ctx: RunContext) -> SyntheticSet:
        p = ctx.params
        ds, dev = ctx.dataset, ctx.device
        n_cls = ds.num_classes
        fp = self._fingerprint(ctx)
        ckpt_path = ctx.work_dir / CHECKPOINT

        images, labels = init_images(ctx, p["init"])
        image_syn = images.to(dev).requires_grad_(True)
        opt = torch.optim.SGD([image_syn], lr=p["lr_img"], momentum=p["momentum"])
        ckpt = Resumable(ctx, ckpt_path, fp, "dm", p["iterations"], {"images": image_syn}, {"optimizer": opt},
                         {"labels": labels})
        start = ckpt.resume()
        losses, save = ckpt.losses, ckpt.save

        train_x = ds.train_x.to(dev)
        idx_by_class = [i.to(dev) for i in class_indices(ds)]
        dsa = make_dsa(p["dsa_strategy"])
        t0 = time.perf_counter()
        bar = progress(range(start, p["iterations"]), ctx, "dm", total=p["iterations"], initial=start)
        for it in bar:
            loss = _iteration_loss(ctx, it, image_syn, train_x, idx_by_class, dsa)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item() / n_cls)  # main_DM.py logs loss / num_classes
            if ctx.progress:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if (it + 1) % p["checkpoint_every"] == 0 or it + 1 == p["iterations"]:
                save(it + 1)
        if start == p["iterations"] and not ckpt_path.exists():
            save(start)  # iterations=0: still leave a checkpoint

        meta = {
            "iterations": p["iterations"],
            "init": p["init"],
            "losses": losses,
            "final_loss": losses[-1] if losses else None,
            "resumed_from": ckpt.resumed_from,
            "seconds_this_session": time.perf_counter() - t0,
        }
        return SyntheticSet(image_syn.detach().cpu(), labels.clone(), meta=meta)


def _iteration_loss(ctx: RunContext, it: int, image_syn: torch.Tensor, train_x: torch.Tensor,
                    idx_by_class: list[torch.Tensor], dsa) -> torch.Tensor:
    """One main_DM.py iteration: a fresh random embedder, then the squared distance between the mean real
    and mean synthetic embedding of every class (the same DSA parameters for both sides of a class)."""
    p, ipc, dev, n_cls = ctx.params, ctx.ipc, ctx.device, ctx.dataset.num_classes
    gen = generator(ctx.seed, "dm", it)
    with seeded(ctx.seed, "dm-net", it):
        net = ctx.build_model()  # a fresh random embedder every iteration (main_DM.py)
    net = net.to(dev).train()
    for q in net.parameters():
        q.requires_grad_(False)
    reals, syns = [], []
    for c in range(n_cls):
        idx = idx_by_class[c]
        real = train_x[idx[torch.randperm(len(idx), generator=gen)[: p["batch_real"]].to(dev)]]
        syn = image_syn[c * ipc:(c + 1) * ipc]
        if dsa is not None:  # main_DM.py: one seed per class, the same DSA parameters for real and synthetic
            params = dsa.sample(real, gen, siamese=True)
            real, syn = dsa.apply(real, params), dsa.apply(syn, params)
        reals.append(real)
        syns.append(syn)
    with torch.no_grad():
        emb_real = net.embed(torch.cat(reals))
    emb_syn = net.embed(torch.cat(syns))
    loss = emb_syn.new_zeros(())
    offset = 0
    for c in range(n_cls):
        n_real = reals[c].shape[0]
        mean_real = emb_real[offset:offset + n_real].mean(0)
        offset += n_real
        loss = loss + ((mean_real - emb_syn[c * ipc:(c + 1) * ipc].mean(0)) ** 2).sum()
    return loss


@hookimpl
def register_methods(register):
    register(DM())
