"""Exact non-negative least squares for many right-hand sides at once.

RSVC re-fits concept coefficients on new patches with a fixed concept basis:
``U = argmin_{U >= 0} ||A - U W||_F``, one independent NNLS problem per row of
``A`` (paper eq. 5). :func:`nnls_batched` solves all rows together.

Reduction. With the thin QR factorisation ``W^T = Q R`` (``Q``: (d, r)
orthonormal, ``R``: (r, k), ``r = min(d, k)``) every row problem
``min ||a - W^T x||`` equals ``min ||Q^T a - R x||`` up to a constant, so
after one (n, d) x (d, r) product each row is a tiny r x k NNLS problem that
shares its matrix ``R`` with all other rows. Working with ``R`` (not with the
Gram matrix ``W W^T``) keeps the conditioning of ``W``, as scipy's QR-based
solver does.

Passive-set solves. The least-squares solution on a passive set ``P`` is
``z = M_P b`` with ``M_P`` the pseudo-inverse of ``R[:, P]`` embedded in a
(k, r) matrix (zero rows outside ``P``). Rows share few distinct passive sets,
so ``M_P`` is computed once per set (cached by bit mask; from the normal
equations ``G[P, P]^{-1} R[:, P]^T`` when ``W`` is well conditioned, else by
SVD) and applied to all rows with one batched product.

Paths.

* If ``R`` has full column rank (relative smallest singular value above
  ``_DEPENDENCE_TOL``) the minimiser is unique and is found by block principal
  pivoting (Kim & Park 2011; Judice & Pires 1994: exchange every infeasible
  index at once, Murty's single-index rule as a backup against cycling),
  typically 2-4 solves per row. Rows that do not settle within ``max_iter``
  solves go to the second path.
* Otherwise (duplicated or linearly dependent concepts, ``d < k``) the
  minimiser is not unique and the Lawson-Hanson active-set path of
  ``scipy.optimize.nnls`` is followed with all rows in lockstep and scipy's
  rule choices: the entering index is the largest positive dual coefficient,
  ties broken by scipy's internal index order (swaps on entry, shifts on
  removal are replicated); a candidate linearly dependent on the passive
  columns is rejected and the next one tried; the step back picks the first
  blocking index in that order and then drops every passive coefficient that
  became non-positive. Where scipy's choice is decided by round-off (a tie
  that is exact only in real arithmetic, e.g. ``w_2 = w_0 - w_1``) another
  minimiser with the same objective can be returned.

Final check. Both paths test the KKT conditions against ``tol * ||W_j|| * ||a||``, which is not
enough for an ill-conditioned basis: a zero coefficient whose column lies almost in the span of
the passive ones can have a dual far below that and still lower the objective by a large part
(dual^2 / distance^2). Every row whose zero coefficients could still gain more than ``_GAIN_TOL``
of its objective, counting a dual indistinguishable from round-off as possibly positive, and
every row that reached ``max_iter``, is solved again by ``scipy.optimize.nnls`` on ``(R, b)``,
and the better solution is kept (``_refine``). On well-conditioned bases almost no row qualifies.
Tested at cond(W) = 1e3, 1e6, 1e9 against scipy and a 40-digit brute-force minimum.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["nnls_batched"]

# Relative residual below which a column counts as linearly dependent on the
# passive columns: ||R_j - proj_P R_j|| <= _DEPENDENCE_TOL * ||R_j||.
_ROUNDOFF = 1e-12
_DEPENDENCE_TOL = 1e-10
# Passive-set pseudo-inverses come from the normal equations when the basis
# is this well conditioned (relative error ~ cond^2 * eps <= 1e-8), else from
# an SVD.
_NORMAL_EQUATIONS_MAX_COND = 1e4
# Relative gap under which two dual coefficients count as a tie.
_TIE_TOL = 1e-12
# Final check (_refine): a row is solved again when a zero coefficient's dual exceeds round-off
# (relative to ||W_j|| ||a||) and could lower the objective by more than this fraction of it.
_ROUNDOFF_DUAL = 1e-14
_GAIN_TOL = 1e-11


class _PassiveSolver:
    """Least squares on passive sets for the reduced matrix R: (r, k).

    ``store[slot]`` is the (k, r) matrix ``M_P`` with ``M_P b = argmin_z
    ||b - R z||`` subject to ``z = 0`` outside ``P``.
    """

    def __init__(self, R: np.ndarray, cond: float) -> None:
        self.R = R
        self.r, self.k = r, k = R.shape
        # normal equations (one batched inverse) are accurate to ~cond^2 * eps
        self.normal_ok = cond <= _NORMAL_EQUATIONS_MAX_COND
        self.G = R.T @ R
        self.bits = np.int64(1) << np.arange(min(k, 62), dtype=np.int64)
        # mask -> slot: a dense table for small k, a dict otherwise
        self.table = np.full(1 << k, -1, dtype=np.intp) if k <= 16 else None
        self.slots: dict = {}
        self.store = np.empty((64, k, r))
        self.perp2 = np.full((64, k), np.nan)  # ||R_j - proj_P R_j||^2 per slot and column, on demand
        self.size = 0

    def _add(self, masks: np.ndarray) -> np.ndarray:
        """Append ``M_P`` for ``masks`` (u, k) bool; return their slots."""
        Rm = self.R[None] * masks[:, None, :]  # (u, r, k), columns outside P zeroed
        if self.normal_ok:
            # M_P = G[P, P]^{-1} R[:, P]^T; the inverse is taken of G with the
            # rows/columns outside P replaced by the identity
            G = self.G * (masks[:, :, None] & masks[:, None, :])
            G[:, np.arange(self.k), np.arange(self.k)] += ~masks
            M = np.linalg.inv(G) @ np.swapaxes(Rm, 1, 2)
        else:
            M = np.linalg.pinv(Rm) * masks[:, :, None]  # SVD; rows outside P exactly 0
        need = self.size + len(masks)
        if need > len(self.store):
            size = max(need, 2 * len(self.store))
            grown = np.empty((size, self.k, self.r))
            grown[: self.size] = self.store[: self.size]
            self.store = grown
            grown2 = np.full((size, self.k), np.nan)
            grown2[: self.size] = self.perp2[: self.size]
            self.perp2 = grown2
        self.store[self.size : need] = M
        slots = np.arange(self.size, need)
        self.size = need
        return slots

    def slots_of(self, P: np.ndarray) -> np.ndarray:
        """Slot of each row's passive set. P: (m, k) bool -> (m,) int."""
        if self.table is not None:
            keys = P.astype(np.int64) @ self.bits
            slots = self.table[keys]
            missing = slots < 0
            if missing.any():
                ukeys, first = np.unique(keys[missing], return_index=True)
                self.table[ukeys] = self._add(P[np.flatnonzero(missing)[first]])
                slots = self.table[keys]
            return slots
        uniq, first, inverse = np.unique(P, axis=0, return_index=True, return_inverse=True)
        ukeys = [row.tobytes() for row in uniq]
        new = [i for i, key in enumerate(ukeys) if key not in self.slots]
        if new:
            for i, s in zip(new, self._add(P[first[new]])):
                self.slots[ukeys[i]] = s
        slot_u = np.fromiter((self.slots[key] for key in ukeys), dtype=np.intp, count=len(ukeys))
        return slot_u[inverse.reshape(-1)]

    def perp2_of(self, slots: np.ndarray) -> np.ndarray:
        """Squared distance of every column to span(R[:, P]) for each slot's P: (m,) -> (m, k); 0 inside P."""
        todo = np.unique(slots[np.isnan(self.perp2[slots, 0])])
        if todo.size:
            M = self.store[todo]  # (u, k, r)
            E = self.R[None] - self.R[None] @ (M @ self.R)  # (u, r, k)
            self.perp2[todo] = np.einsum("urk,urk->uk", E, E)
        return self.perp2[slots]

    def solve(self, b: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """b: (m, r), P: (m, k) bool -> (z (m, k), zero outside P; slots (m,))."""
        slots = self.slots_of(P)
        return np.einsum("mkr,mr->mk", self.store[slots], b), slots


def nnls_batched(A: np.ndarray, W: np.ndarray, *, max_iter: int | None = None, tol: float | None = None) -> np.ndarray:
    """U = argmin_{U>=0} ||A - U W||_F solved exactly per row.  A: (n, d), W: (k, d) -> U: (n, k).

    Row ``r`` of the result equals ``scipy.optimize.nnls(W.T, A[r])[0]``
    (see the module docstring for the algorithm); all rows are solved at once.

    Parameters
    ----------
    A : (n, d) activations (float32 or float64; float32 rows are projected in
        float32, everything after that runs in float64).
    W : (k, d) concept basis (any sign; rows may be linearly dependent).
    max_iter : limit on passive-set solves per row and path; default ``3 * k``
        (scipy's default). A row that exhausts it is solved by ``scipy.optimize.nnls``;
        if scipy fails too, it keeps its last feasible iterate and a ``RuntimeWarning``
        is issued.
    tol : relative KKT tolerance. A zero coefficient ``j`` counts as optimal
        while ``-grad_j <= tol * ||W_j|| * ||A_r||`` and a passive one while
        ``x_j >= -tol * ||A_r|| / ||W_j||`` (then clipped to 0). Default 1e-10,
        above float64 round-off (scipy's own threshold is 0).

    Returns
    -------
    U : (n, k) non-negative coefficients, float64 (float32 if A and W are
        float32 or narrower).
    """
    A = np.asarray(A)
    W = np.asarray(W)
    if A.ndim != 2 or W.ndim != 2 or A.shape[1] != W.shape[1]:
        raise ValueError(f"expected A (n, d) and W (k, d), got {A.shape} and {W.shape}")
    out_dtype = np.result_type(A.dtype, W.dtype, np.float32)
    n, d = A.shape
    k = W.shape[0]
    if n == 0 or k == 0:
        return np.zeros((n, k), dtype=out_dtype)
    max_iter = 3 * k if max_iter is None else int(max_iter)
    tol = 1e-10 if tol is None else float(tol)

    Q, R = np.linalg.qr(W.astype(np.float64).T)  # (d, r), (r, k)
    if A.dtype == np.float32:
        b = (A @ Q.astype(np.float32)).astype(np.float64)
    else:
        b = A.astype(np.float64, copy=False) @ Q  # (n, r)
    row_norm = np.sqrt(np.einsum("nd,nd->n", A, A, dtype=np.float64))
    col_norm = np.linalg.norm(R, axis=0)  # ||W_j||
    sv = np.linalg.svd(R, compute_uv=False)
    unique = R.shape[0] == k and sv[-1] > _DEPENDENCE_TOL * col_norm.max()
    solver = _PassiveSolver(R, cond=sv[0] / sv[-1] if unique else np.inf)
    x = np.zeros((n, k))
    dual = np.empty((n, k))  # R^T (b - R x) at the solution
    todo = np.arange(n)
    if unique:
        y_tol = tol * row_norm[:, None] * col_norm[None, :]
        x_tol = tol * row_norm[:, None] / col_norm[None, :]
        todo = _block_pivoting(x, dual, b, R, solver, y_tol, x_tol, max_iter)
    failed = np.zeros(n, dtype=bool)
    if todo.size:
        grad_tol = tol * row_norm[todo, None] * col_norm[None, :]
        tie_tol = _TIE_TOL * row_norm[todo] * col_norm.max()
        x[todo], failed[todo] = _lawson_hanson(b[todo], R, solver, grad_tol, tie_tol, max_iter)
        dual[todo] = (b[todo] - x[todo] @ R.T) @ R
    failed = _refine(x, dual, b, R, solver, row_norm, col_norm, sv[0], failed)
    if failed.any():
        warnings.warn(
            f"nnls_batched: {int(failed.sum())} of {n} rows reached max_iter={max_iter} and scipy's iteration "
            "limit; their last feasible iterate is returned",
            RuntimeWarning,
            stacklevel=2,
        )
    # Round-off cleanup: a coefficient whose term x_j W_j is below 1e-12 of ||a|| is an exact
    # zero of the problem (e.g. a concept absent from every patch); leaving ~1e-16 there would
    # make a constant column look non-constant and give noise correlations instead of NaN.
    x[x * col_norm[None, :] <= _ROUNDOFF * row_norm[:, None]] = 0.0
    return x.astype(out_dtype, copy=False)


def _refine(x, y, b, R, solver, row_norm, col_norm, norm_R, failed) -> np.ndarray:
    """Final check of every row's optimality by what its zero coefficients could still gain; fills ``x``.

    The KKT tests of both paths compare a dual coefficient with ``tol * ||W_j|| * ||a||``. With an
    ill-conditioned basis that is not enough: a zero index ``j`` whose column lies almost in the span
    of the passive columns (distance ``delta_j``) can carry a dual ``y_j`` far below that threshold
    and still lower the objective by ``y_j^2 / delta_j^2``, a large part of it (seen at cond(W) = 1e6:
    coefficients 1e-2 off, the objective 7x too large). Rows where that possible gain exceeds
    ``_GAIN_TOL`` of their objective are solved again by ``scipy.optimize.nnls`` on the reduced
    problem ``(R, b)`` (the same minimiser), and the better of the two solutions is kept; so are
    the rows that reached ``max_iter`` (``failed``). On well-conditioned bases no row qualifies
    and this costs one gradient evaluation. Returns the rows that scipy could not solve either
    among the ``failed`` ones.
    """
    n, k = x.shape
    P = x > 0
    # y: minus the gradient, > 0 where raising x_j lowers the objective. Its round-off: the
    # residual is a difference of terms as large as ||a|| and ||R|| ||x||.
    noise = _ROUNDOFF_DUAL * col_norm[None, :] * (row_norm + norm_R * np.linalg.norm(x, axis=1))[:, None]
    live = ~P & (y > -noise)  # may lower the objective, or cannot be told apart from 0
    rows = np.flatnonzero(live.any(axis=1) & ~failed)
    resid = b[rows] - x[rows] @ R.T
    f = np.zeros(n)
    f[rows] = np.einsum("mr,mr->m", resid, resid)
    perp2 = solver.perp2_of(solver.slots_of(P[rows]))  # (m, k)
    # a column in the span of the passive ones (duplicated, dependent) can gain nothing
    live_r = live[rows] & (perp2 > np.square(_DEPENDENCE_TOL * col_norm)[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(live_r, np.square(np.maximum(y[rows], noise[rows])) / perp2, 0.0)
    rows = rows[gain.max(axis=1, initial=0.0) > _GAIN_TOL * f[rows] + _ROUNDOFF**2 * np.square(row_norm[rows])]
    rows = np.union1d(rows, np.flatnonzero(failed))
    failed = failed.copy()
    if not rows.size:
        return failed
    from scipy.optimize import nnls  # only for the rows that need it

    for i in rows:
        try:
            xi = nnls(R, b[i], maxiter=50 * k)[0]
        except RuntimeError:  # scipy's own iteration limit: keep this row's solution
            continue
        failed[i] = False
        new, old = b[i] - R @ xi, b[i] - R @ x[i]
        if new @ new < old @ old:
            x[i] = xi
    return failed


def _block_pivoting(x, dual, b, R, solver, y_tol, x_tol, max_iter) -> np.ndarray:
    """Block principal pivoting for all rows (R of full column rank); fills ``x`` and ``dual``.

    Returns the rows that did not satisfy the KKT conditions within
    ``max_iter`` passive-set solves.
    """
    n, k = x.shape
    P = b @ R > 0  # start from the indices with a descent direction at x = 0
    ninf = np.full(n, k + 1)
    budget = np.full(n, 3)
    rows = np.arange(n)
    for _ in range(max_iter):
        Pr = P[rows]
        br = b[rows]
        z, _ = solver.solve(br, Pr)
        y = (z @ R.T - br) @ R  # gradient of 1/2 ||b - R x||^2
        bad = np.where(Pr, z < -x_tol[rows], y < -y_tol[rows])
        nbad = bad.sum(axis=1)
        ok = nbad == 0
        x[rows[ok]] = np.where(Pr[ok], np.maximum(z[ok], 0.0), 0.0)
        dual[rows[ok]] = -y[ok]
        rows, bad, nbad = rows[~ok], bad[~ok], nbad[~ok]
        if not rows.size:
            break
        better = nbad < ninf[rows]
        ninf[rows] = np.where(better, nbad, ninf[rows])
        budget[rows] = np.where(better, 3, budget[rows] - 1)
        backup = budget[rows] < 0
        if backup.any():  # Murty's rule: flip only the largest infeasible index
            last = k - 1 - np.argmax(bad[backup, ::-1], axis=1)
            single = np.zeros_like(bad[backup])
            single[np.arange(len(last)), last] = True
            bad[backup] = single
            budget[rows[backup]] = 0
        P[rows] ^= bad
    return rows


def _lawson_hanson(b, R, solver, grad_tol, tie_tol, max_iter):
    """scipy's Lawson-Hanson path for every row of b (m, r), rows in lockstep.

    Returns (x (m, k), failed (m,) bool: rows that reached ``max_iter``).
    """
    m = b.shape[0]
    k = R.shape[1]
    x = np.zeros((m, k))
    P = np.zeros((m, k), dtype=bool)
    perm = np.tile(np.arange(k), (m, 1))  # scipy's `indices`: passive first, in order
    npass = np.zeros(m, dtype=np.intp)
    slot = np.full(m, solver.slots_of(P[:1])[0])  # solver slot of the current P
    n_solves = np.zeros(m, dtype=np.intp)
    failed = np.zeros(m, dtype=bool)
    st = (x, P, perm, npass, slot)

    outer = np.arange(m)  # x solves the LS on P: look for an index to enter
    inner = np.arange(0)  # P shrank: solve again
    while outer.size or inner.size:
        entered = _enter(outer, st, b, R, solver, grad_tol, tie_tol)
        rows = np.concatenate([inner, entered])
        n_solves[rows] += 1
        over = n_solves[rows] >= max_iter  # scipy: `if (iteration >= maxiter)`
        failed[rows[over]] = True
        outer, inner = _solve_step(rows[~over], st, b, solver)
    return x, failed


def _enter(rows, st, b, R, solver, grad_tol, tie_tol):
    """Outer step for ``rows`` (x optimal on P): move one index from Z to P.

    Returns the rows where an index entered; rows without a positive,
    independent candidate satisfy the KKT conditions and are finished.
    """
    x, P, perm, npass, slot = st
    if not rows.size:
        return rows
    r, k = R.shape
    Pr = P[rows]
    w = (b[rows] - x[rows] @ R.T) @ R  # dual vector W (a - W^T x), (m, k)
    cand = ~Pr & (w > grad_tol[rows]) & (npass[rows] < r)[:, None]
    permr = perm[rows]
    col_norm = np.linalg.norm(R, axis=0)
    chosen = np.full(len(rows), -1)
    todo = np.flatnonzero(cand.any(axis=1))
    while todo.size:
        c, wr, pr = cand[todo], w[todo], permr[todo]
        wmax = np.where(c, wr, -np.inf).max(axis=1)
        # scipy scans Z in its index order and keeps the first strict maximum;
        # equal dual coefficients (duplicated columns) are recognised up to round-off.
        near = c & (wr >= (wmax - tie_tol[rows[todo]])[:, None])
        pos = np.argmax(np.take_along_axis(near, pr, axis=1), axis=1)
        j = pr[np.arange(len(todo)), pos]
        # Independence of column j from the passive columns: projection residual.
        Rj = R[:, j].T  # (t, r)
        coef = np.einsum("tkr,tr->tk", solver.store[slot[rows[todo]]], Rj)
        resid = np.linalg.norm(Rj - coef @ R.T, axis=1)
        ok = resid > _DEPENDENCE_TOL * col_norm[j]
        chosen[todo[ok]] = j[ok]
        bad = todo[~ok]
        cand[bad, j[~ok]] = False
        todo = bad[cand[bad].any(axis=1)]
    sel = chosen >= 0
    rows, j = rows[sel], chosen[sel]
    if rows.size:
        P[rows, j] = True
        # scipy: indices[iz] = indices[indz]; indices[indz] = j
        pr = perm[rows]
        iz = np.argmax(pr == j[:, None], axis=1)
        at = np.arange(len(rows))
        nz = npass[rows]
        pr[at, iz] = pr[at, nz]
        pr[at, nz] = j
        perm[rows] = pr
        npass[rows] = nz + 1
    return rows


def _solve_step(rows, st, b, solver):
    """Inner step: least squares on P, then accept it or step back and shrink P.

    Returns (rows with a feasible solution -> outer step, rows that shrank P ->
    another solve).
    """
    x, P, perm, npass, slot = st
    if not rows.size:
        return rows, rows
    Pr = P[rows]
    z, s = solver.solve(b[rows], Pr)
    slot[rows] = s
    xr = x[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        T = np.where(Pr & (z <= 0), xr / (xr - z), np.inf)
    T[np.isnan(T)] = np.inf  # scipy's `alpha > T` is false for NaN
    permr = perm[rows]
    Tp = np.take_along_axis(T, permr, axis=1)
    pos = np.argmin(Tp, axis=1)  # first strict minimum in scipy's order
    alpha = Tp[np.arange(len(rows)), pos]
    feasible = ~np.isfinite(alpha)
    x[rows[feasible]] = np.where(Pr[feasible], z[feasible], 0.0)

    back = ~feasible
    if back.any():
        rb, Pb, xb, zb, pb = rows[back], Pr[back], xr[back], z[back], permr[back]
        m, k = pb.shape
        xb = np.where(Pb, xb + alpha[back, None] * (zb - xb), 0.0)
        first = pb[np.arange(m), pos[back]]
        xb[np.arange(m), first] = 0.0
        removed = Pb & (xb <= 0)  # includes `first`
        xb[removed] = 0.0
        # scipy's index order after the removals: kept passive indices in
        # order, the later removals in reverse order, the first removal, old Z.
        posn = np.broadcast_to(np.arange(k), (m, k))
        in_p = posn < npass[rb][:, None]
        rem_p = np.take_along_axis(removed, pb, axis=1)
        key = np.where(in_p & ~rem_p, posn, 3 * k + posn)
        key = np.where(rem_p, 2 * k - 1 - posn, key)
        key = np.where(pb == first[:, None], 2 * k, key)
        perm[rb] = np.take_along_axis(pb, np.argsort(key, axis=1, kind="stable"), axis=1)
        x[rb] = xb
        P[rb] = Pb & ~removed
        npass[rb] -= removed.sum(axis=1)
    return rows[feasible], rows[back]
