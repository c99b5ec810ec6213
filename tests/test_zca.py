"""ZCA whitening (ddbench.host.zca): kornia's formula, exact inverse, caching, dataset-level use."""
from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_dataset
from ddbench.api import DDBenchError
from ddbench.host.zca import ZCA, fit_zca, whiten_dataset


pytestmark = pytest.mark.usefixtures("one_thread")


def _pixels(n=200, c=1, s=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, s, s, generator=g)
    return (0.7 * base + 0.3 * torch.rand(n, c, s, s, generator=g)).clamp(0, 1)  # correlated channels/pixels


def test_matches_kornia_zca_whitening():
    kornia = pytest.importorskip("kornia")
    x = _pixels(c=3)
    ref = kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)
    ref.fit(x)
    zca = ZCA.fit(x, eps=0.1)
    torch.testing.assert_close(zca.whiten(x), ref(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(zca.unwhiten(zca.whiten(x)), ref.inverse_transform(ref(x)), atol=1e-4, rtol=1e-4)


def test_whitens_and_inverts_exactly():
    x = _pixels(n=500)
    zca = ZCA.fit(x, eps=1e-4)
    w = zca.whiten(x).reshape(len(x), -1)
    cov = torch.cov(w.T)
    assert (cov - torch.eye(cov.shape[0])).abs().max() < 0.05  # whitened: identity covariance
    torch.testing.assert_close(zca.unwhiten(zca.whiten(x)), x, atol=1e-4, rtol=1e-4)


def test_dataset_transform_and_cache(tmp_path):
    ds = make_tiny_dataset(per_class=30, size=12)
    zca = fit_zca(ds, 0.1, tmp_path)
    files = list((tmp_path / "zca").glob("*.pt"))
    assert len(files) == 1
    again = fit_zca(ds, 0.1, tmp_path)
    torch.testing.assert_close(again.transform_matrix, zca.transform_matrix)
    files[0].write_bytes(b"corrupt")  # a corrupt cache file is refitted, not used
    torch.testing.assert_close(fit_zca(ds, 0.1, tmp_path).transform_matrix, zca.transform_matrix)

    white = whiten_dataset(ds, zca)
    assert white.name == "tiny+zca" and white.train_x.shape == ds.train_x.shape and white.test_x.shape == ds.test_x.shape
    torch.testing.assert_close(zca.to_normalised(white.train_x, ds), ds.train_x, atol=1e-3, rtol=1e-3)


def test_bad_input():
    with pytest.raises(DDBenchError, match="at least 2 images"):
        ZCA.fit(torch.rand(1, 1, 4, 4))
    with pytest.raises(DDBenchError, match="eps"):
        ZCA.fit(torch.rand(5, 1, 4, 4), eps=0.0)
    zca = ZCA.fit(torch.rand(5, 1, 4, 4))
    with pytest.raises(DDBenchError, match=r"fitted on images of shape \(1, 4, 4\)"):
        zca.whiten(torch.rand(2, 3, 4, 4))
