"""Closed forms of linear-Gaussian latent-variable models (factor analysis and PPCA).

- :func:`factor_posterior`: Gaussian conditioning, p(f_n | x_n) for x_n = loc + W f_n + eps,
  f_n ~ Normal(0, I), eps ~ Normal(0, Psi).
- :func:`ppca_maximum_likelihood`: the closed-form maximum-likelihood PPCA fit.
- :func:`lower_triangular_form`: the rotation of a loading matrix that the zoo's factor
  models sample (W W^T is unchanged by it).

References: Bishop (2006) *Pattern Recognition and Machine Learning* §12.2; Tipping &
Bishop (1999) JRSS B 61:611.
"""

from __future__ import annotations

from typing import Any

import torch

from zoo.validation import validate_data

__all__ = ["factor_posterior", "lower_triangular_form", "ppca_maximum_likelihood"]


def lower_triangular_form(loadings: torch.Tensor) -> torch.Tensor:
    """The rotation W R (R orthogonal) of a (D, k) W that is lower-triangular with a
    non-negative diagonal: W W^T is unchanged (LQ decomposition via QR of W^T)."""
    _, r = torch.linalg.qr(loadings.transpose(-1, -2))  # W^T = Q R, so W Q = R^T
    lower = r.transpose(-1, -2)
    signs = torch.where(lower.diagonal(dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(lower.dtype)
    return lower * signs.unsqueeze(-2)


def factor_posterior(data: torch.Tensor, loc: torch.Tensor, loadings: torch.Tensor,
                     noise_variances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact p(f_n | x_n, theta) = Normal(mean_n, cov): mean (N, k) and cov (k, k), with
    M = I + W^T Psi^{-1} W, mean = M^{-1} W^T Psi^{-1} (x - loc), cov = M^{-1}."""
    k = loadings.shape[-1]
    scaled = loadings / noise_variances.unsqueeze(-1)  # Psi^{-1} W, (D, k)
    precision = torch.eye(k, dtype=loadings.dtype) + loadings.T @ scaled
    cholesky = torch.linalg.cholesky(precision)
    covariance = torch.cholesky_inverse(cholesky)
    mean = (data - loc) @ scaled @ covariance
    return mean, covariance


def ppca_maximum_likelihood(data: Any, num_factors: int) -> dict[str, torch.Tensor]:
    """Closed-form maximum-likelihood PPCA (Tipping & Bishop 1999, eqs. 7-8).

    With the sample covariance S = (1/N) sum_n (x_n - xbar)(x_n - xbar)^T and its
    eigenvalues l_1 >= ... >= l_D (eigenvectors U): loc = xbar,
    noise^2 = mean(l_{k+1..D}), W = U_k (L_k - noise^2 I)^{1/2} R. R is chosen to make W
    lower-triangular with a non-negative diagonal, the form the zoo's models sample.
    Returns float64 ``loc`` (D,), ``loadings`` (D, k), ``noise`` (the scalar noise sd).
    """
    x = validate_data(data, name="ppca_maximum_likelihood", ndim=(2,))
    dim = x.shape[1]
    if not isinstance(num_factors, int) or not 1 <= num_factors < dim:
        raise ValueError(f"ppca_maximum_likelihood: num_factors must be an integer in 1..{dim - 1} "
                         f"(fewer factors than the data's {dim} columns), got {num_factors!r}")
    loc = x.mean(0)
    centred = x - loc
    covariance = centred.T @ centred / x.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    noise_variance = eigenvalues[num_factors:].mean()
    stretch = (eigenvalues[:num_factors] - noise_variance).clamp_min(0).sqrt()
    loadings = lower_triangular_form(eigenvectors[:, :num_factors] * stretch)
    return {"loc": loc, "loadings": loadings, "noise": noise_variance.sqrt()}
