"""Shared numerics: the short-axis reductions equal torch's, value and gradient."""

from __future__ import annotations

import pytest
import torch

from zoo.numerics import logsumexp_short, softmax_short


@pytest.mark.parametrize("shape,dim", [((7, 5, 3), -1), ((7, 3, 5), -2), ((4, 3), 0), ((6, 40), -1), ((3,), -1)])
def test_short_axis_reductions_equal_torchs(shape, dim):
    x = (10 * torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))).requires_grad_()
    weights = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for ours, torchs in ((logsumexp_short, torch.logsumexp), (softmax_short, torch.softmax)):
        value, expected = ours(x, dim), torchs(x, dim)
        torch.testing.assert_close(value, expected, atol=1e-12, rtol=1e-12)
        # Reduce the outputs by one set of weights, so the gradients differ where they are wrong.
        trailing = weights.sum(dim) if value.shape != x.shape else weights
        (grad,) = torch.autograd.grad((value * trailing).sum(), x)
        (expected_grad,) = torch.autograd.grad((expected * trailing).sum(), x)
        torch.testing.assert_close(grad, expected_grad, atol=1e-12, rtol=1e-12)
