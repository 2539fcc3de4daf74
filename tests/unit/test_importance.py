"""Concept integrated gradients: closed form, completeness, gradients against torch autograd."""

import numpy as np
import pytest
import torch

from rsvc.importance import concept_importance, concept_integrated_gradients


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    n, k, d, C = 40, 6, 30, 12
    U = rng.gamma(1.0, 1.0, (n, k))
    W = rng.random((k, d))
    H = rng.standard_normal((C, d)) / np.sqrt(d)
    b = rng.standard_normal(C)
    return U, W, H, b


def h(U, W, H, b, c, target):
    """The target function on coefficient rows, numpy."""
    z = U @ W @ H.T + b
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    return {"logit": z[:, c], "log_probability": logp[:, c], "probability": np.exp(logp[:, c])}[target]


def test_logit_target_is_the_closed_form(problem):
    U, W, H, b = problem
    ig = concept_integrated_gradients(U, W, H, b, 3, target="logit")
    np.testing.assert_allclose(ig, U * (W @ H[3]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("target", ["probability", "log_probability", "logit"])
def test_matches_torch_autograd(problem, target):
    """Same trapezoidal rule, gradients from torch autograd instead of the analytic formula."""
    U, W, H, b = problem
    c, steps = 5, 30
    r = torch.tensor(U)
    alphas = torch.linspace(0, 1, steps, dtype=torch.float64)
    x = (alphas[:, None, None] * r[None]).requires_grad_(True)  # (steps, n, k)
    z = x @ torch.tensor(W) @ torch.tensor(H).T + torch.tensor(b)
    out = {
        "logit": z[..., c],
        "log_probability": torch.log_softmax(z, -1)[..., c],
        "probability": torch.softmax(z, -1)[..., c],
    }[target]
    (grad,) = torch.autograd.grad(out.sum(), x)
    weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
    weights[[0, -1]] /= 2
    expected = (r * torch.einsum("s,snk->nk", weights, grad)).numpy()
    ig = concept_integrated_gradients(U, W, H, b, c, target=target, steps=steps, batch_rows=7 * steps)
    np.testing.assert_allclose(ig, expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("target", ["probability", "log_probability"])
def test_completeness(problem, target):
    """sum_i IG_i = h(r) - h(0), up to the O(steps^-2) error of the trapezoidal rule."""
    U, W, H, b = problem
    c = 2
    gap = h(U, W, H, b, c, target) - h(np.zeros_like(U), W, H, b, c, target)
    err30 = np.abs(concept_integrated_gradients(U, W, H, b, c, target=target).sum(1) - gap).max()
    err300 = np.abs(concept_integrated_gradients(U, W, H, b, c, target=target, steps=300).sum(1) - gap).max()
    assert err30 < 1e-2 * np.abs(gap).max()
    assert err300 < err30 / 50  # second-order convergence
    assert err300 < 1e-4 * np.abs(gap).max()


def test_float32_and_importance(problem):
    U, W, H, b = problem
    ig64 = concept_integrated_gradients(U, W, H, b, 1)
    ig32 = concept_integrated_gradients(*(a.astype(np.float32) for a in (U, W, H, b)), 1)
    assert ig32.dtype == np.float32
    np.testing.assert_allclose(ig32, ig64, atol=1e-5 * np.abs(ig64).max())
    np.testing.assert_allclose(concept_importance(ig64), ig64.mean(0))
    with pytest.raises(ValueError):
        concept_integrated_gradients(U, W, H, b, 1, target="softmax")
