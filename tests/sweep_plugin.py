"""A plugin for the sweep tests (compare, report, launchers, SLURM): a tiny dataset, a cheap protocol, a
method that always fails. Loaded by module path from a temporary plugins.toml, in the test process and in
`ddbench compare` subprocesses and SLURM jobs alike (the tests put this folder on PYTHONPATH).
"""
from __future__ import annotations

import time

import torch

from ddbench import hookimpl
from ddbench.api import EPOCHS, NETWORKS, DatasetSpec, EvalResult, ImageDataset, Launcher, Method, Param, Protocol


def tiny_dataset(num_classes: int = 3, per_class: int = 12, size: int = 8, test_per_class: int = 10) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(num_classes, 1, size, size, generator=g)

    def draw(n):
        y = torch.arange(num_classes).repeat_interleave(n)
        return protos[y] + 1.5 * torch.randn(len(y), 1, size, size, generator=g), y

    tx, ty = draw(per_class)
    vx, vy = draw(test_per_class)
    return ImageDataset("tiny", tx, ty, vx, vy, num_classes, [f"c{i}" for i in range(num_classes)], (0.0,), (1.0,))


class TinyEval(Protocol):
    """Nearest class mean of the synthetic set on the real test set, plus a seeded per-network jitter."""

    name = "tiny-eval"
    description = "test protocol: nearest class mean, n_models jittered copies"
    params = {
        "n_models": Param(2, min=1, role=NETWORKS),
        "epochs": Param(1, min=1, role=EPOCHS),
        "sleep": Param(0.0, min=0.0, help="seconds to sleep per evaluation (to kill a sweep halfway)"),
        "fail_ipc": Param(0, help="raise at this IPC (a failed cell)"),
    }

    def evaluate(self, syn, ctx, settings):
        t0 = time.perf_counter()
        (ctx.work_dir / "evaluating").touch()  # tests wait for this before signalling a SLURM job
        if settings["sleep"]:
            time.sleep(settings["sleep"])
        if settings["fail_ipc"] == ctx.ipc:
            raise RuntimeError(f"tiny-eval was told to fail at IPC {ctx.ipc}")
        d = ctx.dataset
        means = torch.stack([syn.images[syn.labels == c].mean(0).flatten() for c in range(d.num_classes)])
        pred = torch.cdist(d.test_x.flatten(1), means).argmin(1)
        base = float((pred == d.test_y).float().mean() * 100)
        g = torch.Generator().manual_seed(1000 * ctx.seed + ctx.ipc)
        accs = [min(100.0, max(0.0, base - abs(float(torch.randn(1, generator=g))))) for _ in range(settings["n_models"])]
        return EvalResult(accs, time.perf_counter() - t0, {"impl": "tiny"})


class Boom(Method):
    name = "boom"
    description = "test method that always fails"

    def distill(self, ctx):
        raise RuntimeError("boom: this method always fails")


@hookimpl
def register_datasets(register):
    register(DatasetSpec("tiny", lambda root=None, download=False: tiny_dataset(), "test dataset", 8, 1, 3))


@hookimpl
def register_protocols(register):
    register(TinyEval())


class Gen(Method):
    """Stands in for a generative method: takes a budget, and more budget gives better images."""

    name = "gen"
    description = "test method with a generation budget"
    supports_budget = True
    params = {"budget_ipc": Param(0, min=0, help="images per class it makes under a budget (0: --ipc)")}

    def distill(self, ctx):
        from ddbench.api import SyntheticSet

        d, g = ctx.dataset, ctx.generator()
        ipc = ctx.params.get("budget_ipc") if ctx.budget is not None and ctx.params.get("budget_ipc") else ctx.ipc
        picks = [d.indices_of_class(c)[torch.randperm(len(d.indices_of_class(c)), generator=g)[:ipc]]
                 for c in range(d.num_classes)]
        images = d.train_x[torch.cat(picks)].clone()
        noise = 1.0 / (1.0 + (ctx.budget or 0.0))
        images = images + noise * torch.randn(images.shape, generator=g)
        labels = torch.arange(d.num_classes).repeat_interleave(ipc)
        return SyntheticSet(images, labels, {"budget": ctx.budget}, ipc=ipc, generation_seconds=0.0)


@hookimpl
def register_methods(register):
    register(Boom())
    register(Gen())


class ReverseLauncher(Launcher):
    """A third-party launcher written from ddbench.api and docs/plugins.md, registered through the hook as Ray
    or Kubernetes would be: runs the jobs in this process, last first, and tags each record."""

    name = "reverse"
    description = "test launcher: in-process, last job first"
    params = {"tag": Param("reversed")}

    def check(self, settings, parallelism):
        pass

    def run(self, jobs, settings, parallelism, log):
        from ddbench.run.sweeps import run_job

        for job in reversed(jobs):
            rec = run_job(job)
            rec.meta["launcher"] = settings["tag"]
            yield job, rec


@hookimpl
def register_launchers(register):
    register(ReverseLauncher())


# ---- helpers for the tests ---------------------------------------------------------------------------

HERE = __file__.rsplit("/", 1)[0]


def write_config(folder) -> str:
    """A plugins.toml that loads only the host, `random` and this module: fast, and blind to other plugins."""
    from pathlib import Path

    path = Path(folder) / "plugins.toml"
    path.write_text('[plugins]\nenabled = ["random", "sweep_plugin"]\nmodules = ["sweep_plugin"]\n')
    return str(path)


def subprocess_env() -> dict:
    """The environment for `ddbench` subprocesses and SLURM jobs: this folder on PYTHONPATH."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
