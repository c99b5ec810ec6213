"""MTT's expert buffer (GeorgeCazenavette/mtt-distillation buffer.py): expert trajectories trained on the real
set, cached on disk one file per expert, validated before use (mtt.py's docstring says how and why)."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

from ddbench.api import DDBenchError, RunContext
from ddbench.helpers import atomic_save, atomic_write_json, config_hash, dataset_fingerprint, generator, seeded

from ._common import class_indices, make_dsa, progress, try_load
from .workers import map_workers


BUFFER_FORMAT = 1

_INIT_LOCK = threading.Lock()

# settings that define the expert buffer (part of its cache key)
EXPERT_KEYS = ("train_epochs", "expert_lr", "expert_batch", "expert_momentum", "expert_l2",
               "expert_images_per_class", "dsa_strategy", "zca", "zca_eps")


class ExpertBuffer:
    """Expert trajectories cached on disk: `<cache>/mtt_buffers/<dataset>-<model>-<key>/expert_0007.pt`.

    Each file holds {"key", "index", "trajectory": float32 (train_epochs + 1, P), "sha256"} and is written
    atomically when its expert finishes; `manifest.json` records the settings for humans.
    """

    def __init__(self, ctx: RunContext, data=None):
        """ctx: the run's context (real dataset); data: what experts train on (the ZCA-whitened set, if zca)."""
        self.ctx = ctx
        self.data = data if data is not None else ctx.dataset
        p = ctx.params
        ds = ctx.dataset
        self.settings = {
            "format": BUFFER_FORMAT,
            "dataset": ds.name,
            "data": dataset_fingerprint(ds),
            "model": ctx.model,
            "seed": ctx.seed,
            **{k: p[k] for k in EXPERT_KEYS},
        }
        if not p["zca"]:
            self.settings["zca_eps"] = None
        self.key = config_hash(self.settings)
        base = ds.name + ("+zca" if p["zca"] else "")
        self.dir = Path(ctx.cache_dir) / "mtt_buffers" / f"{base}-{ctx.model}-{self.key}".replace("/", "_")
        self.epochs = p["train_epochs"]
        self._num_params: int | None = None
        self._cache: dict[int, torch.Tensor] = {}

    def path(self, i: int) -> Path:
        return self.dir / f"expert_{i:04d}.pt"

    def num_params(self) -> int:
        if self._num_params is None:
            with seeded(0):
                net = self.ctx.build_model()
            self._num_params = sum(q.numel() for q in net.parameters())
        return self._num_params

    def layout(self, net: torch.nn.Module):
        names = [n for n, _ in net.named_parameters()]
        shapes = [q.shape for _, q in net.named_parameters()]
        sizes = [q.numel() for _, q in net.named_parameters()]
        if sum(sizes) != self.num_params():
            raise DDBenchError(f"model {self.ctx.model!r} has {sum(sizes)} parameters, the buffer {self.num_params()}")
        return names, shapes, sizes

    def check(self, i: int) -> str | None:
        """None if expert i is present and valid, else why not."""
        path = self.path(i)
        state, why = try_load(path, mmap=True)  # memory-mapped: a large buffer need not fit in RAM
        if state is None:
            return f"expert {i}: {path} {why}"
        want = (self.epochs + 1, self.num_params())
        if not isinstance(state, dict) or state.get("key") != self.key or state.get("index") != i:
            return f"expert {i}: {path} was written for other settings"
        traj = state.get("trajectory")
        if not isinstance(traj, torch.Tensor) or tuple(traj.shape) != want:
            got = tuple(traj.shape) if isinstance(traj, torch.Tensor) else type(traj).__name__
            return f"expert {i}: {path} has shape {got}, expected {want}"
        if not torch.isfinite(traj).all():
            return f"expert {i}: {path} holds non-finite parameters"
        if _digest(traj) != state.get("sha256"):
            return f"expert {i}: {path} fails its checksum"
        self._cache[i] = traj
        return None

    def problems(self, indices) -> list[str]:
        return [why for i in indices if (why := self.check(i)) is not None]

    def ensure(self, n: int) -> None:
        """Make experts 0..n-1 available: validate what is there, train what is missing or invalid."""
        todo = []
        for i in range(n):
            why = self.check(i)
            if why is not None:
                if self.path(i).exists():
                    if self.ctx.params["buffer"] == "require":
                        raise DDBenchError(f"buffer=require: {why}; use buffer=auto to rebuild it")
                    self.ctx.log(f"mtt: {why}; retraining it")
                elif self.ctx.params["buffer"] == "require":
                    raise DDBenchError(f"buffer=require: {why}; use buffer=auto to build it")
                todo.append(i)
        if not todo:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            atomic_write_json({**self.settings, "num_params": self.num_params()}, manifest, indent=1)
        self.ctx.log(f"mtt: training {len(todo)} expert(s) into {self.dir}")
        real_x, real_y = self._expert_data()
        bar = progress(todo, self.ctx, "mtt experts")

        threads = torch.get_num_threads()
        at_once = min(len(todo), self.ctx.params["workers"] or threads)
        # several experts: one per worker thread; one expert (or fewer experts than cores): its batches'
        # chunks are split over the worker threads instead (docs/baselines.md#speed)
        inner = 1 if at_once > 1 else self.ctx.params["workers"]

        def build(i: int) -> None:
            traj = self._train_expert(i, real_x, real_y, inner)
            atomic_save({"key": self.key, "index": i, "trajectory": traj, "sha256": _digest(traj)}, self.path(i))
            self._cache[i] = traj
            bar.update(1)

        map_workers(build, todo, self.ctx.params["workers"], self.ctx.device)
        bar.close()

    def pair(self, i: int, a: int, b: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        traj = self._cache.get(i)
        if traj is None:
            why = self.check(i)
            if why is not None:
                raise DDBenchError(f"expert buffer changed during the run: {why}")
            traj = self._cache[i]
        return traj[a].to(device), traj[b].to(device)

    def _expert_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.data
        k = self.ctx.params["expert_images_per_class"]
        if not k:
            return ds.train_x, ds.train_y
        g = generator(self.ctx.seed, "mtt-expert-subset")
        pick = torch.cat([idx[torch.randperm(len(idx), generator=g)[:k]] for idx in class_indices(ds)])
        return ds.train_x[pick], ds.train_y[pick]

    def _train_expert(self, i: int, real_x: torch.Tensor, real_y: torch.Tensor, workers: int = 1) -> torch.Tensor:
        """buffer.py: SGD(lr_teacher, momentum mom, weight_decay l2), DSA on every batch, params every epoch.

        Each batch's forward/backward runs in chunks of `micro_batch` images whose gradients are summed
        before the one optimizer step (docs/evaluation.md: instance norm and DSA act per sample, so the
        step is the same up to float summation order, and small chunks stay in cache). With `workers` > 1
        (CPU) the chunks of each batch are shared among that many threads of one intra-op thread each."""
        ctx, p, dev = self.ctx, self.ctx.params, self.ctx.device
        with _INIT_LOCK, seeded(ctx.seed, "mtt-expert", i):  # seeds torch's global RNG: one thread at a time
            net = ctx.build_model()
        net = net.to(dev).train()
        opt = torch.optim.SGD(net.parameters(), lr=p["expert_lr"], momentum=p["expert_momentum"],
                              weight_decay=p["expert_l2"])
        dsa = make_dsa(p["dsa_strategy"])
        gen = generator(ctx.seed, "mtt-expert-data", i)
        x_all, y_all = real_x.to(dev), real_y.to(dev)
        snaps = [_flat(net)]
        n = len(y_all)
        for e in progress(range(p["train_epochs"]), ctx, f"expert {i}"):
            correct, total = 0, 0
            for ind in torch.randperm(n, generator=gen).to(dev).split(p["expert_batch"]):
                x, y = x_all[ind], y_all[ind]
                if dsa is not None:
                    x = dsa(x, gen)
                opt.zero_grad()
                correct += _accumulate_grads(net, x, y, p["micro_batch"], workers)
                opt.step()
                total += len(y)
            snaps.append(_flat(net))
            ctx.log(f"mtt: expert {i} epoch {e + 1}/{p['train_epochs']} train acc {correct / total:.3f}")
        return torch.stack(snaps)


def _accumulate_grads(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, micro_batch: int,
                      workers: int = 1) -> int:
    """Gradients of the batch's mean cross-entropy, chunk by chunk, into the parameters' .grad; the number
    correct. With several workers each takes a contiguous share of the chunks (the module is only read:
    its gradients come back through autograd.grad and are summed here)."""
    chunks = list(zip(x.split(micro_batch or len(y)), y.split(micro_batch or len(y))))
    n = len(y)
    params = list(net.parameters())
    share = -(-len(chunks) // max(1, min(workers or torch.get_num_threads(), len(chunks))))
    groups = [chunks[k:k + share] for k in range(0, len(chunks), share)]

    def run(group):
        grads, correct = None, 0
        for xc, yc in group:
            out = net(xc)
            g = torch.autograd.grad(F.cross_entropy(out, yc, reduction="sum") / n, params)
            grads = list(g) if grads is None else [a + b for a, b in zip(grads, g)]
            correct += int((out.argmax(1) == yc).sum())
        return grads, correct

    results = map_workers(run, groups, len(groups), x.device)
    for k, q in enumerate(params):
        total = results[0][0][k]
        for grads, _ in results[1:]:
            total = total + grads[k]
        q.grad = total
    return sum(c for _, c in results)


def _flat(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([q.detach().reshape(-1) for q in net.parameters()]).float().cpu()


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()
