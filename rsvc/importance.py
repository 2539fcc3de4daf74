"""Concept importance by concept integrated gradients (paper appendix B.1.1, eq. 7).

The classifier head applied to a concept reconstruction is linear up to the
target function: ``z(r) = (r W) H^T + b = r V + b`` with ``V = W H^T``: (k, C).
For the class ``c`` the target ``h`` is

* ``"probability"``: ``softmax(z)_c`` (the paper's text, default);
  ``grad_r h = p_c (V[:, c] - V p)``;
* ``"log_probability"``: ``log softmax(z)_c``; ``grad_r h = V[:, c] - V p``;
* ``"logit"``: ``z_c``; ``grad_r h = V[:, c]`` (constant, so the integral is
  exact: ``IG_i = r_i V[i, c]``).

Integrated gradients with baseline 0: ``IG_i(r) = r_i * int_0^1 d h(a r) / d r_i da``,
evaluated with the trapezoidal rule on ``steps`` equally spaced points
``a = 0, 1/(steps-1), ..., 1`` (endpoints included, as in xplique's
IntegratedGradients that the paper uses). The attributions satisfy
completeness, ``sum_i IG_i = h(r) - h(0)``, up to the O(steps^-2) error of the
rule. All rows and steps are evaluated in batched matrix products.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsvc.formats import Skipped, is_skipped, read_concepts, read_head
from rsvc.settings import ImportanceSettings
from rsvc.specs import PRE_LOGITS

__all__ = ["concept_integrated_gradients", "concept_importance", "class_importance", "importance_job"]

_TARGETS = ("probability", "logit", "log_probability")
_CACHE_POINTS = 512  # (row, step) points per chunk that keep the (points, C) logits in cache


def concept_integrated_gradients(
    U: np.ndarray,
    W: np.ndarray,
    head_weight: np.ndarray,
    head_bias: np.ndarray,
    class_index: int,
    *,
    target: str = "probability",
    steps: int = 30,
    batch_rows: int = 4096,
) -> np.ndarray:
    """Concept integrated gradients of class ``class_index``.

    U: (n, k) coefficients, W: (k, d) concept basis, head_weight: (C, d),
    head_bias: (C,) -> attributions (n, k). ``batch_rows`` bounds memory: at
    most that many (row, step) points, i.e. ``batch_rows x C`` logits, are
    held at once (fewer if that is faster). Computed in float64 (float32 if
    every input is float32).
    """
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {_TARGETS}, got {target!r}")
    if steps < 2:
        raise ValueError("the trapezoidal rule needs steps >= 2")
    U, W, head_weight, head_bias = (np.asarray(x) for x in (U, W, head_weight, head_bias))
    dtype = np.result_type(U, W, head_weight, head_bias, np.float32)
    U = U.astype(dtype, copy=False)
    V = W.astype(dtype, copy=False) @ head_weight.astype(dtype, copy=False).T  # (k, C)
    bias = head_bias.astype(dtype, copy=False)
    n, k = U.shape
    alphas = np.linspace(0.0, 1.0, steps, dtype=dtype)
    weights = np.full(steps, 1.0 / (steps - 1), dtype=dtype)  # trapezoid weights, sum 1
    weights[[0, -1]] /= 2
    Vc = V[:, class_index]
    rows_per_chunk = max(1, min(batch_rows, _CACHE_POINTS) // steps)
    out = np.empty((n, k), dtype=dtype)
    for start in range(0, n, rows_per_chunk):
        u = U[start : start + rows_per_chunk]  # (m, k)
        if target == "logit":  # constant gradient: the rule is exact
            grad = np.broadcast_to(Vc, (steps, len(u), k))
        else:
            p = alphas[:, None, None] * (u @ V)[None] + bias  # logits (steps, m, C)
            p -= p.max(axis=-1, keepdims=True)
            np.exp(p, out=p)
            p /= p.sum(axis=-1, keepdims=True)  # softmax
            grad = Vc - p @ V.T  # gradient of log p_c, (steps, m, k)
            if target == "probability":
                grad *= p[..., class_index, None]
        out[start : start + rows_per_chunk] = u * np.tensordot(weights, grad, axes=1)
    return out


def concept_importance(attributions: np.ndarray) -> np.ndarray:
    """Importance of each concept: mean attribution over rows. (n, k) -> (k,)."""
    return np.asarray(attributions).mean(axis=0)


def class_importance(
    U: np.ndarray,
    W: np.ndarray,
    head: tuple[np.ndarray, np.ndarray],
    class_index: int,
    settings: ImportanceSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Concept importance at pre_logits for the output ``class_index`` of the head ``(weight (C, d), bias (C,))``
    on the coefficients ``U: (n, k)`` of concepts ``W: (k, d)``: ``(importance (k,), attributions (n, k))``."""
    attr = concept_integrated_gradients(U, W, *head, class_index, target=settings.target, steps=settings.steps)
    return concept_importance(attr), attr


def importance_job(
    concepts: str | Path, head: str | Path, class_index: int, settings: ImportanceSettings
) -> tuple[np.ndarray, np.ndarray] | Skipped:
    """Concept importance at pre_logits for the class output on the model's own concept images
    (:func:`class_importance`), or :class:`rsvc.formats.Skipped` when the class has no concepts."""
    skipped, reason = is_skipped(concepts)
    if skipped:
        return Skipped(reason)
    c = read_concepts(concepts)
    return class_importance(c.U[PRE_LOGITS], c.W[PRE_LOGITS], read_head(head), class_index, settings)
