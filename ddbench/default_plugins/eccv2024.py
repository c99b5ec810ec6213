"""The ECCV 2024 First Dataset Distillation Challenge: its evaluation as the protocol `eccv2024`, its submission
format, and the challenge run (`run_challenge`; the `ddbench challenge` command, ./challenge_command.py).

The official script is DataDistillation/ECCV2024-Dataset-Distillation-Challenge `evaluate.py`:

- data: CIFAR-100 (3x32x32, 100 classes) and Tiny-ImageNet (3x64x64, 200 classes); a submission is
  `{cifar100|tinyimagenet}.pt`, one float tensor of exactly 10 images per class, class after class (the
  labels are `[0]*10 + [1]*10 + ...`, hard), already normalised with CIFAR-100 mean (0.5071, 0.4866, 0.4409) /
  std (0.2673, 0.2564, 0.2762) and the ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225); the
  test sets (`reference_data/*_test.pt`) are normalised the same way, and the script normalises nothing.
  ddbench's `cifar100` and `tiny-imagenet` datasets use exactly these constants
  (ddbench/default_plugins/dataset_files.py), and their test splits (CIFAR-100 test, Tiny-ImageNet val) are the
  challenge's test sets.
- network: `ConvNet(channel=3, net_width=128, net_depth=3, relu, instancenorm, avgpooling,
  im_size=(H, H))`, **depth 3 for both datasets** (the script passes net_depth=3 also for 64 px, although
  DM/MTT use ConvNetD4 there), i.e. ddbench's `--model convnet-d3`; `strict` refuses any other network.
- training: SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256 shuffled, `for ep in range(1000 + 1)`,
  lr x0.1 (a fresh optimizer) after epoch 501 (`lr_schedule = [Epoch//2 + 1]`), DSA
  `color_crop_cutout_flip_scale_rotate` with `ParamDiffAug()` (aug_mode 'S', not siamese) on every batch.
  That is ddbench's `dsa` protocol at its defaults (ddbench/default_plugins/dsa_protocols.py), which this
  protocol reuses.
- score: test accuracy of each of **3** networks, averaged; the challenge score is the mean of the two
  datasets' averages. The generative track gives the generator 10 minutes (on the organisers' RTX 4090).

The protocol checks the challenge's contract (dataset, 10 images per class, hard labels) unless `strict` is
off. A generative method run under a budget may return more than 10 images per class: the submission takes
the first 10 of each class, in the order the method returned them, and records how many it left out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .. import hookimpl
from ..api import (AUGMENTATION, NETWORKS, SPEED, DDBenchError, EvalResult, ImageDataset, Method, Param, RunContext,
                   RunFailed, SyntheticSet)
from .dsa_protocols import DSAProtocol
from ..helpers import UnsafeFile, load_tensors

OFFICIAL = "DataDistillation/ECCV2024-Dataset-Distillation-Challenge evaluate.py"
IPC = 10
BUDGET_SECONDS = 600.0  # generative track: 10 minutes of generation
ROUNDS = 3


@dataclass(frozen=True)
class ChallengeDataset:
    name: str  # ddbench dataset name
    file: str  # submission file stem in the official layout
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


DATASETS: tuple[ChallengeDataset, ...] = (
    ChallengeDataset("cifar100", "cifar100", 100, 32, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    ChallengeDataset("tiny-imagenet", "tinyimagenet", 200, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
)


def challenge_dataset(name: str) -> ChallengeDataset:
    for d in DATASETS:
        if name in (d.name, d.file):
            return d
    raise DDBenchError(f"dataset {name!r} is not part of the ECCV 2024 challenge; allowed: "
                       f"{', '.join(d.name for d in DATASETS)}")


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------


def check_contract(syn: SyntheticSet, ds: ImageDataset) -> None:
    """The official script's asserts, on a dataset: the challenge's data, hard labels, >= 10 images per class."""
    check_data(ds)
    if syn.labels.ndim != 1:
        raise DDBenchError("the ECCV 2024 challenge evaluates hard labels; this set has soft labels")


def check_data(ds: ImageDataset) -> None:
    """The challenge's data: its classes, image size and normalisation (checked before any work)."""
    spec = challenge_dataset(ds.name)
    shape = (3, spec.image_size, spec.image_size)
    if (ds.num_classes, tuple(ds.train_x.shape[1:])) != (spec.num_classes, shape):
        raise DDBenchError(f"dataset {ds.name} has {ds.num_classes} classes of {tuple(ds.train_x.shape[1:])}; "
                           f"the challenge's has {spec.num_classes} of {shape} "
                           "(set eval.strict=false for a partial copy)")
    if tuple(ds.mean) != spec.mean or tuple(ds.std) != spec.std:
        raise DDBenchError(f"dataset {ds.name} is normalised with {ds.mean}/{ds.std}; "
                           f"the challenge uses {spec.mean}/{spec.std}")


def first_per_class(syn: SyntheticSet, num_classes: int, ipc: int = IPC) -> tuple[SyntheticSet, int]:
    """The first `ipc` images of each class, class after class (the submission order); and how many were left
    out. RunFailed when a class has fewer: the run could not make a valid submission."""
    labels = syn.labels if syn.labels.ndim == 1 else syn.labels.argmax(1)
    picks = []
    short = []
    for c in range(num_classes):
        idx = (labels == c).nonzero(as_tuple=True)[0]
        if len(idx) < ipc:
            short.append(f"{c}: {len(idx)}")
        picks.append(idx[:ipc])
    if short:
        raise RunFailed(f"the ECCV 2024 submission needs {ipc} images of every class; classes with fewer "
                        f"(class: count): {', '.join(short[:10])}{', ...' if len(short) > 10 else ''}")
    order = torch.cat(picks)
    out = SyntheticSet(syn.images[order], torch.arange(num_classes).repeat_interleave(ipc), dict(syn.meta), syn.lr)
    return out, int(labels.numel() - order.numel())


class ECCV2024Protocol(DSAProtocol):
    """The `dsa` protocol at the official script's settings, on its ConvNet-3, over 3 networks."""

    def __init__(self) -> None:
        super().__init__("eccv2024", "ECCV 2024 DD challenge evaluation: 3 ConvNet-3, 1000 epochs DSA, hard labels, "
                         "10 images per class", 1000, f"{OFFICIAL}: Epoch = int(1000)")
        p = self.params
        p["n_models"] = Param(ROUNDS, f"{OFFICIAL}: rounds = 3 (scores averaged)",
                              "networks trained", min=1, role=NETWORKS)
        p["lr"] = Param(0.01, f"{OFFICIAL}: lr = float(0.01)", "SGD learning rate", min=0.0)
        p["momentum"] = Param(0.9, f"{OFFICIAL}: SGD(momentum=0.9)", min=0.0, max=1.0)
        p["weight_decay"] = Param(0.0005, f"{OFFICIAL}: SGD(weight_decay=0.0005)", min=0.0)
        p["batch_size"] = Param(256, f"{OFFICIAL}: DataLoader(batch_size=256, shuffle=True)", "training batch", min=1)
        p["use_syn_lr"] = Param(False, f"{OFFICIAL}: the lr is fixed at 0.01 whatever the submission",
                                "train with a method's learned lr (off: the official script has none)")
        p["dsa"] = Param(True, f"{OFFICIAL}: epoch('train', ..., aug=True): DiffAugment on every batch",
                         "DSA augmentation on every training batch", role=AUGMENTATION)
        p["dsa_strategy"] = Param("color_crop_cutout_flip_scale_rotate",
                                  f"{OFFICIAL}: dsa_strategy = 'color_crop_cutout_flip_scale_rotate', "
                                  "ParamDiffAug() (mode S)",
                                  "DSA groups, '_'-joined")
        p["test_batch"] = Param(256, f"{OFFICIAL}: testloader batch_size=256",
                                "test images per forward", min=1, role=SPEED)
        if "zca" in p:
            p["zca"] = Param(False, f"{OFFICIAL}: no whitening (the script normalises nothing)", p["zca"].help)
        p["strict"] = Param(True, f"{OFFICIAL}: asserts data.shape == (10*num_classes, 3, H, H)",
                            "refuse sets and datasets that are not the challenge's (off: tests, partial copies)")

    def validate(self, ctx: RunContext, settings: dict[str, Any]) -> None:
        """The challenge's data and network, before any work (a partial copy fails here, not after distilling)."""
        if settings["strict"]:
            check_data(ctx.dataset)
            check_network(ctx)

    def evaluate(self, syn: SyntheticSet, ctx: RunContext, settings: dict[str, Any]) -> EvalResult:
        ds = ctx.dataset
        if settings["strict"]:
            check_contract(syn, ds)
            check_network(ctx)
        submission, dropped = first_per_class(syn, ds.num_classes)
        result = super().evaluate(submission, ctx, settings)
        result.details.update({"challenge": "eccv2024", "submitted": int(submission.images.shape[0]),
                               "dropped": dropped, "strict": settings["strict"]})
        return result


def check_network(ctx: RunContext) -> None:
    """The official network: ConvNet width 128, depth 3, at 32 and at 64 px (`--model convnet-d3`)."""
    from .convnet_models import ConvNet

    net = ctx.build_model()
    if not (isinstance(net, ConvNet) and net.depth == 3 and net.width == 128):
        kind = f"ConvNet depth {net.depth}" if isinstance(net, ConvNet) else type(net).__name__
        raise DDBenchError(f"--model {ctx.model} builds a {kind} here; the challenge evaluates ConvNet-3 "
                           "(net_depth=3 at 32 and 64 px): pass --model convnet-d3, or eval.strict=false")


# --------------------------------------------------------------------------------------------------
# The official submission format
# --------------------------------------------------------------------------------------------------


def export_submission(syn: SyntheticSet, dataset: str, folder: Path | str) -> Path:
    """Write `folder/{cifar100|tinyimagenet}.pt` as the official script loads it: the first 10 images of each
    class, class after class, a normalised float tensor (N, 3, H, W)."""
    spec = challenge_dataset(dataset)
    sub, _ = first_per_class(syn, spec.num_classes)
    if tuple(sub.images.shape[1:]) != (3, spec.image_size, spec.image_size):
        raise DDBenchError(f"images of shape {tuple(sub.images.shape[1:])} cannot be a {spec.file} submission; "
                           f"it needs (3, {spec.image_size}, {spec.image_size})")
    from ..helpers import atomic_save

    target = Path(folder) / f"{spec.file}.pt"
    atomic_save(sub.images.detach().cpu().float().contiguous(), target)
    return target


def load_submission(path: Path | str, dataset: str) -> SyntheticSet:
    """An official-format submission file as a SyntheticSet (labels implied by the order, 10 per class)."""
    spec = challenge_dataset(dataset)
    path = Path(path)
    if not path.is_file():
        raise DDBenchError(f"no submission file {path}; expected {spec.file}.pt")
    try:
        data = load_tensors(path)
    except UnsafeFile:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
        raise DDBenchError(f"cannot read submission {path}: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:200]}") from None
    want = (IPC * spec.num_classes, 3, spec.image_size, spec.image_size)
    if not isinstance(data, torch.Tensor) or tuple(data.shape) != want:
        got = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise DDBenchError(f"{path} holds {got}; a {spec.file} submission is one tensor of shape {want}")
    images = data.float()
    if not bool(torch.isfinite(images).all()):
        raise DDBenchError(f"{path} contains NaN or inf")
    return SyntheticSet(images, torch.arange(spec.num_classes).repeat_interleave(IPC), {"source": str(path)})


class SubmissionMethod(Method):
    """Evaluate an existing challenge submission folder (`{cifar100|tinyimagenet}.pt`) like any method's set."""

    name = "submission"
    description = "an ECCV 2024 challenge submission folder ({cifar100|tinyimagenet}.pt), evaluated as a method's set"
    params = {"dir": Param("", f"{OFFICIAL}: --submit_dir (holds cifar100.pt and tinyimagenet.pt)",
                           "the submission folder")}

    def validate(self, ctx: RunContext) -> None:
        if not ctx.params["dir"]:
            raise DDBenchError("method 'submission' needs --set dir=FOLDER (holding cifar100.pt / tinyimagenet.pt)")
        spec = challenge_dataset(ctx.dataset.name)
        if ctx.ipc != IPC:
            raise DDBenchError(f"a challenge submission holds {IPC} images per class; pass --ipc {IPC}, not {ctx.ipc}")
        if not (Path(ctx.params["dir"]) / f"{spec.file}.pt").is_file():
            raise DDBenchError(f"no {spec.file}.pt in {ctx.params['dir']}")

    def distill(self, ctx: RunContext) -> SyntheticSet:
        spec = challenge_dataset(ctx.dataset.name)
        return load_submission(Path(ctx.params["dir"]) / f"{spec.file}.pt", ctx.dataset.name)


# --------------------------------------------------------------------------------------------------
# The challenge run
# --------------------------------------------------------------------------------------------------


@dataclass
class ChallengeResult:
    method: str
    budget: float | None
    per_dataset: dict[str, float | None] = field(default_factory=dict)  # mean accuracy (%) over the 3 networks
    runs: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """Mean over the two datasets (%), None unless both were evaluated."""
        values = [self.per_dataset.get(d.name) for d in DATASETS]
        if any(v is None for v in values):
            return None
        return sum(values) / len(values)

    def text(self) -> str:
        lines = [f"ECCV 2024 challenge score of {self.method}"
                 + (f" (generation budget {self.budget:g} s)" if self.budget else "") + ":"]
        for d in DATASETS:
            acc = self.per_dataset.get(d.name)
            shown = "-" if acc is None else f"{acc:.2f} %"
            extra = f"  FAILED: {self.errors[d.name]}" if d.name in self.errors else (
                f"  (run {self.runs[d.name]})" if d.name in self.runs else "")
            lines.append(f"  {d.name:<14} {shown}{extra}")
        lines.append(f"  {'score':<14} {'-' if self.score is None else f'{self.score:.2f} %'}  (mean of the two; "
                     f"each the mean of {ROUNDS} networks)")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "budget": self.budget, "per_dataset": self.per_dataset, "score": self.score,
                "runs": self.runs, "errors": self.errors}


def challenge_requests(method: str, registry, base) -> list:
    """One request per challenge dataset: IPC 10, protocol eccv2024, the 10-minute budget when the method
    takes one (generative track), else fixed IPC (track 1)."""
    m = registry.get("methods", method)
    budget = base.budget if base.budget is not None else BUDGET_SECONDS
    out = []
    for d in DATASETS:
        out.append(replace(base, method=method, dataset=d.name, ipc=IPC, protocol="eccv2024",
                           budget=budget if getattr(m, "supports_budget", False) else None))
    return out


def run_challenge(method: str, base=None, config=None, registry=None,
                  log: Callable[[str], None] = print) -> ChallengeResult:
    """Run (or reuse from the database) `method` on both datasets under the challenge protocol; its score.

    `base` is a ddbench.run.runner.RunRequest carrying the shared flags (data root, output folder, device, seed,
    protocol settings such as eval.strict); method, dataset, IPC and protocol are set here.
    """
    from ..helpers import RunRequest, execute, find_ok, load, resolve

    if config is None or registry is None:
        config, registry = load(None)
    base = base if base is not None else RunRequest(method=method, model="convnet-d3")
    requests = challenge_requests(method, registry, base)
    resolved = [resolve(r, config, registry) for r in requests]  # every cell checked before anything runs
    result = ChallengeResult(method, requests[0].budget)
    for res in resolved:
        name = res.request.dataset
        done = find_ok(res.db_path, res.config_hash) if res.db_path.exists() else None
        if done is not None:
            log(f"{name}: reusing run {done.run_id} from {res.db_path}")
            row = done
        else:
            log(f"{name}: running {method} (IPC {IPC}"
                + (f", budget {res.request.budget:g} s" if res.request.budget else "")
                + ", protocol eccv2024)")
            row = execute(res, registry, log=log)
        result.runs[name] = row.run_id
        if row.ok and row.accuracy_mean is not None:
            result.per_dataset[name] = float(row.accuracy_mean)
        else:
            result.per_dataset[name] = None
            result.errors[name] = row.error_line or "unknown error"
    return result


@hookimpl
def register_protocols(register):
    register(ECCV2024Protocol())


@hookimpl
def register_methods(register):
    register(SubmissionMethod())


__all__ = ["ECCV2024Protocol", "SubmissionMethod", "run_challenge", "ChallengeResult", "export_submission",
           "load_submission", "first_per_class", "check_contract", "DATASETS"]
