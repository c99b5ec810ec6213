"""IPC-budget policies: how many denoising steps S, and so how many images per class.

Two modes. Fixed IPC (no budget, the classic benchmark): exactly `ipc` images per class at the chosen S.
Fixed time budget (`--budget SECONDS`, the ECCV 2024 challenge mode): generation runs until the wall-clock
deadline with every class served equally; the policy picks S, and the measured throughput predicts the IPC.

- `fixed-steps`: S = the method's `steps`.
- `max-images`: S = `min_steps`, the fewest steps allowed (most images in a budget).
- `fixed-ipc`: S = the method's `steps` and exactly the run's `--ipc` images per class, under a budget too; the
  seconds the sampling leaves go to the stages after it (`refine`): the budget track at equal count
  (docs/minmax.md#the-budget-track-with-refine).
- `calibrated`: a pilot generates at candidate S, evaluates with the fast protocol at two pilot IPCs, fits
  acc(S, IPC) = A + B*ln(IPC) - C*exp(-(S-1)/tau) with scipy (C may be negative: measured here, accuracy
  at a fixed IPC can also fall with S, docs/minmax.md), and picks the S that maximises the predicted
  accuracy at the IPC that S reaches within the budget (or at the fixed IPC). It logs and records the curve.

The contract (`ddbench.api.Policy`): decide(request: PlanRequest) -> Decision.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from ddbench.api import DDBenchError, Decision, PlanRequest, Policy


def _predicted_ipc(req: PlanRequest, steps: int) -> int:
    if req.budget is None:
        return req.ipc
    return req.throughput.max_ipc(req.budget, steps, req.safety)


def check_budget(req: PlanRequest, steps: int) -> int:
    """The IPC that `steps` reaches in the budget; DDBenchError when not even one image per class fits."""
    ipc = _predicted_ipc(req, steps)
    if ipc < 1:
        need = req.throughput.min_budget(steps, req.safety)
        raise DDBenchError(
            f"budget={req.budget:g}s is too small to give each of the {req.num_classes} classes one image at "
            f"S={steps} steps; the minimum on this device is {math.ceil(need * 100) / 100:g}s"
        )
    return ipc


def decide_at(policy: str, req: PlanRequest, s: int, why: str, budget_phrase: str) -> Decision:
    """The decision of a policy that has already chosen S: the IPC that S gives (under a budget, what fits)."""
    ipc = check_budget(req, s)
    mode = "ipc" if req.budget is None else "budget"
    if req.budget:
        why += f"; {ipc} images/class {budget_phrase} {req.budget:g}s"
    return Decision(policy, s, mode, ipc, why, {"images_per_second": req.throughput.images_per_second(s)})


class FixedSteps(Policy):
    name = "fixed-steps"
    description = "S = the method's `steps`; under a budget, as many balanced images as fit"
    fixed_steps = True

    def decide(self, req: PlanRequest) -> Decision:
        return decide_at(self.name, req, req.steps, f"fixed S={req.steps}", "predicted to fit")


class MaxImages(Policy):
    name = "max-images"
    description = "S = `min_steps`, the fewest steps allowed: the most images in a budget"

    def decide(self, req: PlanRequest) -> Decision:
        return decide_at(self.name, req, req.min_steps, f"fewest steps allowed, S={req.min_steps}", "predicted in")


class FixedIpc(Policy):
    name = "fixed-ipc"
    description = "S = the method's `steps`, exactly --ipc images per class under a budget too; the rest goes to refine"
    holds_ipc = True
    fixed_steps = True

    def decide(self, req: PlanRequest) -> Decision:
        s = req.steps
        why = f"fixed S={s}, {req.ipc} images/class"
        if req.budget is not None:
            need = req.throughput.seconds(req.ipc * req.num_classes, s) * req.safety
            if need > req.budget:
                raise DDBenchError(
                    f"budget={req.budget:g}s is too small to sample the {req.ipc} images per class --ipc asks for at "
                    f"S={s} steps; about {math.ceil(need * 100) / 100:g}s on this device (policy fixed-ipc)")
            why += f" in about {need:.2f}s of {req.budget:g}s; the rest goes to the stages after sampling"
        return Decision(self.name, s, "ipc", req.ipc, why, {"images_per_second": req.throughput.images_per_second(s)})


def accuracy_curve(X, A, B, C, tau):
    import numpy as np

    s, i = X
    return A + B * np.log(i) - C * np.exp(-(s - 1.0) / tau)


def fit_curve(points: list[tuple[int, int, float]]) -> tuple[Callable[[float, float], float], dict[str, Any]]:
    """Fit acc(S, IPC) to pilot points (S, IPC, acc). Falls back to A + B ln IPC + C ln S if the
    saturating fit fails."""
    import numpy as np
    from scipy.optimize import curve_fit

    s = np.array([p[0] for p in points], float)
    i = np.array([p[1] for p in points], float)
    a = np.array([p[2] for p in points], float)
    try:
        p0 = [float(a.max()), 3.0, max(1.0, float(a.max() - a.min())), 5.0]
        popt, _ = curve_fit(accuracy_curve, (s, i), a, p0=p0,
                            bounds=([0, 0, -100, 0.3], [100, 50, 100, 500]), maxfev=20000)
        A, B, C, tau = (float(v) for v in popt)
        resid = float(np.sqrt(np.mean((accuracy_curve((s, i), *popt) - a) ** 2)))
        return (lambda S, I: float(accuracy_curve((np.float64(S), np.float64(I)), A, B, C, tau)),
                {"form": "A + B*ln(IPC) - C*exp(-(S-1)/tau)", "A": A, "B": B, "C": C, "tau": tau, "rmse": resid})
    except (RuntimeError, ValueError) as exc:
        M = np.stack([np.ones_like(s), np.log(i), np.log(s)], 1)
        coef, *_ = np.linalg.lstsq(M, a, rcond=None)
        A, B, C = (float(v) for v in coef)
        return (lambda S, I: A + B * math.log(I) + C * math.log(S),
                {"form": "A + B*ln(IPC) + C*ln(S) (fallback)", "A": A, "B": B, "C": C, "error": str(exc)})


class Calibrated(Policy):
    name = "calibrated"
    description = "pilot at candidate S, fast-protocol accuracy, scipy fit of acc(S, IPC), best S within the budget"

    def decide(self, req: PlanRequest) -> Decision:
        if req.pilot is None:
            raise DDBenchError("the calibrated policy needs a pilot (the method provides it)")
        cands = sorted({c for c in req.candidates if req.min_steps <= c <= req.max_steps})
        if len(cands) < 2:
            raise DDBenchError(
                f"pilot_steps must hold at least two values in [{req.min_steps}, {req.max_steps}], got {req.candidates}"
            )
        check_budget(req, cands[0])
        points: list[tuple[int, int, float]] = []
        for s in cands:
            for ipc, acc in sorted(req.pilot(s).items()):
                points.append((s, int(ipc), float(acc)))
        predict, fit = fit_curve(points)
        rows = []
        best = None
        for s in range(cands[0], cands[-1] + 1):
            ipc = _predicted_ipc(req, s)
            if ipc < 1:
                continue
            acc = predict(s, ipc)
            rows.append({"steps": s, "ipc": ipc, "predicted_accuracy": round(acc, 3)})
            if best is None or acc > best[2] + 1e-9:
                best = (s, ipc, acc)
        assert best is not None
        s, ipc, acc = best
        mode = "ipc" if req.budget is None else "budget"
        table = [r for r in rows if r["steps"] in cands or r["steps"] == s]
        req.log("calibrated policy: pilot points (S, IPC, acc%): "
                + ", ".join(f"({a}, {b}, {c:.1f})" for a, b, c in points))
        req.log(f"calibrated policy: fit {fit['form']} -> "
                + ", ".join(f"{k}={v:.3g}" for k, v in fit.items() if isinstance(v, float)))
        for r in table:
            req.log(f"calibrated policy:   S={r['steps']:>4}  IPC={r['ipc']:>5}  predicted "
                    f"{r['predicted_accuracy']:.2f}%"
                    + ("  <- chosen" if r["steps"] == s else ""))
        why = f"S={s} maximises the predicted accuracy ({acc:.2f}%) at IPC {ipc}" + (
            f" within {req.budget:g}s" if req.budget else "")
        return Decision(self.name, s, mode, ipc, why, {"pilot_points": points, "fit": fit, "predicted": table})
