"""DSA: differentiable siamese augmentation (Zhao & Bilen, ICML 2021).

Semantics and parameter values follow `utils.py: ParamDiffAug, DiffAugment` of the reference code
(VICO-UoE/DatasetCondensation), see docs/evaluation.md:

- strategy `color_crop_cutout_flip_scale_rotate`, `aug_mode='S'`: each call picks ONE group at random and
  applies it; `color` is brightness, saturation and contrast in turn (`aug_mode='M'` applies every group);
- per-sample random parameters; flip p=0.5; scale sx, sy ~ U[1/1.2, 1.2]; rotate U[-15, 15] degrees;
  crop = shift by up to round(0.125*size) px with zero fill; cutout = a zero square of side
  round(0.5*size) at a random centre; brightness x + (u-0.5)*1.0; saturation (x-m_c)*(2u)+m_c;
  contrast (x-m)*(u+0.5)+m, u ~ U(0, 1).

Usage::

    dsa = DSA()                                   # reference strategy and values
    y = dsa(x, generator=g)                       # = dsa.apply(x, dsa.sample(x, g)): one group, per-sample params
    p = dsa.sample(x_real, g, siamese=True)       # batch-1 params, shared by every sample (reference siamese mode)
    xr, xs = dsa.apply(x_real, p), dsa.apply(x_syn, p)   # the same transform on both batches (DM)
    p = dsa.sample(x, g); dsa.apply(x2, p)        # per-sample params reused on another batch of the same size

Every op is differentiable with respect to the images. Random numbers are drawn on the CPU (from
`generator`, or torch's default CPU generator) and then moved to the images' device, so a seed gives the same
augmentation on every device. Geometric ops use `F.affine_grid`/`F.grid_sample` with normalised-coordinate
matrices exactly as the reference does; kornia's `warp_affine` wraps the same two calls but normalises
pixel-coordinate matrices with the align_corners=True convention, which would shift the reference's
sampling grid by a fraction of a pixel, so it is not used here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.errors import DDBenchError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"  # DSA/DM main scripts' `--dsa_strategy` default

# utils.py: ParamDiffAug.__init__ (reference values)
DEFAULT_PARAMS: dict[str, object] = {
    "aug_mode": "S",          # 'S': one group per call; 'M': every group in turn
    "prob_flip": 0.5,
    "ratio_scale": 1.2,
    "ratio_rotate": 15.0,     # degrees
    "ratio_crop_pad": 0.125,
    "ratio_cutout": 0.5,      # square side = round(0.5 * size)
    "brightness": 1.0,
    "saturation": 2.0,
    "contrast": 0.5,
}

GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass
class DSAParams:
    """Sampled augmentation: the groups to apply, in order, each with per-sample parameter tensors.

    Every tensor's first axis is the batch; a batch of 1 broadcasts to any batch (siamese sharing).
    """

    ops: list[tuple[str, dict[str, torch.Tensor]]] = field(default_factory=list)
    batch: int = 0

    @property
    def op(self) -> str:
        """The chosen group(s), '+'-joined ('' for no augmentation)."""
        return "+".join(name for name, _ in self.ops)

    def first(self) -> "DSAParams":
        """The first sample's parameters, for every sample: the reference's siamese sharing."""
        return DSAParams([(n, {k: v[:1] for k, v in vals.items()}) for n, vals in self.ops], min(self.batch, 1))

    @staticmethod
    def cat(params: list["DSAParams"]) -> "DSAParams":
        """Concatenate parameters of batches that chose the same groups (batch-1 params are expanded)."""
        if not params:
            raise ValueError("DSAParams.cat needs at least one DSAParams")
        key = params[0].op
        if any(p.op != key for p in params):
            raise ValueError("DSAParams.cat: all parameters must have chosen the same groups")
        ops = []
        for i, (name, vals) in enumerate(params[0].ops):
            ops.append((name, {k: torch.cat([p.ops[i][1][k] for p in params]) for k in vals}))
        return DSAParams(ops, sum(p.batch for p in params))


class DSA:
    """Differentiable siamese augmentation with the reference strategy and values (see module docstring)."""

    def __init__(self, strategy: str = DEFAULT_STRATEGY, **param_overrides):
        unknown = sorted(set(param_overrides) - set(DEFAULT_PARAMS))
        if unknown:
            raise DDBenchError(f"unknown DSA parameter {unknown[0]!r}; allowed: {', '.join(DEFAULT_PARAMS)}")
        self.param = {**DEFAULT_PARAMS, **param_overrides}
        if self.param["aug_mode"] not in ("S", "M"):
            raise DDBenchError(f"DSA aug_mode={self.param['aug_mode']!r} is not allowed; choose S or M")
        strategy = strategy or ""
        if strategy.lower() == "none":
            strategy = ""
        self.groups = [g for g in strategy.split("_") if g]
        for g in self.groups:
            if g not in GROUPS:
                raise DDBenchError(f"unknown DSA augmentation {g!r} in strategy {strategy!r}; allowed: "
                                   f"{', '.join(GROUPS)}")
        self.strategy = strategy

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, aug_mode={self.param['aug_mode']!r})"

    # ---------------------------------------------------------------- sampling
    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None, siamese: bool = False) -> DSAParams:
        """Choose the group(s) and draw per-sample parameters for the batch `x` (N, C, H, W).

        `siamese=True` draws one sample's parameters (batch 1), which `apply` shares across any batch.
        """
        if x.ndim != 4:
            raise DDBenchError(f"DSA expects images (N, C, H, W), got shape {tuple(x.shape)}")
        if not self.groups:
            return DSAParams([], 1 if siamese else x.shape[0])
        b = 1 if siamese else x.shape[0]
        if self.param["aug_mode"] == "S":
            idx = int(torch.randint(0, len(self.groups), (1,), generator=generator).item())
            chosen = [self.groups[idx]]
        else:
            chosen = list(self.groups)
        h, w = x.shape[-2], x.shape[-1]
        return DSAParams([(g, self._draw(g, b, h, w, generator)) for g in chosen], b)

    def _draw(self, group: str, b: int, h: int, w: int, g: torch.Generator | None) -> dict[str, torch.Tensor]:
        p = self.param
        rand = lambda: torch.rand(b, generator=g)  # noqa: E731
        if group == "color":
            return {"brightness": rand(), "saturation": rand(), "contrast": rand()}
        if group == "crop":
            sx, sy = int(h * p["ratio_crop_pad"] + 0.5), int(w * p["ratio_crop_pad"] + 0.5)
            return {
                "tx": torch.randint(-sx, sx + 1, (b,), generator=g),
                "ty": torch.randint(-sy, sy + 1, (b,), generator=g),
            }
        if group == "cutout":
            ch, cw = int(h * p["ratio_cutout"] + 0.5), int(w * p["ratio_cutout"] + 0.5)
            return {
                "ox": torch.randint(0, h + (1 - ch % 2), (b,), generator=g),
                "oy": torch.randint(0, w + (1 - cw % 2), (b,), generator=g),
            }
        if group == "flip":
            return {"flip": rand() < p["prob_flip"]}
        if group == "scale":
            r = p["ratio_scale"]
            return {"sx": rand() * (r - 1.0 / r) + 1.0 / r, "sy": rand() * (r - 1.0 / r) + 1.0 / r}
        if group == "rotate":
            return {"theta": (rand() - 0.5) * 2 * p["ratio_rotate"] / 180 * math.pi}
        raise AssertionError(group)

    # ---------------------------------------------------------------- applying
    def apply(self, x: torch.Tensor, params: DSAParams) -> torch.Tensor:
        """Apply sampled parameters to `x`: the same batch size, or any batch size for batch-1 params."""
        if params.batch not in (1, x.shape[0]):
            raise DDBenchError(
                f"DSA parameters were sampled for a batch of {params.batch}; got a batch of {x.shape[0]} "
                "(allowed: the same size, or parameters of batch 1, which are shared)"
            )
        for name, vals in params.ops:
            vals = {k: v.to(x.device) for k, v in vals.items()}
            x = getattr(self, f"_{name}")(x, vals)
        return x.contiguous() if params.ops else x

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.sample(x, generator))

    def apply_stacked(self, xs: torch.Tensor, params: list[DSAParams]) -> torch.Tensor:
        """xs (M, B, C, H, W): batch m augmented with params[m]; batches that chose the same group are
        augmented in one call (what the fast evaluation uses for M networks trained at once)."""
        if len(params) != xs.shape[0]:
            raise ValueError("apply_stacked: one DSAParams per stacked batch")
        m, b = xs.shape[:2]
        by_op: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            by_op.setdefault(p.op, []).append(i)
        if len(by_op) == 1:
            flat = self.apply(xs.reshape(m * b, *xs.shape[2:]), DSAParams.cat([_expand(p, b) for p in params]))
            return flat.reshape(xs.shape)
        out = torch.empty_like(xs)
        for idx in by_op.values():
            sub = xs[idx].reshape(len(idx) * b, *xs.shape[2:])
            res = self.apply(sub, DSAParams.cat([_expand(params[i], b) for i in idx]))
            out[idx] = res.reshape(len(idx), b, *xs.shape[2:])
        return out

    # ---------------------------------------------------------------- the ops (utils.py: rand_*)
    def _color(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.param
        col = lambda t: t.to(x.dtype).view(-1, 1, 1, 1)  # noqa: E731
        x = x + (col(v["brightness"]) - 0.5) * p["brightness"]
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * (col(v["saturation"]) * p["saturation"]) + m
        m = x.mean(dim=[1, 2, 3], keepdim=True)
        return (x - m) * (col(v["contrast"]) + p["contrast"]) + m

    def _crop(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        # Pad by one zero pixel, then read pixel (i + tx, j + ty), clamped into the padding: a shift with zero fill.
        n, c, h, w = x.shape
        tx, ty = v["tx"].expand(n), v["ty"].expand(n)
        ix = torch.clamp(torch.arange(h, device=x.device)[None, :] + tx[:, None] + 1, 0, h + 1)
        iy = torch.clamp(torch.arange(w, device=x.device)[None, :] + ty[:, None] + 1, 0, w + 1)
        xp = F.pad(x, [1, 1, 1, 1])
        xp = xp.gather(2, ix[:, None, :, None].expand(n, c, h, w + 2))
        return xp.gather(3, iy[:, None, None, :].expand(n, c, h, w))

    def _cutout(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        n, _, h, w = x.shape
        ch, cw = int(h * self.param["ratio_cutout"] + 0.5), int(w * self.param["ratio_cutout"] + 0.5)
        r0 = (v["ox"].expand(n) - ch // 2)[:, None]
        c0 = (v["oy"].expand(n) - cw // 2)[:, None]
        rows = torch.arange(h, device=x.device)[None, :]
        cols = torch.arange(w, device=x.device)[None, :]
        in_r = (rows >= r0) & (rows < r0 + ch)
        in_c = (cols >= c0) & (cols < c0 + cw)
        keep = ~(in_r[:, :, None] & in_c[:, None, :])
        return x * keep.unsqueeze(1).to(x.dtype)

    def _flip(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)

    def _affine(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.to(x.dtype).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _scale(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        sx, sy = v["sx"], v["sy"]
        z = torch.zeros_like(sx)
        theta = torch.stack([torch.stack([sx, z, z], -1), torch.stack([z, sy, z], -1)], 1)
        return self._affine(x, theta)

    def _rotate(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        t = v["theta"]
        z = torch.zeros_like(t)
        theta = torch.stack([torch.stack([t.cos(), -t.sin(), z], -1), torch.stack([t.sin(), t.cos(), z], -1)], 1)
        return self._affine(x, theta)


def _expand(p: DSAParams, b: int) -> DSAParams:
    if p.batch == b:
        return p
    return DSAParams([(n, {k: v.expand(b, *v.shape[1:]) for k, v in vals.items()}) for n, vals in p.ops], b)


def check_strategy(key: str, value: str) -> None:
    """A `Param.check`: refuse a DSA strategy naming an unknown group when settings resolve, not at evaluation."""
    DSA(value)
