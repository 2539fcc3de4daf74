"""Time one class of an RSVC comparison, ResNet-18 vs ResNet-50 shapes, against a naive baseline.

    python benchmarks/per_class_analysis.py [--quick] [--threads 2]

Synthetic non-negative activations with the paper's shapes: the 17 ReLU
layers of ResNet-18 and the 49 of ResNet-50 with their channel counts (as
timm's random-init ``resnet18`` / ``resnet50`` report them, see
``RESNET18_RELU`` / ``RESNET50_RELU``) plus ``pre_logits`` (512 / 2048);
1600 own patches per model (100 images x 16), 3200 shared patches (the union,
200 images; model A's own images are the first 100, B's the last 100), 800
held-out patches (50 images), k = 10 concepts, a 1000-class linear head.
Each layer is ``relu(Z M + noise)`` for a sparse non-negative latent ``Z``
shared in part by the two models, i.e. low rank plus noise.

Stages timed (ours, the rsvc library): concepts (factorise every layer of
both models on their own patches), NNLS (every layer on the shared patches,
pre_logits on the held-out patches), layerwise MCS/MMCS over all 17 x 49 = 833
layer pairs with Pearson and Spearman, lasso (four maps, five folds),
importance (probability target, 30 steps), the uncertainty of the defaults
(2 pre_logits restarts per model, the image-jackknife intervals of CMCS, SMCS and MCS, 200
permutations of the MCS null), the chance level of the layerwise MMCS matrix (10 permutations,
every layer pair incl. pre_logits, Pearson and Spearman; issue 27 budget: +1 s per class) and the
replacement test plus dissimilarity views. The naive baseline does NNLS row by row with
``scipy.optimize.nnls`` and the layerwise correlations with
``scipy.stats.pearsonr`` / ``spearmanr`` on every pair of concept columns, the
way the reference scripts do. ``--quick`` times the baseline on a subset
(a few layers, a few layer pairs) and extrapolates linearly, and says so.

``--threads`` sets the BLAS threads (default 2, the target machine). On a
machine that other processes keep busy, multi-threaded OpenBLAS slows down
badly (its threads wait for each other's time slices); ``--threads 1`` then
gives the representative numbers. The load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="time the baseline on a subset and extrapolate")
    p.add_argument("--threads", type=int, default=2, help="BLAS threads (default 2, the target machine)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:  # BLAS reads these at import time
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
from scipy.optimize import nnls  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402

from rsvc.factorization import factorize  # noqa: E402
from rsvc.uncertainty import (  # noqa: E402
    mcs_intervals,
    paired_pearson_interval,
    permutation_null_mcs,
    permutation_null_mmcs,
    restart_stability,
)

# the schema's defaults of concepts.restarts, uncertainty.permutations and uncertainty.mmcs_permutations
RESTARTS, PERMUTATIONS, MMCS_PERMUTATIONS = 2, 200, 10
from rsvc.importance import concept_importance, concept_integrated_gradients  # noqa: E402
from rsvc.nnls import nnls_batched  # noqa: E402
from rsvc.regression import concept_regression  # noqa: E402
from rsvc.replacement import replacement_test  # noqa: E402
from rsvc.selection import dissimilarity_views  # noqa: E402
from rsvc.similarity import layerwise_correlation, mcs, mmcs  # noqa: E402

# Output channels of every nn.ReLU module, in forward order, of timm's
# resnet18 / resnet50 (act1, then layerX.Y.act1/act2[/act3]).
RESNET18_RELU = [64] + [64] * 4 + [128] * 4 + [256] * 4 + [512] * 4
RESNET50_RELU = [64] + [64, 64, 256] * 3 + [128, 128, 512] * 4 + [256, 256, 1024] * 6 + [512, 512, 2048] * 3
PRE_LOGITS = {"a": 512, "b": 2048}
K = 10
N_CLASSES = 1000
IMAGES_OWN, IMAGES_HELD, PATCHES = 100, 50, 16
LATENT = 32


def make_data(seed: int):
    """Activations (float32) for models a (ResNet-18) and b (ResNet-50)."""
    rng = np.random.default_rng(seed)
    n_shared = 2 * IMAGES_OWN * PATCHES  # 3200: a's images, then b's
    n_held = IMAGES_HELD * PATCHES  # 800
    n = n_shared + n_held
    # sparse non-negative latent concepts per patch, with an image effect
    image = np.repeat(np.arange(n // PATCHES), PATCHES)
    Z = rng.gamma(0.4, 1.0, (n, LATENT)) * (rng.random((n, LATENT)) < 0.35)
    Z += 0.5 * rng.gamma(0.4, 1.0, (n // PATCHES, LATENT))[image]
    # model b sees a quarter of the latents differently (unique concepts)
    Zb = Z.copy()
    Zb[:, : LATENT // 4] = rng.gamma(0.4, 1.0, (n, LATENT // 4)) * (rng.random((n, LATENT // 4)) < 0.35)
    latent = {"a": Z, "b": Zb}
    dims = {"a": RESNET18_RELU + [PRE_LOGITS["a"]], "b": RESNET50_RELU + [PRE_LOGITS["b"]]}
    acts = {}
    for m in ("a", "b"):
        acts[m] = []
        for d in dims[m]:
            M = rng.standard_normal((LATENT, d)) + 0.3
            A = latent[m] @ M + 0.5 * rng.standard_normal((n, d))
            acts[m].append(np.maximum(A, 0).astype(np.float32))
    heads = {
        m: (
            rng.standard_normal((N_CLASSES, PRE_LOGITS[m])).astype(np.float32) / np.sqrt(PRE_LOGITS[m]),
            np.zeros(N_CLASSES, dtype=np.float32),
        )
        for m in ("a", "b")
    }
    rows = {
        "own": {"a": slice(0, n_shared // 2), "b": slice(n_shared // 2, n_shared)},
        "shared": slice(0, n_shared),
        "held": slice(n_shared, n),
        "shared_image": image[:n_shared],
        "held_image": image[n_shared:],
    }
    return acts, heads, rows


class Timer:
    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.t[name] = timer.t.get(name, 0.0) + time.perf_counter() - self.start

        return _Ctx()


def run_ours(acts, heads, rows, timer: Timer, class_index: int = 0):
    models = ("a", "b")
    with timer("concepts"):
        fac = {m: [factorize(A[rows["own"][m]], K, seed=0) for A in acts[m]] for m in models}
    W = {m: [f.W for f in fac[m]] for m in models}
    with timer("nnls"):
        U_shared = {m: np.stack([nnls_batched(A[rows["shared"]], w) for A, w in zip(acts[m], W[m])]) for m in models}
        U_held = {m: nnls_batched(acts[m][-1][rows["held"]], W[m][-1]) for m in models}
    with timer("mcs"):
        out = {}
        for method in ("pearson", "spearman"):
            R = layerwise_correlation(U_shared["a"][:-1], U_shared["b"][:-1], method=method)  # 17 x 49 pairs
            out[method] = (R, mmcs(R), mcs(R))
    with timer("lasso"):
        reg = concept_regression(
            {m: acts[m][-1][rows["shared"]] for m in models},
            {m: acts[m][-1][rows["held"]] for m in models},
            {m: U_shared[m][-1] for m in models},
            U_held,
            rows["shared_image"],
            alpha=0.1,
            n_folds=5,
        )
    with timer("importance"):
        imp = {
            m: concept_importance(
                concept_integrated_gradients(
                    fac[m][-1].U, W[m][-1], *heads[m], class_index, target="probability", steps=30
                )
            )
            for m in models
        }
    with timer("uncertainty"):  # the defaults: concepts.restarts 2, jackknife intervals, permutations 200
        for m in models:
            restart_stability(
                acts[m][-1][rows["own"][m]],
                fac[m][-1],
                K,
                method=fac[m][-1].method,
                seed=0,
                restarts=RESTARTS,
                max_iter=200,
                tol=1e-4,
            )
        for (_, tgt), res in reg.items():
            paired_pearson_interval(res.pred, U_held[tgt], rows["held_image"])
        mcs_intervals(U_shared["a"][-1], U_shared["b"][-1], rows["shared_image"])
        permutation_null_mcs(U_shared["a"][-1], U_shared["b"][-1], rows["shared_image"], P=PERMUTATIONS, seed=0)
    with timer("mmcs chance level"):  # uncertainty.mmcs_permutations 10, every layer pair, both methods
        for method in ("pearson", "spearman"):
            permutation_null_mmcs(
                U_shared["a"], U_shared["b"], rows["shared_image"], P=MMCS_PERMUTATIONS, seed=0, method=method
            )
    with timer("replacement+views"):
        for src, tgt in (("b", "a"), ("a", "b")):
            replacement_test(U_held[tgt], reg[(src, tgt)].pred, reg[(tgt, tgt)].pred, W[tgt][-1], *heads[tgt])
            for i in range(K):
                dissimilarity_views(U_held[tgt][:, i], reg[(src, tgt)].pred[:, i], rows["held_image"], n=10)
    return fac, W, U_shared, U_held, out, reg, imp


def baseline_nnls(acts, W, rows, layer_subset=None):
    """Row-by-row scipy NNLS like the reference scripts.

    Returns (U per timed layer, seconds for all of it). With ``layer_subset``
    only those layers are timed and the total is extrapolated with a per-row
    cost ``t(d) = t0 + t1 * d`` fitted to them.
    """
    jobs = [(m, l, rows["shared"]) for m in ("a", "b") for l in range(len(acts[m]))]
    jobs += [(m, len(acts[m]) - 1, rows["held"]) for m in ("a", "b")]
    timed = jobs if layer_subset is None else [jobs[i] for i in layer_subset]
    U, per_row, total = {}, [], 0.0
    for m, l, sel in timed:
        A = acts[m][l][sel].astype(np.float64)
        Wt = W[m][l].astype(np.float64).T
        t0 = time.perf_counter()
        U_l = np.array([nnls(Wt, a)[0] for a in A])
        dt = time.perf_counter() - t0
        if sel == rows["shared"]:
            U[(m, l)] = U_l
        per_row.append((A.shape[1], dt / len(A)))
        total += dt
    if layer_subset is not None:
        d, t = np.array(per_row).T
        t0, t1 = np.linalg.lstsq(np.column_stack([np.ones_like(d), d]), t, rcond=None)[0]
        total = sum((t0 + t1 * acts[m][l].shape[1]) * acts[m][l][sel].shape[0] for m, l, sel in jobs)
    return U, total


def baseline_mcs(U_shared, pair_subset=None):
    """pearsonr / spearmanr on every concept pair of every layer pair; returns (R dict, seconds, fraction)."""
    U_shared = {m: u.astype(np.float64) for m, u in U_shared.items()}  # scipy keeps float32 in float32
    La, Lb = U_shared["a"].shape[0] - 1, U_shared["b"].shape[0] - 1
    pairs = [(l, m) for l in range(La) for m in range(Lb)]
    timed = pairs if pair_subset is None else [pairs[i] for i in pair_subset]
    R = {}
    t0 = time.perf_counter()
    for l, m in timed:
        Ua, Ub = U_shared["a"][l], U_shared["b"][m]
        Rp = np.zeros((K, K))
        Rs = np.zeros((K, K))
        for i in range(K):
            for j in range(K):
                Rp[i, j] = pearsonr(Ua[:, i], Ub[:, j])[0]
                Rs[i, j] = spearmanr(Ua[:, i], Ub[:, j])[0]
        mmcs_p = (np.nanmean(np.nanmax(Rp, 1)) + np.nanmean(np.nanmax(Rp, 0))) / 2
        mmcs_s = (np.nanmean(np.nanmax(Rs, 1)) + np.nanmean(np.nanmax(Rs, 0))) / 2
        R[(l, m)] = (Rp, Rs, mmcs_p, mmcs_s)
    return R, time.perf_counter() - t0, len(timed) / len(pairs)


def main(args: argparse.Namespace) -> None:
    import warnings

    print(
        f"RSVC per-class benchmark: ResNet-18 ({len(RESNET18_RELU)} ReLU + pre_logits) vs ResNet-50 "
        f"({len(RESNET50_RELU)} ReLU + pre_logits), k={K}, {args.threads} BLAS threads, "
        f"{os.cpu_count()} CPUs visible"
    )
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    acts, heads, rows = make_data(args.seed)
    print(
        f"synthetic activations: {sum(a.nbytes for m in acts for a in acts[m]) / 2**20:.0f} MiB "
        f"in {time.perf_counter() - t0:.1f} s (not timed)"
    )

    timer = Timer()
    fac, W, U_shared, U_held, out, reg, imp = run_ours(acts, heads, rows, timer)
    total = sum(timer.t.values())
    n_iter = [f.n_iter for m in fac for f in fac[m]]
    rel = [f.rel_error for m in fac for f in fac[m]]
    print(
        f"\nfactorisations: {len(n_iter)}, iterations mean {np.mean(n_iter):.1f} (max {max(n_iter)}), "
        f"converged {sum(f.converged for m in fac for f in fac[m])}/{len(n_iter)}, "
        f"rel. error {min(rel):.3f}-{max(rel):.3f}"
    )

    # naive baseline
    quick = args.quick
    n_jobs = len(acts["a"]) + len(acts["b"])
    layer_subset = [0, len(acts["a"]) - 1, len(acts["a"]) + 3, n_jobs - 2] if quick else None
    n_pairs = len(RESNET18_RELU) * len(RESNET50_RELU)
    pair_subset = list(range(0, n_pairs, n_pairs // 25))[:25] if quick else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        U_base, base_nnls = baseline_nnls(acts, W, rows, layer_subset)
        R_base, t_mcs, f_mcs = baseline_mcs(U_shared, pair_subset)
    base_mcs = t_mcs / f_mcs

    # agreement of ours with the baseline on what the baseline computed
    du = max(float(np.abs(U_shared[m][l] - u).max() / np.abs(u).max()) for (m, l), u in U_base.items())
    dr = max(float(np.nanmax(np.abs(out["pearson"][0][l, m] - R_base[(l, m)][0]))) for (l, m) in R_base)
    ds = max(float(np.nanmax(np.abs(out["spearman"][0][l, m] - R_base[(l, m)][1]))) for (l, m) in R_base)
    dm = max(abs(float(out["pearson"][1][l, m]) - R_base[(l, m)][2]) for (l, m) in R_base)

    print("\nstage                 ours [s]   naive baseline [s]")
    base = {"nnls": base_nnls, "mcs": base_mcs}
    for name, t in timer.t.items():
        b = base.get(name)
        print(f"  {name:<20}{t:8.3f}   {'' if b is None else f'{b:10.2f}'}")
    print(f"  {'total per class':<20}{total:8.3f}")
    ours_core = timer.t["nnls"] + timer.t["mcs"]
    base_core = base_nnls + base_mcs
    print(
        f"\nNNLS + layerwise MCS: ours {ours_core:.3f} s, baseline {base_core:.1f} s, "
        f"ratio baseline/ours = {base_core / ours_core:.0f}x "
        f"(NNLS {base_nnls / timer.t['nnls']:.0f}x, MCS {base_mcs / timer.t['mcs']:.0f}x)"
    )
    if quick:
        print(
            f"  --quick: baseline NNLS timed on {len(layer_subset)} of {n_jobs + 2} layer/row sets and "
            "extrapolated with a per-row cost linear in d fitted to them; "
            f"MCS timed on {len(pair_subset)} of {n_pairs} layer pairs and extrapolated linearly"
        )
    print(
        f"agreement with the baseline: max|U - U_scipy| / max|U_scipy| <= {du:.1e} (float32 activations), "
        f"|R_pearson| <= {dr:.1e}, |R_spearman| <= {ds:.1e}, |MMCS| <= {dm:.1e}"
    )
    print(
        f"load average (1 min) before/after: {load0:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(other processes slow multi-threaded BLAS down a lot)"
    )
    goals = [
        ("total per class <= 10 s", total <= 10.0),
        ("NNLS + MCS >= 30x baseline", base_core / ours_core >= 30),
        ("MMCS chance level <= 1 s", timer.t["mmcs chance level"] <= 1.0),
    ]
    print("goals: " + ", ".join(f"{g}: {'met' if ok else 'NOT met'}" for g, ok in goals))


if __name__ == "__main__":
    sys.exit(main(ARGS))
