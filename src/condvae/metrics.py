"""The evaluation metrics, defined once.

- ``Posterior.c_elbo``: E_q[log p(x_o, z) - log q(z)] <= log p(x_o) (higher is better) and
  ``Posterior.query_log_likelihood``: log (1/M) sum_m p(y_true | z_m), z_m ~ q (Wu, Domke &
  Sanner, "Conditional Inference in Pre-trained Variational Autoencoders via Cross-coding", 2018).
- ``exact_query_log_likelihood``: its ceiling log p(y_true | x_o) = log p(x) - log p(x_o):
  closed form for the linear-Gaussian model, the grid for 2-d latents, else an
  importance-sampling estimate (log p(x) with the encoder on the full item as proposal,
  log p(x_o) with a fitted mixture cross-coder as proposal).
- ``mmd``: squared maximum mean discrepancy between two sample sets per query, RBF kernel
  with the median-heuristic bandwidth (Gretton et al. 2012), unbiased estimator.
- ``coverage``: min over K completions of the root-mean-square distance to the true image on
  the query dims (the analogue of the LPIPS-GT of Harvey, Naderiparizi & Wood, "Conditional
  Image Generation by Conditioning Variational Auto-Encoders", 2022, without a downloaded network):
  low when some completion is close to the truth, i.e. when the method covers it.
- ``diversity``: mean RMS distance between pairs of completions on the query dims.
- ``frechet_distance``: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) between Gaussians
  fitted to two feature sets (Heusel et al. 2017), features from condvae's own classifier.
"""

from __future__ import annotations

import warnings
from typing import cast

import numpy as np
import torch

from condvae.conditioning import condition
from condvae.conditioning.grid import Grid
from condvae.errors import CondVAEError
from condvae.evaluate import iw_log_likelihood
from condvae.models import VAE, LinearGaussianVAE


def exact_query_log_likelihood(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, particles: int = 20000, grid_size: int = 200
) -> torch.Tensor:
    """log p(y_true | x_o) per query: exact where possible, else a large IS estimate."""
    if isinstance(vae, LinearGaussianVAE):
        with torch.no_grad():
            return vae.query_log_likelihood(x.to(vae.device), mask.to(vae.device))
    if vae.latent_dim == 2:
        grid = cast(Grid, condition(vae, x, mask, method="grid", size=grid_size))
        return grid.exact_query_log_likelihood(x)
    x = x.to(vae.device)
    log_px = iw_log_likelihood(vae, x, particles)  # encoder q(z | x) on the full item (no grad)
    # log p(x_o): the encoder on zero-filled evidence is a poor proposal (it reads the zeros as
    # observed); a fitted mixture cross-coder covers p(z | x_o) far better (higher ESS).
    proposal = condition(vae, x, mask, method="mixture", steps=300)
    evidence = condition(vae, x, mask, method="importance", particles=particles, proposal=proposal)
    return log_px - evidence.log_evidence()


def mmd(a: torch.Tensor, b: torch.Tensor, bandwidth: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased MMD^2 per query between samples ``a`` [n, B, d] and ``b`` [m, B, d], ``[B]``.

    RBF kernel k(u, v) = exp(-|u - v|^2 / (2 h^2)); h is the median pairwise distance of the
    pooled samples of each query unless ``bandwidth`` [B] is given.
    """
    if a.dim() != 3 or b.dim() != 3 or a.shape[1:] != b.shape[1:]:
        raise CondVAEError(f"mmd: expected [n, B, d] and [m, B, d], got {list(a.shape)} and {list(b.shape)}")
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise CondVAEError("mmd: needs at least 2 samples in each set")
    pooled = torch.cat([a, b]).transpose(0, 1)  # [B, n+m, d]
    dist2 = torch.cdist(pooled, pooled) ** 2
    if bandwidth is None:
        off = dist2[:, ~torch.eye(n + m, dtype=torch.bool, device=a.device)]
        bandwidth = off.median(dim=1).values.clamp_min(1e-12).sqrt()
    kernel = torch.exp(-dist2 / (2 * bandwidth[:, None, None] ** 2))
    k_aa, k_bb, k_ab = kernel[:, :n, :n], kernel[:, n:, n:], kernel[:, :n, n:]
    sum_aa = (k_aa.sum((1, 2)) - k_aa.diagonal(dim1=1, dim2=2).sum(1)) / (n * (n - 1))
    sum_bb = (k_bb.sum((1, 2)) - k_bb.diagonal(dim1=1, dim2=2).sum(1)) / (m * (m - 1))
    return sum_aa + sum_bb - 2 * k_ab.mean((1, 2))


def _query_rms(a: torch.Tensor, b: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """RMS of a - b over the query dims; a [..., B, D], b [..., B, D], query [B, D] (float)."""
    return (((a - b) ** 2 * query).sum(-1) / query.sum(-1).clamp_min(1)).sqrt()


def coverage(completions: torch.Tensor, x_true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """min_k RMS(completion_k - x_true) over the unobserved dims, ``[B]``.

    ``completions`` [K, B, *data_shape], ``x_true`` [B, *data_shape], ``mask`` True = observed.
    """
    if completions.dim() != x_true.dim() + 1 or completions.shape[1:] != x_true.shape:
        raise CondVAEError(
            f"completions: expected shape [K, {', '.join(map(str, x_true.shape))}], "
            f"got {list(completions.shape)}"
        )
    query = (~mask.bool()).flatten(1).float()
    return _query_rms(completions.flatten(2), x_true.flatten(1), query).min(0).values


def diversity(completions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean RMS distance between the K(K-1)/2 pairs of completions on the unobserved dims, ``[B]``."""
    k = completions.shape[0]
    if k < 2:
        raise CondVAEError(f"completions: diversity needs at least 2 completions per query, got {k}")
    query = (~mask.bool()).flatten(1).float()  # [B, D]
    y = completions.flatten(2).transpose(0, 1) * query.sqrt()[:, None]  # [B, K, D]
    dist = torch.cdist(y, y) / query.sum(-1).clamp_min(1).sqrt()[:, None, None]
    return dist.sum((1, 2)) / (k * (k - 1))


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, F] and [M, F]."""
    from scipy import linalg

    if features_a.shape[0] < 2 or features_b.shape[0] < 2:
        raise CondVAEError("features: the Fréchet distance needs at least 2 items per set")
    a, b = (f.detach().double().cpu().numpy() for f in (features_a, features_b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # a singular product (fewer items than features) is expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(root):
        root = root.real  # rounding can leave a tiny imaginary part
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
