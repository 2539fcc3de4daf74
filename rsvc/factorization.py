"""Concept extraction: ``A ~ U W`` with ``U >= 0`` (paper section 3.1, appendix B.1).

* :func:`nmf`: non-negative matrix factorisation (``U, W >= 0``) for
  non-negative activations (ReLU layers), fitted by HALS (hierarchical
  alternating least squares, Cichocki & Phan 2009): every column of ``U`` and
  row of ``W`` in turn is set to its exact constrained minimiser, so the
  objective never increases.
* :func:`semi_nmf`: Semi-NMF (Ding, Li & Jordan 2008: ``U >= 0``, ``W``
  free) for signed activations: ``W`` is the exact least-squares solution for
  the current ``U`` and ``U`` is updated by HALS sweeps, again monotone.

Both start from NNDSVD (Boutsidis & Gallopoulos 2008) on a seeded randomised
truncated SVD, run in the dtype of ``A`` (float32 stays float32 for the large
products), take several cheap HALS sweeps per large matrix product (Gillis &
Glineur 2012) and extrapolate between iterations (Ang & Gillis 2019) with a
safeguard that keeps the scheme monotone: an extrapolated iterate is accepted
only if it does not increase the objective, otherwise a plain step is taken.
They stop when the relative decrease of ``||A - U W||_F^2`` over one iteration
falls below ``tol``; a last W step then makes ``W`` optimal for the returned
``U``. Concepts are returned largest first (:func:`concept_order`). Deterministic for a given ``seed`` (it seeds the randomised SVD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Factorization", "choose_method", "concept_order", "nmf", "semi_nmf", "factorize"]

# HALS sweeps per large product (A W^T or U^T A): a sweep costs O((n + d) k^2),
# the product O(n d k), so a few sweeps per product are almost free and cut
# the number of iterations (Gillis & Glineur 2012).
_INNER_SWEEPS = 3
# extrapolation parameters (Ang & Gillis 2019): initial beta, growth of beta
# and of its cap after an accepted step, shrink factor after a rejected one
_BETA0, _GROW, _GROW_MAX, _SHRINK = 0.5, 1.1, 1.05, 1.5


@dataclass(frozen=True)
class Factorization:
    """Result of a concept factorisation ``A ~ U W``.

    U: (n, k) >= 0; W: (k, d) (>= 0 for NMF, signed for Semi-NMF), dtype of A;
    method: "nmf" | "seminmf"; rel_error: ``||A - U W||_F / ||A||_F`` of the
    returned pair; converged: the relative decrease fell below ``tol`` before
    ``max_iter``; objective: (n_iter,) ``||A - U W||_F^2`` after each iteration
    (non-increasing; the last entry is that of the returned pair).
    """

    U: np.ndarray
    W: np.ndarray
    method: str
    rel_error: float
    n_iter: int
    converged: bool
    objective: np.ndarray


def choose_method(A: np.ndarray, method: str = "auto") -> str:
    """``"auto"``: ``"nmf"`` if ``A.min() >= 0`` else ``"seminmf"``; explicit names pass through."""
    if method == "auto":
        return "nmf" if float(np.min(A)) >= 0 else "seminmf"
    if method not in ("nmf", "seminmf"):
        raise ValueError(f"unknown factorisation method {method!r}")
    return method


def factorize(
    A: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    seed: int = 0,
    max_iter: int = 200,
    tol: float = 1e-4,
    init: str = "nndsvd",
) -> Factorization:
    """Factorise ``A: (n, d)`` into ``U: (n, k) >= 0`` and ``W: (k, d)`` (method per :func:`choose_method`).

    ``init``: "nndsvd" (the default start, nearly independent of ``seed``) or "random" (seeded
    non-negative uniform entries: restarts that can land in other optima, for stability)."""
    fit = nmf if choose_method(A, method) == "nmf" else semi_nmf
    return fit(A, k, seed=seed, max_iter=max_iter, tol=tol, init=init)


def nmf(
    A: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 200, tol: float = 1e-4, init: str = "nndsvd"
) -> Factorization:
    """NMF of non-negative ``A: (n, d)`` by HALS: ``U: (n, k) >= 0``, ``W: (k, d) >= 0``."""
    A = _as_float(A)
    if A.size and A.min() < 0:
        raise ValueError("nmf needs non-negative A; use semi_nmf")
    U, W = _init(A, k, seed, init)
    return _fit(A, U, W, "nmf", max_iter, tol)


def semi_nmf(
    A: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 200, tol: float = 1e-4, init: str = "nndsvd"
) -> Factorization:
    """Semi-NMF of ``A: (n, d)``: ``U: (n, k) >= 0``, ``W: (k, d)`` free (Ding et al. 2008)."""
    A = _as_float(A)
    U, W = _init(A, k, seed, init)
    return _fit(A, U, W, "seminmf", max_iter, tol)


def concept_order(U: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Canonical concept order: by the norm of each rank-one term ``U[:, j] W[j]``, largest first.

    ``||U[:, j] W[j]||_F = ||U[:, j]|| ||W[j]||`` does not depend on how the
    scale is split between ``U`` and ``W``. Without it the order would be
    that of the initial singular vectors, which swap under tiny changes of
    ``A`` (e.g. bf16 activations) even when the fitted concepts do not.

    U: (n, k), W: (k, d) -> (k,) permutation
    """
    energy = np.linalg.norm(U, axis=0).astype(np.float64) * np.linalg.norm(W, axis=1).astype(np.float64)
    return np.argsort(-energy, kind="stable")


def _as_float(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"expected a 2-D activation matrix, got shape {A.shape}")
    dtype = A.dtype if A.dtype in (np.float32, np.float64) else np.float64
    return np.ascontiguousarray(A, dtype=dtype)


def _w_step(A: np.ndarray, U: np.ndarray, W: np.ndarray, method: str) -> np.ndarray:
    """W given U: HALS sweeps from W (NMF, >= 0) or exact least squares (Semi-NMF)."""
    UtU = U.T @ U
    UtA = U.T @ A
    if method == "seminmf":
        return _least_squares_rows(UtU, UtA)
    return _hals(W, UtA, UtU)


def _u_step(A: np.ndarray, U: np.ndarray, W: np.ndarray, norm_a2: float) -> tuple[np.ndarray, float]:
    """U >= 0 given W: HALS sweeps from U. Returns (U, ||A - U W||_F^2)."""
    AWt = A @ W.T
    WWt = W @ W.T
    U = _hals(U.T, AWt.T, WWt).T
    # ||A - U W||^2 = ||A||^2 - 2 <U, A W^T> + <U^T U, W W^T>
    obj = norm_a2 - 2.0 * float(np.vdot(U, AWt)) + float(np.vdot(U.T @ U, WWt))
    return U, max(obj, 0.0)


def _fit(A: np.ndarray, U: np.ndarray, W: np.ndarray, method: str, max_iter: int, tol: float) -> Factorization:
    """Alternate W and U steps with monotone extrapolation until the relative decrease is below tol.

    Extrapolation (Ang & Gillis 2019, heuristic with restarts): the step
    starts from ``U + beta (U - U_prev)`` and ``W_new + beta (W_new - W)``;
    the result is accepted only if the objective does not increase, otherwise
    ``beta`` shrinks and a plain (monotone) step is taken instead, so the
    recorded objective never increases.
    """
    norm_a2 = float(np.vdot(A, A))
    objective: list[float] = []
    converged = False
    U_prev = None
    beta, beta_max = _BETA0, 1.0
    while len(objective) < max_iter:
        if U_prev is not None and beta > 0:
            Ue = np.maximum(U + beta * (U - U_prev), 0)
            W_new = _w_step(A, Ue, W, method)
            We = W_new + beta * (W_new - W)
            if method == "nmf":
                np.maximum(We, 0, out=We)
            U_new, obj = _u_step(A, Ue, We, norm_a2)
            if obj <= objective[-1]:
                beta, beta_max = min(beta_max, _GROW * beta), min(1.0, _GROW_MAX * beta_max)
            else:  # restart: shrink beta, take the plain step
                beta, beta_max = beta / _SHRINK, beta
                U_new = None
        else:
            U_new = None
        if U_new is None:
            We = _w_step(A, U, W, method)
            U_new, obj = _u_step(A, U, We, norm_a2)
        U_prev, U, W = U, U_new, We
        objective.append(obj)
        if len(objective) > 1 and objective[-2] - obj <= tol * objective[-2]:
            converged = True
            break
    if objective:  # finish with W optimal for the returned U (can only lower the objective)
        UtU, UtA = U.T @ U, U.T @ A
        W = _least_squares_rows(UtU, UtA) if method == "seminmf" else _hals(W, UtA, UtU)
        obj = norm_a2 - 2.0 * float(np.vdot(W, UtA)) + float(np.vdot(UtU, W @ W.T))
        objective[-1] = min(objective[-1], max(obj, 0.0))
    resid = A - U @ W
    rel_error = float(np.sqrt(np.vdot(resid, resid) / norm_a2)) if norm_a2 > 0 else 0.0
    order = concept_order(U, W)
    return Factorization(
        U=np.ascontiguousarray(U[:, order]),
        W=np.ascontiguousarray(W[order]),
        method=method,
        rel_error=rel_error,
        n_iter=len(objective),
        converged=converged,
        objective=np.asarray(objective),
    )


def _hals(X: np.ndarray, B: np.ndarray, G: np.ndarray) -> np.ndarray:
    """HALS sweeps on ``min_{X >= 0} 1/2 <X, G X> - <B, X>``; returns a new (k, m) array.

    X: (k, m) start, B: (k, m), G: (k, k) symmetric PSD. In each sweep row
    ``j`` is replaced by its exact non-negative minimiser given the other
    rows, ``max(0, X_j + (B_j - G_j X) / G_jj)``, so the objective never
    increases. Rows with ``G_jj = 0`` stay as they are.
    """
    X = np.array(X, order="C")
    diag = np.diag(G)
    live = np.flatnonzero(diag > 0)
    inv = 1.0 / diag[live]
    Bs = B[live] * inv[:, None]  # scaled so that each update is X_j + Bs_j - Gs_j X
    Gs = G[live] * inv[:, None]
    for _ in range(_INNER_SWEEPS):
        for i, j in enumerate(live):
            row = X[j] + Bs[i] - Gs[i] @ X
            np.maximum(row, 0, out=X[j])
    return X


def _least_squares_rows(UtU: np.ndarray, UtA: np.ndarray) -> np.ndarray:
    """W = argmin ||A - U W||_F given ``U^T U``: (k, k) and ``U^T A``: (k, d) (minimum-norm if singular)."""
    try:
        L = np.linalg.cholesky(UtU.astype(np.float64))
        W = np.linalg.solve(L.T, np.linalg.solve(L, UtA.astype(np.float64)))
    except np.linalg.LinAlgError:
        W = np.linalg.lstsq(UtU.astype(np.float64), UtA.astype(np.float64), rcond=None)[0]
    return W.astype(UtA.dtype, copy=False)


def _randomized_svd(A: np.ndarray, k: int, seed: int, oversample: int = 10, n_power: int = 1):
    """Seeded randomised truncated SVD (Halko et al. 2011). Returns U: (n, k), s: (k,), Vt: (k, d)."""
    n, d = A.shape
    rank = min(k + oversample, n, d)
    rng = np.random.default_rng(seed)
    Y = A @ rng.standard_normal((d, rank)).astype(A.dtype)
    Q, _ = np.linalg.qr(Y)
    for _ in range(n_power):
        Z, _ = np.linalg.qr(A.T @ Q)
        Q, _ = np.linalg.qr(A @ Z)
    Ub, s, Vt = np.linalg.svd(Q.T @ A, full_matrices=False)
    return Q @ Ub[:, :k], s[:k], Vt[:k]


def _init(A: np.ndarray, k: int, seed: int, init: str) -> tuple[np.ndarray, np.ndarray]:
    if init == "nndsvd":
        return _nndsvd(A, k, seed)
    if init != "random":
        raise ValueError(f"init must be 'nndsvd' or 'random', got {init!r}")
    rng = np.random.default_rng([seed, 7])
    level = np.sqrt(max(float(np.abs(A).mean()), 1e-12) / k)  # scikit-learn's scale of a random start
    n, d = A.shape
    return (level * rng.random((n, k))).astype(A.dtype), (level * rng.random((k, d))).astype(A.dtype)


def _nndsvd(A: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """NNDSVD initialisation: U0: (n, k) >= 0, W0: (k, d) >= 0 from the top singular triplets."""
    n, d = A.shape
    Us, s, Vt = _randomized_svd(A, k, seed)
    U = np.zeros((n, k), dtype=A.dtype)
    W = np.zeros((k, d), dtype=A.dtype)
    for j in range(len(s)):
        x, y = Us[:, j], Vt[j]
        # the sign of a singular pair is arbitrary: use the dominant non-negative part
        xp, xn, yp, yn = np.maximum(x, 0), np.maximum(-x, 0), np.maximum(y, 0), np.maximum(-y, 0)
        mp = np.linalg.norm(xp) * np.linalg.norm(yp)
        mn = np.linalg.norm(xn) * np.linalg.norm(yn)
        u, v, sigma = (xp, yp, mp) if mp >= mn else (xn, yn, mn)
        if sigma <= 0:
            continue
        scale = np.sqrt(s[j] * sigma)
        U[:, j] = scale * u / np.linalg.norm(u)
        W[j] = scale * v / np.linalg.norm(v)
    # components the SVD could not seed (k > rank): small seeded positive values
    empty = ~(U.any(axis=0) & W.any(axis=1))
    if empty.any():
        rng = np.random.default_rng(seed + 1)
        level = np.sqrt(max(float(np.abs(A).mean()), 1e-12) / k)
        U[:, empty] = level * rng.random((n, int(empty.sum())))
        W[empty] = level * rng.random((int(empty.sum()), d))
    return U, W
