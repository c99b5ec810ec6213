"""The soft-label evaluation protocol `soft` (the `soft_labels` plugin).

Recent methods (SRe2L, Yin et al. NeurIPS 2023; RDED, Sun et al. CVPR 2024; D4M, Su et al. CVPR 2024) are
evaluated with a teacher: a network trained on the real training set relabels every augmented batch of the
synthetic set, and the student learns the teacher's temperature-softened outputs with a KL divergence.
DD-Ranking (NUS-HPC-AI-Lab/DD-Ranking, `ddranking/metrics/soft_label.py`, `LabelRobustScoreSoft`) made this
its soft-label protocol and showed that it lifts even random real images, so ddbench offers it beside the
hard-label `dsa` protocol, on any registered architecture.

How it runs:

1. The teacher is a network of the run's architecture (`--model`; or `teacher_model`), trained on the whole
   real training set with hard labels and no augmentation (DD-Ranking trains its real-data networks with
   `default_augmentation`, the identity, and the settings of `utils/train_and_eval.py:
   REAL_DATA_TRAINING_CONFIG`: SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 512, 200 epochs, lr x0.1
   every 100). It is trained once per (dataset, architecture, teacher settings, teacher seed), kept under
   `OUT/cache/soft-teachers/`, and its test accuracy is recorded in every run that uses it
   (`meta.eval.teacher`).
2. Each of `n_models` students (fresh networks of the run's architecture, seeded as the `dsa` protocol seeds
   them) trains on the synthetic images: every batch is augmented (DSA, per-sample parameters, as the `dsa`
   protocol), the teacher labels that augmented batch (DD-Ranking `soft_label_mode='M'`), and the loss is
   KL(softmax(teacher/T) || softmax(student/T)), batch mean, times T^2 when `scale_loss`.
   The synthetic set's own labels are not used for training.
3. SGD with the `dsa` protocol's optimiser settings (DD-Ranking's soft evaluator defaults agree: sgd, lr 0.01,
   momentum 0.9, weight decay 5e-4, batch 256), 300 epochs (DD-Ranking `num_epochs=300`), lr x0.1 once at
   `epochs//2 + 1` as in the `dsa` protocol; test accuracy of the last epoch on the real test set.

Not done here: DD-Ranking's learning-rate search over {0.001, ..., 0.1} and "best test accuracy checked every
20 epochs" (a choice on the test set); AdamW + cosine schedules of its ImageNet configs.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import hookimpl
from ..api import (AUGMENTATION, EPOCHS, NETWORKS, SPEED, DDBenchError, EvalResult, Param, Protocol, RunContext,
                   SyntheticSet)
from ..helpers import (DEFAULT_STRATEGY, DSA, UnsafeFile, atomic_save, config_hash, dataset_fingerprint, derive_seed,
                       drop_refused, load_tensors, seeded)
from .dsa_protocols import _check, epoch_batches, init_network, test_accuracy, worker_count

DDR = "NUS-HPC-AI-Lab/DD-Ranking"
REF = "VICO-UoE/DatasetCondensation"
TEACHER_KEYS = ("teacher_model", "teacher_epochs", "teacher_lr", "teacher_batch", "teacher_step",
                "teacher_momentum", "teacher_weight_decay", "teacher_seed")

PARAMS: dict[str, Param] = {
    "epochs": Param(300, f"{DDR} ddranking/metrics/soft_label.py: num_epochs=300",
                    "student training epochs (E runs E+1 passes, as the dsa protocol)", min=0, role=EPOCHS),
    "n_models": Param(5, f"{DDR} ddranking/metrics/soft_label.py: num_eval=5",
                      "number of students", min=1, role=NETWORKS),
    "lr": Param(0.01, f"{DDR} soft_label.py: default_lr=0.01; {REF} main.py --lr_net 0.01", "student SGD lr", min=0.0),
    "momentum": Param(0.9, f"{DDR} soft_label.py: momentum=0.9", min=0.0, max=1.0),
    "weight_decay": Param(0.0005, f"{DDR} soft_label.py: weight_decay=0.0005", min=0.0),
    "batch_size": Param(256, f"{DDR} soft_label.py: syn_batch_size=256", "student batch", min=1),
    "temperature": Param(1.0, f"{DDR} configs/Demo_LRS_Soft_Label.yaml: loss_fn_kwargs.temperature 1.0",
                         "T of softmax(teacher/T) and log_softmax(student/T)", min=1e-6),
    "scale_loss": Param(False, f"{DDR} configs/Demo_LRS_Soft_Label.yaml: scale_loss false; ddranking/loss/kl.py",
                        "multiply the KL loss by T^2"),
    "dsa": Param(True, f"{REF} utils.py evaluate_synset: DSA on every batch (the augmentation the teacher relabels)",
                 "augment every student batch with DSA before the teacher labels it", role=AUGMENTATION),
    "dsa_strategy": Param(DEFAULT_STRATEGY, f"{REF} main_DM.py --dsa_strategy", "DSA groups, '_'-joined"),
    "teacher_model": Param("", f"{DDR} soft_label.py: teachers are built with model_name (the student's architecture)",
                           "teacher architecture; empty = the run's --model"),
    "teacher_epochs": Param(200, f"{DDR} ddranking/utils/train_and_eval.py "
                                 "REAL_DATA_TRAINING_CONFIG['CIFAR10-ConvNet-3'] num_epochs 200",
                            "teacher training epochs on the full real training set", min=1),
    "teacher_lr": Param(0.01, f"{DDR} REAL_DATA_TRAINING_CONFIG['CIFAR10-ConvNet-3'] lr 0.01", min=0.0),
    "teacher_batch": Param(512, f"{DDR} REAL_DATA_TRAINING_CONFIG['CIFAR10-ConvNet-3'] batch_size 512", min=1),
    "teacher_step": Param(100, f"{DDR} REAL_DATA_TRAINING_CONFIG['CIFAR10-ConvNet-3'] step_size 100 (gamma 0.1)",
                          "multiply the teacher lr by 0.1 every this many epochs", min=1),
    "teacher_momentum": Param(0.9,
                              f"{DDR} REAL_DATA_TRAINING_CONFIG['CIFAR10-ConvNet-3'] momentum 0.9", min=0.0, max=1.0),
    "teacher_weight_decay": Param(0.0005, f"{DDR} REAL_DATA_TRAINING_CONFIG['CIFAR10-ConvNet-3'] weight_decay 0.0005",
                                  min=0.0),
    "teacher_seed": Param(0, "docs/benchmark-axes.md#soft-labels---protocol-soft: one teacher per dataset and "
                             "architecture, shared by every run seed",
                          "seed of the teacher's initialisation and data order", min=0),
    "test_batch": Param(256, f"{REF} utils.py get_dataset: testloader batch_size=256",
                        "test images per forward", min=1, role=SPEED),
    "max_parallel": Param(0, "docs/evaluation.md: worker_count, on a CPU students train one per core (0 = all at once)",
                          "students trained at once on a CPU (1 = one after another with all threads)", min=0,
                          role=SPEED),
}


# --------------------------------------------------------------------------------------------------
# The teacher
# --------------------------------------------------------------------------------------------------


@dataclass
class Teacher:
    net: nn.Module
    accuracy: float  # % on the real test set
    seconds: float  # training time when it was trained
    path: Path
    cached: bool  # loaded from the cache rather than trained by this run
    model: str

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "accuracy": self.accuracy, "train_seconds": self.seconds,
                "path": str(self.path), "cached": self.cached}


def teacher_path(ctx: RunContext, settings: dict[str, Any]) -> Path:
    """Keyed by the data itself (fingerprint), the architecture and every teacher setting."""
    model = settings["teacher_model"] or ctx.model
    key = config_hash({"dataset": ctx.dataset.name, "fingerprint": dataset_fingerprint(ctx.dataset), "model": model,
                       **{k: settings[k] for k in TEACHER_KEYS if k != "teacher_model"}})
    return Path(ctx.cache_dir) / "soft-teachers" / f"{ctx.dataset.name}-{model}-{key}.pt"


def _build(ctx: RunContext, model: str, seed: int) -> nn.Module:
    with seeded("soft-teacher", seed):
        return ctx.build_model(model)


def get_teacher(ctx: RunContext, settings: dict[str, Any]) -> Teacher:
    """The cached teacher, or a new one trained on the full real training set and cached."""
    model = settings["teacher_model"] or ctx.model
    ctx.registry.get("models", model)  # an unknown teacher architecture names the known ones
    path = teacher_path(ctx, settings)
    net = _build(ctx, model, settings["teacher_seed"]).to(ctx.device)
    if path.is_file():
        try:
            saved = load_tensors(path, map_location=ctx.device)
            net.load_state_dict(saved["state_dict"])
            net.eval()
            ctx.log(f"soft: teacher {model} from {path} ({saved['accuracy']:.2f}% on the test set)")
            return Teacher(net, float(saved["accuracy"]), float(saved["seconds"]), path, True, model)
        except UnsafeFile as exc:
            drop_refused(exc, ctx.log, "training the teacher again")
            net = _build(ctx, model, settings["teacher_seed"]).to(ctx.device)
        except Exception as exc:  # noqa: BLE001 - an unreadable cache entry is retrained, not trusted
            ctx.log(f"soft: ignoring unreadable teacher {path} ({type(exc).__name__}); training it again")
            net = _build(ctx, model, settings["teacher_seed"]).to(ctx.device)
    ctx.log(f"soft: training the {model} teacher on {len(ctx.dataset.train_x)} real images "
            f"for {settings['teacher_epochs']} epochs (once; cached at {path})")
    start = time.perf_counter()
    train_teacher(net, ctx, settings)
    seconds = time.perf_counter() - start
    accuracy = test_accuracy(net, ctx, settings["test_batch"])
    net.eval()
    atomic_save({"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "accuracy": accuracy,
                 "seconds": seconds, "model": model, "dataset": ctx.dataset.name,
                 "settings": {k: settings[k] for k in TEACHER_KEYS}}, path)
    ctx.log(f"soft: teacher {model} reaches {accuracy:.2f}% on the test set ({seconds:.0f} s)")
    return Teacher(net, accuracy, seconds, path, False, model)


def train_teacher(net: nn.Module, ctx: RunContext, settings: dict[str, Any]) -> None:
    """Hard-label SGD on the whole real training set, no augmentation, lr x0.1 every `teacher_step` epochs."""
    x_all, y_all = ctx.dataset.train_x, ctx.dataset.train_y
    gen = torch.Generator().manual_seed(derive_seed("soft-teacher-order", settings["teacher_seed"]))
    lr = settings["teacher_lr"]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=settings["teacher_momentum"],
                          weight_decay=settings["teacher_weight_decay"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=settings["teacher_step"], gamma=0.1)
    bs = settings["teacher_batch"]
    net.train()
    for _ in range(settings["teacher_epochs"]):
        perm = torch.randperm(len(x_all), generator=gen)
        for s in range(0, len(perm), bs):
            idx = perm[s:s + bs]
            x = x_all[idx].to(ctx.device, torch.float32)
            y = y_all[idx].to(ctx.device)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    net.eval()


# --------------------------------------------------------------------------------------------------
# The students
# --------------------------------------------------------------------------------------------------


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            scale: bool) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)), batch mean (DD-Ranking ddranking/loss/kl.py), x T^2 when `scale`."""
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    q = F.softmax(teacher_logits.detach() / temperature, dim=1)
    loss = F.kl_div(log_p, q, reduction="batchmean")
    return loss * temperature ** 2 if scale else loss


def train_student(net: nn.Module, gen: torch.Generator, images: torch.Tensor, teacher: nn.Module,
                  dsa: DSA | None, settings: dict[str, Any], lr: float) -> float:
    """One student, in the dsa protocol's epoch loop; returns its agreement with the teacher on the last epoch's
    batches (%)."""
    epochs, n = settings["epochs"], images.shape[0]
    T, scale = settings["temperature"], settings["scale_loss"]
    net.train()
    agree = 0
    for ep, idx, opt in epoch_batches(net, gen, n, images.device, settings, lr):
        x = images[idx]
        if dsa is not None:
            x = dsa(x, generator=gen)
        with torch.no_grad():
            t = teacher(x)
        out = net(x)
        loss = kl_loss(out, t, T, scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ep == epochs:
            agree += int((out.argmax(1) == t.argmax(1)).sum())
    return 100.0 * agree / n


class SoftLabelProtocol(Protocol):
    name = "soft"
    description = ("soft labels: a teacher trained once on the real data relabels every augmented batch; "
                   "students learn it with KL (DD-Ranking LabelRobustScoreSoft, SRe2L/RDED style)")
    params = PARAMS

    def evaluate(self, syn: SyntheticSet, ctx: RunContext, settings: dict[str, Any]) -> EvalResult:
        _check(syn, ctx, settings | {"use_syn_lr": True})
        start = time.perf_counter()
        teacher = get_teacher(ctx, settings)
        for p in teacher.net.parameters():
            p.requires_grad_(False)
        images = syn.images.detach().to(ctx.device, torch.float32)
        dsa = DSA(settings["dsa_strategy"]) if settings["dsa"] else None
        lr = float(syn.lr) if syn.lr is not None else float(settings["lr"])
        n = settings["n_models"]
        threads = torch.get_num_threads()
        workers = worker_count(n, settings["max_parallel"], threads) if torch.device(ctx.device).type == "cpu" else 1

        def student(i: int) -> tuple[float, float]:
            if workers > 1:
                torch.set_num_threads(max(1, threads // workers))  # as the dsa protocol's threads mode
            net, gen = init_network(ctx, i)  # each student's draws depend only on (seed, i): same result either way
            net = net.to(ctx.device)
            agree = train_student(net, gen, images, teacher.net, dsa, settings, lr)
            return test_accuracy(net, ctx, settings["test_batch"]), agree

        try:
            if workers > 1:
                with ThreadPoolExecutor(workers, thread_name_prefix="ddbench-soft") as pool:
                    results = list(pool.map(student, range(n)))
            else:
                results = [student(i) for i in range(n)]
        finally:
            torch.set_num_threads(threads)
        accs, agreement = [r[0] for r in results], [r[1] for r in results]
        details = {"impl": "soft", "workers": workers, "lr": lr, "epochs": settings["epochs"], "n_models": n,
                   "images": int(images.shape[0]), "temperature": settings["temperature"],
                   "teacher": teacher.describe(), "teacher_agreement": agreement}
        return EvalResult(accuracies=accs, seconds=time.perf_counter() - start, details=details)


@hookimpl
def register_protocols(register):
    register(SoftLabelProtocol())


__all__ = ["SoftLabelProtocol", "get_teacher", "teacher_path", "train_teacher", "train_student", "kl_loss", "Teacher"]
