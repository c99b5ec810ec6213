"""The pretrained base generator: the recipe, and the command that makes the shipped weights (./shipped.py).

The anchors fine-tune a *pretrained, converged* generator (DiT-XL/2). Nothing can be downloaded here, so the
base is trained on this machine by

    python -m ddbench_minmax.base train [--steps N] [--threads auto|N] [--out DIR]

(resumable: rerun the same command after an interruption), and the result for Fashion-MNIST ships inside the
package under `ddbench_minmax/weights/fashion-mnist/`: `generator/` (diffusers safetensors, its config and
`ddbench_generator.json`) and `meta.json` (the weights' sha256, the full recipe, the data fingerprint, the
measured training time and the machine's load). A run loads it when the dataset's fingerprint matches; `base=train` (or any other dataset)
trains a base with the same recipe into the run's cache instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ddbench.api import DDBenchError

from .cache import GeneratorCache
from .model import GeneratorConfig, arch_config
from .shipped import shipped_cache

@dataclass
class BaseRecipe:
    """How the base generator is trained. Each default cites where it comes from."""

    arch: str = "unet"  # diffusers UNet2DModel, 1.05 M parameters at 28 px (model.py ARCH_CONFIGS)
    # Cosine schedule: Nichol & Dhariwal 2021 (improved DDPM), better than linear at 28-32 px; the class-
    # conditioned MNIST example of huggingface/diffusion-models-class unit 2 uses `squaredcos_cap_v2`.
    beta_schedule: str = "squaredcos_cap_v2"
    num_train_timesteps: int = 1000  # facebookresearch/DiT diffusion/__init__.py create_diffusion: 1000
    steps: int = 4000  # ~8.5 epochs of 60k at batch 128 (TeaPearce/Conditional_Diffusion_MNIST: ~4.7k steps)
    batch_size: int = 128  # huggingface/diffusion-models-class unit 2: batch 128
    lr: float = 1e-3  # huggingface/diffusion-models-class unit 2: Adam lr 1e-3
    warmup_steps: int = 200  # diffusers train_unconditional.py --lr_warmup_steps (500 for 10x longer runs)
    lr_schedule: str = "cosine"  # diffusers train_unconditional.py --lr_scheduler cosine
    ema_decay: float = 0.9999  # vimar-gu/MinimaxDiffusion train_dit.py update_ema(decay=0.9999), with warm-up
    p_uncond: float = 0.1  # facebookresearch/DiT models.py class_dropout_prob=0.1
    snr_gamma: float = 5.0  # Min-SNR-γ, Hang et al. ICCV 2023 (γ = 5)
    precision: str = "bf16"
    seed: int = 0
    snapshot_every: int = 500  # EMA snapshots for the quality-vs-steps curve (docs/minmax.md)

    def generator_config(self, channels: int, image_size: int, num_classes: int) -> GeneratorConfig:
        return GeneratorConfig(arch=self.arch, channels=channels, image_size=image_size, num_classes=num_classes,
                               num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                               net=arch_config(self.arch, image_size))


def train_base(dataset, recipe: BaseRecipe, work_dir: Path, out: GeneratorCache, progress: bool = True, log=print,
               device: str = "cpu", threads: int | str = "auto", stop_at: int | None = None) -> dict[str, Any]:
    """Train the base with `recipe` on `dataset`, resumable through work_dir; save it into `out`."""
    from ddbench.identity import dataset_fingerprint
    from ddbench.seeds import seeded

    from .model import build_denoiser
    from .train import TrainSpec, to_model_space, train_phase

    cfg = recipe.generator_config(dataset.channels, dataset.image_size, dataset.num_classes)
    with seeded(recipe.seed, "minmax-base", "init"):
        model = build_denoiser(cfg)
    spec = TrainSpec(steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, seed=recipe.seed,
                     warmup_steps=recipe.warmup_steps, lr_schedule=recipe.lr_schedule, ema_decay=recipe.ema_decay,
                     p_uncond=recipe.p_uncond, snr_gamma=recipe.snr_gamma, precision=recipe.precision,
                     snapshot_every=recipe.snapshot_every, name="base")
    work_dir.mkdir(parents=True, exist_ok=True)
    log(f"minmax-diffusion: training the base generator ({model.num_parameters():,} parameters, "
        f"{recipe.steps} steps of batch {recipe.batch_size}, {recipe.precision}) in {work_dir}")
    load_before = os.getloadavg()
    ema, stats = train_phase(model, to_model_space(dataset, dataset.train_x.float()), dataset.train_y.long(), spec,
                             checkpoint_path=work_dir / "checkpoint.pt", snapshot_dir=work_dir / "snapshots",
                             progress=progress, log=log, device=device, threads=threads, stop_at=stop_at)
    import torch

    meta = {
        "dataset": dataset.name,
        "data": dataset_fingerprint(dataset),
        "recipe": asdict(recipe),
        "generator_config": asdict(cfg),
        "train": stats,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "command": " ".join(["python -m ddbench_minmax.base", *sys.argv[1:]]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return out.save(ema, meta)


def _load_dataset(name: str, root: str | None):
    from ddbench.clikit import load
    from ddbench.runner import load_dataset

    return load_dataset(load(None)[1], name, root, False)


def _ship_classifier(args) -> int:
    """Train (or take from the cache) the reference classifier and ship its weights (ddbench/weights/)."""
    from ddbench.atomic import atomic_save
    from ddbench.classifier import reference_classifier, shipped_path
    from ddbench.clikit import load
    from ddbench.identity import dataset_fingerprint
    from ddbench.runner import load_dataset

    reg = load(None)[1]
    ds = load_dataset(reg, args.dataset, args.data_root, False)
    spec = reg.get("models", "convnet")
    fp = dataset_fingerprint(ds)
    clf = reference_classifier(ds, lambda: spec.build(ds.channels, ds.num_classes, ds.image_size), Path(args.cache), fp)
    target = shipped_path(args.dataset)
    atomic_save({"state": clf.net.state_dict(), "test_acc": clf.test_acc, "meta": clf.meta, "data": fp}, target)
    print(json.dumps({"out": str(target), "test_accuracy": round(clf.test_acc, 2)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ddbench_minmax.base", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train (or resume) a base generator")
    tr.add_argument("--dataset", default="fashion-mnist")
    tr.add_argument("--data-root", default=None)
    tr.add_argument("--steps", type=int, default=BaseRecipe.steps)
    tr.add_argument("--seed", type=int, default=BaseRecipe.seed)
    tr.add_argument("--stop-at", type=int, default=None,
                    help="end at this step (the lr schedule stays that of --steps) and save the EMA there")
    tr.add_argument("--threads", default="auto",
                    help="torch intra-op threads: a number, or auto (2 alone, 1 when another process shares the cores)")
    tr.add_argument("--work", default="ddbench-results/cache/minmax-base", help="checkpoints and snapshots")
    tr.add_argument("--out", default=None, help="where the base goes (default: the shipped folder)")
    cl = sub.add_parser("classifier", help="ship the quality figures' real-data classifier (trained once, cached)")
    cl.add_argument("--dataset", default="fashion-mnist")
    cl.add_argument("--data-root", default=None)
    cl.add_argument("--cache", default="ddbench-results/cache", help="the cache folder of runs (--out/cache)")
    args = ap.parse_args(argv)
    import torch

    if args.cmd == "classifier":
        return _ship_classifier(args)

    threads = args.threads if args.threads == "auto" else int(args.threads) if args.threads.isdigit() else 0
    if threads == 0:
        raise SystemExit(f"error: --threads {args.threads!r} is not allowed; give a number >= 1 or auto")
    torch.set_num_threads(2 if threads == "auto" else threads)
    try:
        ds = _load_dataset(args.dataset, args.data_root)
        recipe = BaseRecipe(steps=args.steps, seed=args.seed)
        work = Path(args.work) / f"{args.dataset}-seed{args.seed}-steps{args.steps}"
        out = GeneratorCache(Path(args.out)) if args.out else shipped_cache(args.dataset)
        meta = train_base(ds, recipe, work, out, threads=threads, stop_at=args.stop_at)
    except DDBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out.root), "sha256": meta["sha256"], "seconds": meta["train"]["seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
