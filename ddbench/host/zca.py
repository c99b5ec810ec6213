"""ZCA whitening as a dataset-level transform, usable by any method (MTT uses it for CIFAR).

Follows the MTT reference (GeorgeCazenavette/mtt-distillation `utils.py: get_dataset` with `--zca`):
images are taken in [0, 1] pixel space (`ToTensor()` without `Normalize`), a `kornia.enhance.ZCAWhitening(
eps=0.1, compute_inv=True)` is fitted on the whole training set and applied to train and test images.
kornia's fit is reproduced here (no kornia call, so the matrices can be cached and moved freely):

    mean = E[x];  C = (X - mean)^T (X - mean) / (N - 1);  C = U S U^T
    T = U diag(1 / sqrt(S + eps)) U^T;   T_inv = U diag(sqrt(S + eps)) U^T
    whiten(x) = (x - mean) T;            unwhiten(z) = z T_inv + mean        (x flattened to C*H*W)

Usage by a method that wants to work in whitened space:

    zca = fit_zca(ctx.dataset, eps=0.1, cache_dir=ctx.cache_dir)
    white = whiten_dataset(ctx.dataset, zca)      # an ImageDataset in whitened space
    ... distill on white.train_x ...
    images = zca.to_normalised(syn_white, ctx.dataset)   # back to the dataset's normalised space

The fit costs one D x D covariance and eigendecomposition (D = C*H*W: 784 for 28x28x1, 3072 for
32x32x3, 12288 for 64x64x3, where the matrix alone is 600 MB in float32).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..api import DDBenchError, ImageDataset
from ..core.safeload import UnsafeFile, drop_refused, load_tensors
from ..store.identity import config_hash, dataset_fingerprint

MTT_ZCA_EPS = 0.1  # mtt-distillation utils.py: K.enhance.ZCAWhitening(eps=0.1, compute_inv=True)


class ZCA:
    """A fitted ZCA whitening of flattened images (float32 matrices, any device)."""

    def __init__(self, mean: torch.Tensor, transform: torch.Tensor, inverse: torch.Tensor, eps: float, shape: tuple):
        self.mean, self.transform_matrix, self.inverse_matrix = mean, transform, inverse
        self.eps, self.shape = float(eps), tuple(shape)

    @classmethod
    def fit(cls, pixels: torch.Tensor, eps: float = MTT_ZCA_EPS, batch: int = 4096) -> "ZCA":
        """Fit on (N, C, H, W) images in [0, 1] pixel space (the reference fits before any normalisation)."""
        if pixels.ndim != 4 or pixels.shape[0] < 2:
            raise DDBenchError(f"ZCA needs at least 2 images of shape (N, C, H, W), got {tuple(pixels.shape)}")
        if not eps > 0:
            raise DDBenchError(f"zca eps={eps!r} must be > 0")
        n = pixels.shape[0]
        flat = pixels.reshape(n, -1)
        mean = flat.double().mean(0, keepdim=True)
        cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64)
        for i in range(0, n, batch):
            xc = flat[i:i + batch].double() - mean
            cov += xc.T @ xc
        cov /= n - 1
        s, u = torch.linalg.eigh(cov)
        s = s.clamp_min(0.0)
        t = (u * torch.rsqrt(s + eps)) @ u.T
        t_inv = (u * torch.sqrt(s + eps)) @ u.T
        return cls(mean.float(), t.float(), t_inv.float(), eps, pixels.shape[1:])

    def to(self, device: torch.device | str) -> "ZCA":
        return ZCA(self.mean.to(device), self.transform_matrix.to(device), self.inverse_matrix.to(device),
                   self.eps, self.shape)

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.shape:
            raise DDBenchError(f"ZCA was fitted on images of shape {self.shape}, got {tuple(x.shape[1:])}")

    def whiten(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixel images -> whitened images of the same shape."""
        self._check(pixels)
        m = self.to(pixels.device)
        return ((pixels.reshape(len(pixels), -1) - m.mean) @ m.transform_matrix).reshape(pixels.shape)

    def unwhiten(self, white: torch.Tensor) -> torch.Tensor:
        """Whitened images -> [0, 1]-scale pixel images (exact inverse of `whiten`)."""
        self._check(white)
        m = self.to(white.device)
        return (white.reshape(len(white), -1) @ m.inverse_matrix + m.mean).reshape(white.shape)

    def from_normalised(self, x: torch.Tensor, dataset: ImageDataset) -> torch.Tensor:
        """Images in the dataset's normalised space -> whitened space."""
        return self.whiten(dataset.denormalise(x))

    def to_normalised(self, white: torch.Tensor, dataset: ImageDataset) -> torch.Tensor:
        """Whitened images -> the dataset's normalised space (what the host evaluates)."""
        return dataset.normalise(self.unwhiten(white))

    def state_dict(self) -> dict:
        return {"mean": self.mean, "transform": self.transform_matrix, "inverse": self.inverse_matrix,
                "eps": self.eps, "shape": list(self.shape)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "ZCA":
        return cls(state["mean"], state["transform"], state["inverse"], state["eps"], tuple(state["shape"]))


def _cache_key(dataset: ImageDataset, eps: float) -> str:
    """The data's fingerprint (ddbench.store.identity, the one used everywhere) and the regularisation."""
    return config_hash({"data": dataset_fingerprint(dataset), "eps": float(eps)})


def fit_zca(dataset: ImageDataset, eps: float = MTT_ZCA_EPS, cache_dir: Path | None = None) -> ZCA:
    """Fit ZCA on the dataset's training images (in [0, 1] pixel space); cached under cache_dir/zca if given."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "zca" / f"{dataset.name}-{_cache_key(dataset, eps)}.pt"
        if path.is_file():
            try:
                state = load_tensors(path)
                zca = ZCA.from_state_dict(state)
                if zca.shape == tuple(dataset.train_x.shape[1:]) and torch.isfinite(zca.transform_matrix).all():
                    return zca
            except UnsafeFile as exc:
                drop_refused(exc)
            except Exception:  # noqa: BLE001 - a corrupt cache file is refitted below
                pass
    zca = ZCA.fit(dataset.denormalise(dataset.train_x.float()), eps)
    if path is not None:
        from ..core.atomic import atomic_save

        atomic_save(zca.state_dict(), path)
    return zca


def whiten_dataset(dataset: ImageDataset, zca: ZCA) -> ImageDataset:
    """The same dataset with train and test images in whitened space (name gets a `+zca` suffix).

    The result's mean/std are (0, 1) placeholders: `denormalise` of whitened images is not pixel space;
    use `zca.to_normalised(x, original_dataset)` to come back.
    """
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}+zca",
        train_x=zca.from_normalised(dataset.train_x.float(), dataset),
        test_x=zca.from_normalised(dataset.test_x.float(), dataset),
        mean=(0.0,) * dataset.channels,
        std=(1.0,) * dataset.channels,
    )


__all__ = ["ZCA", "fit_zca", "whiten_dataset", "MTT_ZCA_EPS"]
