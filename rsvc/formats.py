"""The one home of every artifact's file format: one writer and one reader per kind.

Torch-free (numpy, h5py, pandas), so every CPU job, table, figure and test reads
results through here and no other module knows a dataset name or column. Writes
are atomic (:mod:`rsvc.io`).

==============  ====================================  ===========================================
artifact        writer                                reader
==============  ====================================  ===========================================
predictions     :func:`write_predictions`             :func:`read_predictions`
image sets      :func:`write_image_sets`              :func:`read_image_sets`, :func:`read_image_set_counts`
activations     :class:`ActivationFile`               :func:`read_class_activations`, :func:`read_skipped_images`
any HDF5 file   (each writer above)                   :func:`read_attrs` (the parameters that produced it)
head            :func:`write_head`                    :func:`read_head`
concepts        :func:`write_concepts`                :func:`read_concepts`
importance      :func:`write_importance`              :func:`read_importance`
compare         :func:`write_compare` (a              :func:`read_compare_metrics`, :func:`read_mmcs`,
                :class:`ClassComparison`)             :func:`read_heldout`, :func:`read_concept_views`,
                                                      :func:`read_compare_status`
layerwise MMCS  :func:`write_layerwise`               :func:`read_layerwise`
concept table   :func:`rsvc.io.write_table` (CSV)     :func:`read_concept_table`
skip marker     :func:`write_skipped` (any per-class  :func:`is_skipped`
                file)
==============  ====================================  ===========================================

Shapes: ``n`` patches (rows), ``k`` concepts, ``d`` features, ``C`` classes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from rsvc.io import read_strings, set_attrs, write_h5, write_table
from rsvc.sampling import RowSet
from rsvc.specs import direction

if TYPE_CHECKING:
    import pandas as pd

PathLike = str | os.PathLike


class DamagedFileError(OSError):
    """An intermediate file that exists but cannot be read; the message names it and says what to do."""


def rebuild_target(path: PathLike) -> str:
    """The workflow output that holds ``path``: the file itself, or the ``directory()`` output it lies in
    (Snakemake marks those with a ``.snakemake_timestamp`` file), as ``snakemake --forcerun`` takes it."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    for _ in range(3):  # the per-class files lie directly in their shard folder; no output is deeper
        if not folder:
            break
        if os.path.exists(os.path.join(folder, ".snakemake_timestamp")):
            return folder
        folder = os.path.dirname(folder)
    return path


def damaged_file_message(path: PathLike, problem: str) -> str:
    """What to say about a result file that cannot be read: its name, the problem and the one command
    that rebuilds it and everything made from it (a plain rerun does not: the finished outputs are there)."""
    target = rebuild_target(path)
    return (
        f"{path}: {problem}: it is damaged or cut short (a full disk, a killed copy). Rebuild it and every "
        f"output made from it with `snakemake --forcerun {shlex.quote(target)}` plus the options of your run "
        "(--configfile, --profile, --cores); the other finished outputs are kept"
    )


@contextlib.contextmanager
def _open(path: PathLike, mode: str = "r"):
    """``h5py.File(path)``, with a damaged or truncated file reported by name with the fix."""
    try:
        f = h5py.File(path, mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DamagedFileError(damaged_file_message(path, f"cannot be read as HDF5 ({exc})")) from None
    with f:
        yield f


def _pd():
    import pandas as pd  # imported on use: the per-class jobs never read a table

    return pd


# ---------------------------------------------------------------- skip marker
SKIPPED = "skipped"
"""Root attribute of every per-class result file: True when the class was not analysed."""
REASON = "reason"
"""Root attribute: why the class was skipped (one sentence)."""


@dataclass(frozen=True)
class Skipped:
    """A per-class job's outcome when its class cannot be analysed; ``extra`` goes into the attributes."""

    reason: str
    extra: Mapping[str, Any] | None = None


def write_skipped(path: PathLike, skipped: Skipped, attrs: Mapping[str, Any]) -> None:
    """A per-class result file that holds no data, only the parameters and why."""
    write_h5(path, {}, attrs={**attrs, **(skipped.extra or {}), SKIPPED: True, REASON: skipped.reason})


def is_skipped(path: PathLike) -> tuple[bool, str]:
    """Whether a per-class result file (concepts, importance, compare) marks its class as skipped, and why."""
    with _open(path) as f:
        return bool(f.attrs.get(SKIPPED, False)), str(f.attrs.get(REASON, ""))


# ---------------------------------------------------------------- predictions (TSV)
PREDICTION_COLUMNS = ["image_id", "path", "label", "status", "pred_index", "prob", "pred_class", "reason"]
OK, SKIPPED_IMAGE = "ok", "skipped"  # values of the status column


def write_predictions(path: PathLike, table: pd.DataFrame) -> None:
    """One row per image of a shard's class folders: columns :data:`PREDICTION_COLUMNS`
    (``status`` ok/skipped, ``pred_index`` -1 and ``pred_class`` empty for unreadable images)."""
    write_table(path, table[PREDICTION_COLUMNS])


def read_predictions(paths: Iterable[PathLike]) -> pd.DataFrame:
    """The prediction tables of several shards, concatenated; text columns as ``str``."""
    pd = _pd()
    frames = [
        pd.read_csv(
            p,
            sep="\t",
            dtype={"image_id": str, "path": str, "label": str, "pred_class": str, "reason": str, "status": str},
            keep_default_na=False,
        )
        for p in paths
    ]
    if not frames:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    table["prob"] = pd.to_numeric(table["prob"].replace("", np.nan))
    return table


# ---------------------------------------------------------------- image sets (TSV)
IMAGE_SET_COLUMNS = ["class_id", "image_id", "path", "sampled"]
COUNT_COLUMNS = ["model", "split", "class_id", "n_predicted", "n_selected", "status", "reason"]


def write_image_sets(sets_path: PathLike, counts_path: PathLike, sets: pd.DataFrame, counts: pd.DataFrame) -> None:
    """The images of every class (:data:`IMAGE_SET_COLUMNS`) and one count row per class (:data:`COUNT_COLUMNS`)."""
    pd = _pd()
    write_table(sets_path, sets[IMAGE_SET_COLUMNS] if len(sets) else pd.DataFrame(columns=IMAGE_SET_COLUMNS))
    write_table(counts_path, counts[COUNT_COLUMNS] if len(counts) else pd.DataFrame(columns=COUNT_COLUMNS))


def read_image_sets(
    path: PathLike, classes: Sequence[str] | None = None, *, sampled_only: bool = True
) -> dict[str, list[tuple[str, str]]]:
    """``{class_id: [(image_id, path), ...]}`` from an image-set table (restricted to ``classes``): the
    sampled images (those extracted), or with ``sampled_only=False`` every image of the class's set."""
    df = _pd().read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if sampled_only and "sampled" in df.columns:
        df = df[df["sampled"] == "True"]
    keep = None if classes is None else set(classes)
    return {
        cid: list(zip(sub["image_id"], sub["path"]))
        for cid, sub in df.groupby("class_id", sort=False)
        if keep is None or cid in keep
    }


def read_image_set_counts(path: PathLike) -> pd.DataFrame:
    """The count rows of an image-set job (:data:`COUNT_COLUMNS`)."""
    return _pd().read_csv(path, sep="\t", dtype={"class_id": str, "model": str, "split": str}, keep_default_na=False)


# ---------------------------------------------------------------- activations (HDF5)
SKIPPED_COLUMNS = ("class_id", "image_id", "path", "reason")


class ActivationFile:
    """Writer of an activation file, filled batch by batch inside an open (temporary) HDF5 file.

    Layout: ``/<class_id>/acts/<layer>`` ``(n_patches, d)`` storage dtype;
    ``/<class_id>/image_ids`` ``(n_images,)`` str; ``/<class_id>/patch_image``
    ``(n_patches,)`` int64 index into image_ids; ``/<class_id>/patch_index``
    ``(n_patches,)`` int64 grid position; ``/skipped/<column>`` the unreadable
    images; root attributes (``layers`` as JSON) from :meth:`finish`.
    """

    def __init__(
        self,
        f: h5py.File,
        classes: Iterable[str],
        dims: Mapping[str, int],
        dtype: Any,
        chunk_rows: Mapping[str, int],
        class_rows: Mapping[str, int] | None = None,
    ):
        """``chunk_rows``: rows per HDF5 chunk of each layer; ``class_rows``: the most rows each class can
        get (its images x patches), which caps its chunks: HDF5 allocates whole chunks, so a class of 40
        patches in 4096-row chunks would take 100 times its size on disk."""
        self.f = f
        cap = class_rows or {}
        self.acts = {
            cid: {
                n: f.create_dataset(
                    f"{cid}/acts/{n}",
                    shape=(0, d),
                    maxshape=(None, d),
                    dtype=dtype,
                    chunks=(max(1, min(chunk_rows[n], cap.get(cid, chunk_rows[n]))), d),
                )
                for n, d in dims.items()
            }
            for cid in classes
        }

    def dataset(self, class_id: str, layer: str) -> h5py.Dataset:
        """The resizable ``(rows, d)`` dataset of a class and layer (the caller appends to it)."""
        return self.acts[class_id][layer]

    def finish(
        self,
        image_ids: Mapping[str, Sequence[str]],
        n_grid: int,
        skipped: Sequence[tuple[str, str, str, str]],
        attrs: Mapping[str, Any],
    ) -> None:
        """Image ids, patch bookkeeping, the unreadable images and the root attributes."""
        for cid, ids in image_ids.items():
            g = self.f[cid]
            g.create_dataset("image_ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype())
            g.create_dataset("patch_image", data=np.repeat(np.arange(len(ids), dtype=np.int64), n_grid))
            g.create_dataset("patch_index", data=np.tile(np.arange(n_grid, dtype=np.int64), len(ids)))
        sk = self.f.create_group("skipped")
        for j, col in enumerate(SKIPPED_COLUMNS):
            sk.create_dataset(col, data=np.array([str(s[j]) for s in skipped], dtype=object), dtype=h5py.string_dtype())
        set_attrs(self.f, attrs)


def read_class_activations(
    path: PathLike, class_id: str, layers: Sequence[str] | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """-> ``(acts {layer: (n_patches, d) float32}, image_ids (n_images,) str,
    patch_image (n_patches,) int64, patch_index (n_patches,) int64)``; ``layers=None`` reads all,
    in the file's layer order. KeyError: the file has no such class; ValueError: it lacks a layer."""
    with _open(path) as f:
        if class_id not in f or "acts" not in f[class_id]:
            raise KeyError(f"{path}: no class {class_id!r}")
        g = f[class_id]
        if layers is None:
            layers = [n for n in json.loads(f.attrs["layers"]) if n in g["acts"]]
        missing = [n for n in layers if n not in g["acts"]]
        if missing:
            raise ValueError(
                f"{path}: class {class_id!r} has no layers {missing}; delete the file and rerun to extract them"
            )
        acts = {n: g["acts"][n][()].astype(np.float32, copy=False) for n in layers}
        return acts, read_strings(g["image_ids"]), g["patch_image"][()], g["patch_index"][()]


def read_attrs(path: PathLike) -> dict[str, Any]:
    """Root attributes of any result file: the parameters that produced it (JSON-encoded values decoded)."""
    with _open(path) as f:
        return {k: _decode(v) for k, v in f.attrs.items()}


def read_skipped_images(path: PathLike) -> pd.DataFrame:
    """The unreadable images of an activation file: columns class_id, image_id, path, reason."""
    with _open(path) as f:
        return _pd().DataFrame({c: read_strings(f["skipped"][c]) for c in SKIPPED_COLUMNS})


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# ---------------------------------------------------------------- head (HDF5)
def write_head(path: PathLike, weight: np.ndarray, bias: np.ndarray, attrs: Mapping[str, Any]) -> None:
    """The linear classifier: ``weight (C, d)``, ``bias (C,)``."""
    write_h5(path, {"weight": weight, "bias": bias}, attrs=attrs)


def read_head(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (C, d), bias (C,))`` float64."""
    with _open(path) as f:
        return f["weight"][()].astype(np.float64), f["bias"][()].astype(np.float64)


# ---------------------------------------------------------------- concepts (HDF5)
@dataclass(frozen=True)
class Concepts:
    """One model's concepts of one class at every layer (layer order = the model's, ``pre_logits`` last).

    W: layer -> ``(k, d)``; U: layer -> ``(n_patches, k)`` on the model's own patches;
    fit: layer -> {method, rel_error, n_iter, converged}; image_ids ``(n_images,)``,
    patch_image, patch_index ``(n_patches,)``: the patches U is computed on.
    """

    W: Mapping[str, np.ndarray]
    U: Mapping[str, np.ndarray]
    fit: Mapping[str, Mapping[str, Any]]
    image_ids: np.ndarray
    patch_image: np.ndarray
    patch_index: np.ndarray
    stability: Mapping[str, np.ndarray] | None = None  # pre_logits: {"cosine": (k,), "self_mcs": (k,)}

    @property
    def layers(self) -> list[str]:
        return list(self.W)

    @property
    def rel_error(self) -> dict[str, float]:
        return {layer: float(self.fit[layer]["rel_error"]) for layer in self.W}


def write_concepts(path: PathLike, concepts: Concepts | Skipped, attrs: Mapping[str, Any]) -> None:
    """``W/<layer>``, ``U/<layer>``, ``layers``, the patch bookkeeping; fit statistics on each ``W/<layer>``."""
    if isinstance(concepts, Skipped):
        return write_skipped(path, concepts, attrs)
    data: dict[str, np.ndarray] = {}
    for layer in concepts.layers:
        data[f"W/{layer}"], data[f"U/{layer}"] = concepts.W[layer], concepts.U[layer]
    data["layers"] = np.array(concepts.layers, dtype=object)
    data["image_ids"] = np.asarray(concepts.image_ids, dtype=object)
    data["patch_image"], data["patch_index"] = concepts.patch_image, concepts.patch_index
    for name, values in (concepts.stability or {}).items():
        data[f"stability/{name}"] = values
    group_attrs = {f"W/{layer}": dict(concepts.fit[layer]) for layer in concepts.layers}
    write_h5(path, data, attrs={**attrs, SKIPPED: False}, group_attrs=group_attrs)


def read_concepts(path: PathLike) -> Concepts:
    """The concepts of a non-skipped file, W and U as float64."""
    with _open(path) as f:
        layers = list(read_strings(f["layers"]))
        return Concepts(
            W={layer: f[f"W/{layer}"][()].astype(np.float64) for layer in layers},
            U={layer: f[f"U/{layer}"][()].astype(np.float64) for layer in layers},
            fit={layer: {k: _decode(v) for k, v in f[f"W/{layer}"].attrs.items()} for layer in layers},
            image_ids=read_strings(f["image_ids"]),
            patch_image=f["patch_image"][()],
            patch_index=f["patch_index"][()],
            stability={n: f[f"stability/{n}"][()] for n in f["stability"]} if "stability" in f else None,
        )


# ---------------------------------------------------------------- importance (HDF5)
def write_importance(
    path: PathLike, importance: np.ndarray | Skipped, attributions: np.ndarray | None, attrs: Mapping[str, Any]
) -> None:
    """``importance (k,)`` and the per-patch ``attributions (n, k)``, or the skip marker."""
    if isinstance(importance, Skipped):
        return write_skipped(path, importance, attrs)
    write_h5(path, {"importance": importance, "attributions": attributions}, attrs={**attrs, SKIPPED: False})


def read_importance(path: PathLike) -> np.ndarray | None:
    """``importance (k,)``, or None when the class was skipped."""
    with _open(path) as f:
        return None if f.attrs.get(SKIPPED, False) else f["importance"][()]


# ---------------------------------------------------------------- compare (HDF5)
REGRESSION_FIELDS = ("pearson", "spearman", "cv_pearson", "pred")
REPLACEMENT_FIELDS = ("l2", "kl", "match_acc")


@dataclass(frozen=True)
class ClassComparison:
    """Every number of one class for a pair (a, b); directions are ``"src->tgt"`` (:func:`rsvc.specs.direction`).

    layers: model -> layer names (ending with ``pre_logits``).
    mmcs: method ("pearson", "spearman") -> layerwise MMCS ``(La, Lb)``; mmcs_null: its chance level (same
    shape), when permutations were drawn.
    mcs: (direction, method) -> MCS of each target concept ``(k,)``.
    regression: direction -> {"pearson", "spearman", "cv_pearson": ``(k,)``, "pred": ``(m, k)``} (CMCS, SMCS).
    replacement: direction -> {"l2", "kl", "match_acc": ``(k,)``}.
    views: direction -> ``(k, 3, n)`` held-out rows (top real, over, under; -1 = none).
    heldout_U / pool_U_pre_logits: model -> coefficients ``(m, k)`` / ``(n, k)``.
    heldout_rows / pool_rows: the patches behind them (:class:`rsvc.sampling.RowSet`).
    intervals: ("regression" | "mcs", direction) -> {"ci_low", "ci_high"[, "se_z", "df"]} ``(k,)``.
    null: direction -> (null mean, p-value) ``(k,)`` of MCS.
    importance: model -> concept importance ``(k,)`` on the shared set (``importance.images: shared``).
    rel_error: model -> the factorisation's relative error per layer; stability: model -> {name: ``(k,)``}.
    """

    layers: Mapping[str, Sequence[str]]
    mmcs: Mapping[str, np.ndarray]
    mcs: Mapping[tuple[str, str], np.ndarray]
    regression: Mapping[str, Mapping[str, np.ndarray]]
    replacement: Mapping[str, Mapping[str, np.ndarray]]
    views: Mapping[str, np.ndarray]
    heldout_U: Mapping[str, np.ndarray]
    pool_U_pre_logits: Mapping[str, np.ndarray]
    heldout_rows: RowSet
    pool_rows: RowSet
    intervals: Mapping[tuple[str, str], Mapping[str, np.ndarray]] = field(default_factory=dict)
    null: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    mmcs_null: Mapping[str, np.ndarray] = field(default_factory=dict)
    importance: Mapping[str, np.ndarray] = field(default_factory=dict)
    rel_error: Mapping[str, Sequence[float]] = field(default_factory=dict)
    stability: Mapping[str, Mapping[str, np.ndarray] | None] = field(default_factory=dict)


def compare_datasets(result: ClassComparison) -> dict[str, np.ndarray]:
    """The datasets of a compare file, by name: :class:`ClassComparison` flattened (written by
    :func:`write_compare`).

    ``layers/<model>``; ``mmcs/<method>`` ``(La, Lb)``; ``mcs/<direction>/<method>`` ``(k,)``;
    ``regression/<direction>/{pearson, spearman, cv_pearson}`` ``(k,)`` and ``pred`` ``(m, k)``;
    ``replacement/<direction>/{l2, kl, match_acc}`` ``(k,)``; ``views/<direction>`` ``(k, 3, n)`` held-out rows
    (top real, over, under; -1 = none); ``heldout/U/<model>`` ``(m, k)``; ``pool/U_pre_logits/<model>``
    ``(n, k)``; ``<regression|mcs>/<direction>/pearson_<ci_low|ci_high|se_z|df>`` ``(k,)``: the
    image-jackknife interval of the Pearson score (and, for the regressions, its standard error on Fisher's
    z scale and degrees of freedom); ``mmcs_null/<method>``: the chance level of ``mmcs/<method>``;
    ``mcs/<direction>/{null_mean, p_value}`` ``(k,)`` (rsvc.uncertainty); ``<heldout|pool>/{image_ids,
    patch_image, patch_index}``; ``importance/<model>`` ``(k,)`` on the shared set; ``rel_error/<model>``
    ``(n_layers,)``; ``stability/<model>/<name>`` ``(k,)``.
    """
    out: dict[str, np.ndarray] = {}
    for m, names in result.layers.items():
        out[f"layers/{m}"] = np.array(list(names), dtype=object)
    for method, matrix in result.mmcs.items():
        out[f"mmcs/{method}"] = matrix
    for (d, method), values in result.mcs.items():
        out[f"mcs/{d}/{method}"] = values
    for d, res in result.regression.items():
        for name in REGRESSION_FIELDS:
            out[f"regression/{d}/{name}"] = res[name]
    for d, res in result.replacement.items():
        for name in REPLACEMENT_FIELDS:
            out[f"replacement/{d}/{name}"] = res[name]
    for d, v in result.views.items():
        out[f"views/{d}"] = v
    for m in result.layers:
        out[f"heldout/U/{m}"] = result.heldout_U[m]
        out[f"pool/U_pre_logits/{m}"] = result.pool_U_pre_logits[m]
    for (kind, d), values in result.intervals.items():
        for name, v in values.items():
            out[f"{kind}/{d}/pearson_{name}"] = np.asarray(v, dtype=np.float64)
    for method, matrix in result.mmcs_null.items():  # chance level of mmcs/<method>
        out[f"mmcs_null/{method}"] = matrix
    for d, (mean, p) in result.null.items():
        out[f"mcs/{d}/null_mean"], out[f"mcs/{d}/p_value"] = mean, p
    for split, rows in (("heldout", result.heldout_rows), ("pool", result.pool_rows)):
        out[f"{split}/image_ids"] = rows.image_ids
        out[f"{split}/patch_image"] = rows.patch_image
        out[f"{split}/patch_index"] = rows.patch_index
    for m, values in result.importance.items():
        out[f"importance/{m}"] = values
    for m in result.layers:
        if m in result.rel_error:
            out[f"rel_error/{m}"] = np.asarray(result.rel_error[m], dtype=np.float64)
        for name, values in (result.stability.get(m) or {}).items():
            out[f"stability/{m}/{name}"] = np.asarray(values, dtype=np.float64)
    return out


def write_compare(path: PathLike, result: ClassComparison | Skipped, attrs: Mapping[str, Any]) -> None:
    """A compare file: the result flattened (:func:`compare_datasets`) and root attributes (``models`` JSON,
    ``pair``, ``class_id``)."""
    if isinstance(result, Skipped):
        return write_skipped(path, result, attrs)
    write_h5(path, compare_datasets(result), attrs={**attrs, SKIPPED: False})


def _models(f: h5py.File) -> tuple[str, str]:
    a, b = json.loads(f.attrs["models"])
    return str(a), str(b)


@dataclass(frozen=True)
class CompareStatus:
    pair: str
    class_id: str
    models: tuple[str, str]
    skipped: bool
    reason: str
    note: str = ""  # compared, but some numbers not scored (why)


def read_compare_status(path: PathLike) -> CompareStatus:
    """Which pair and class a compare file is about and whether it was skipped."""
    with _open(path) as f:
        return CompareStatus(
            str(f.attrs["pair"]),
            str(f.attrs["class_id"]),
            _models(f),
            bool(f.attrs.get(SKIPPED, False)),
            str(f.attrs.get(REASON, "")),
            str(f.attrs.get("note", "")),
        )


def read_compare_metrics(path: PathLike) -> dict[str, Any] | None:
    """Per-concept numbers of a compare file, None when skipped.

    -> ``{"models": (a, b), "class_id": str, "directions": {direction: {name: (k,)}},
    "rel_error": {model: (n_layers,)}}``; per direction: mcs_pearson, mcs_spearman,
    cmcs_pearson, cmcs_spearman, cv_cmcs_pearson, l2, kl, match_acc (the cross
    directions) and smcs_pearson, smcs_spearman (the self direction of the target); the
    uncertainty columns :data:`UNCERTAINTY_COLUMNS` (NaN when the file has none); ``note``: why some
    numbers are NaN (e.g. too few held-out images), "" when none; ``importance``: model -> ``(k,)``
    concept importance on the shared set when the file has it (``importance.images: shared``).
    """
    with _open(path) as f:
        if f.attrs.get(SKIPPED, False):
            return None
        a, b = _models(f)
        dirs = {}
        for src, tgt in ((b, a), (a, b)):
            d, same = direction(src, tgt), direction(tgt, tgt)
            dirs[d] = {
                "mcs_pearson": f[f"mcs/{d}/pearson"][()],
                "mcs_spearman": f[f"mcs/{d}/spearman"][()],
                "cmcs_pearson": f[f"regression/{d}/pearson"][()],
                "cmcs_spearman": f[f"regression/{d}/spearman"][()],
                "smcs_pearson": f[f"regression/{same}/pearson"][()],
                "smcs_spearman": f[f"regression/{same}/spearman"][()],
                "cv_cmcs_pearson": f[f"regression/{d}/cv_pearson"][()],
                **{name: f[f"replacement/{d}/{name}"][()] for name in REPLACEMENT_FIELDS},
            }
            k = len(dirs[d]["cmcs_pearson"])
            sources = {
                "cmcs_pearson_ci_low": f"regression/{d}/pearson_ci_low",
                "cmcs_pearson_ci_high": f"regression/{d}/pearson_ci_high",
                "smcs_pearson_ci_low": f"regression/{same}/pearson_ci_low",
                "smcs_pearson_ci_high": f"regression/{same}/pearson_ci_high",
                "cmcs_pearson_se_z": f"regression/{d}/pearson_se_z",
                "cmcs_pearson_df": f"regression/{d}/pearson_df",
                "mcs_pearson_ci_low": f"mcs/{d}/pearson_ci_low",
                "mcs_pearson_ci_high": f"mcs/{d}/pearson_ci_high",
                "mcs_null_mean": f"mcs/{d}/null_mean",
                "mcs_p_value": f"mcs/{d}/p_value",
                "stability_cosine": f"stability/{tgt}/cosine",
                "stability_self_mcs": f"stability/{tgt}/self_mcs",
            }
            for column, name in sources.items():
                dirs[d][column] = f[name][()] if name in f else np.full(k, np.nan)
        rel = {m: f[f"rel_error/{m}"][()] for m in (a, b)}
        note = str(f.attrs.get("note", ""))
        importance = {m: f[f"importance/{m}"][()] for m in (a, b) if f"importance/{m}" in f}
        has_stability = {m: f"stability/{m}/self_mcs" in f for m in (a, b)}
        return {
            "has_stability": has_stability,
            "models": (a, b),
            "class_id": str(f.attrs["class_id"]),
            "directions": dirs,
            "rel_error": rel,
            "note": note,
            "importance": importance,
        }


UNCERTAINTY_COLUMNS = (
    "cmcs_pearson_ci_low",
    "cmcs_pearson_ci_high",
    "smcs_pearson_ci_low",
    "smcs_pearson_ci_high",
    "cmcs_pearson_se_z",
    "cmcs_pearson_df",
    "mcs_pearson_ci_low",
    "mcs_pearson_ci_high",
    "mcs_null_mean",
    "mcs_p_value",
    "stability_cosine",
    "stability_self_mcs",
)


def read_mmcs(path: PathLike, method: str) -> tuple[np.ndarray, list[str], list[str]] | None:
    """``(MMCS (La, Lb), layers_a, layers_b)`` of one class, None when skipped."""
    with _open(path) as f:
        if f.attrs.get(SKIPPED, False):
            return None
        a, b = _models(f)
        return f[f"mmcs/{method}"][()], list(read_strings(f[f"layers/{a}"])), list(read_strings(f[f"layers/{b}"]))


def read_mmcs_null(path: PathLike, method: str) -> np.ndarray | None:
    """The chance level ``(La, Lb)`` of a class's MMCS matrix (``mmcs_null/<method>``), None when the
    class was skipped or the file has none (``uncertainty.mmcs_permutations: 0``)."""
    with _open(path) as f:
        if f.attrs.get(SKIPPED, False) or f"mmcs_null/{method}" not in f:
            return None
        return f[f"mmcs_null/{method}"][()]


def read_heldout(path: PathLike, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Held-out concept coefficients ``U (m, k)`` of ``model`` and the rows: image_ids, patch_image, patch_index."""
    with _open(path) as f:
        return (
            f[f"heldout/U/{model}"][()],
            read_strings(f["heldout/image_ids"]),
            f["heldout/patch_image"][()],
            f["heldout/patch_index"][()],
        )


def read_prediction(path: PathLike, source: str, target: str) -> np.ndarray:
    """The held-out coefficients of ``target``'s concepts predicted from ``source``'s activations ``(m, k)``
    (``source == target``: the model's own regression, whose score is SMCS)."""
    with _open(path) as f:
        return f[f"regression/{direction(source, target)}/pred"][()]


def read_concept_views(path: PathLike, source: str, target: str, concept: int | None = None) -> dict[str, Any]:
    """What a gallery of one concept needs: ``views (3, n)`` held-out rows (top real, over, under; -1 = none),
    the target's real and the source's predicted coefficient per held-out row ``(m,)``, and the rows.
    ``concept=None``: every concept of the target at once, ``views (k, 3, n)``, ``real`` and ``pred (m, k)``."""
    d = direction(source, target)
    pick = slice(None) if concept is None else concept
    with _open(path) as f:
        return {
            "views": f[f"views/{d}"][pick],
            "real": f[f"heldout/U/{target}"][:, pick],
            "pred": f[f"regression/{d}/pred"][:, pick],
            "image_ids": read_strings(f["heldout/image_ids"]),
            "patch_image": f["heldout/patch_image"][()],
            "patch_index": f["heldout/patch_index"][()],
        }


# ---------------------------------------------------------------- layerwise MMCS (HDF5, per pair)
def write_layerwise(
    path: PathLike,
    models: tuple[str, str],
    mean: Mapping[str, np.ndarray],
    count: Mapping[str, np.ndarray],
    layers: Mapping[str, Sequence[str]],
    attrs: Mapping[str, Any],
    intervals: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    null: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Mean MMCS over classes per method ``(La, Lb)``, the number of classes per cell, the layer names;
    ``intervals``: method -> (low, high) ``(La, Lb)`` bootstrap over classes (``<method>_ci_low/high``);
    ``null``: method -> ``(La, Lb)`` the chance level (mean over classes of the per-class permutation null,
    ``<method>_null``) and the calibrated matrix, mean minus chance (``<method>_calibrated``)."""
    a, b = models
    data = {
        **{m: mean[m] for m in mean},
        **{f"n_classes/{m}": count[m] for m in count},
        f"layers/{a}": np.array(list(layers[a]), dtype=object),
        f"layers/{b}": np.array(list(layers[b]), dtype=object),
    }
    for m, (low, high) in (intervals or {}).items():
        data[f"{m}_ci_low"], data[f"{m}_ci_high"] = low, high
    for m, chance in (null or {}).items():
        data[f"{m}_null"], data[f"{m}_calibrated"] = chance, mean[m] - chance
    write_h5(path, data, attrs={**attrs, "models": [a, b]})


def read_layerwise(path: PathLike, method: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """``(mean (La, Lb), n_classes (La, Lb), layers_a, layers_b)``."""
    with _open(path) as f:
        a, b = _models(f)
        return (
            f[method][()],
            f[f"n_classes/{method}"][()],
            list(read_strings(f[f"layers/{a}"])),
            list(read_strings(f[f"layers/{b}"])),
        )


# ---------------------------------------------------------------- tidy concept table (CSV, per pair)
def read_concept_table(path: PathLike) -> pd.DataFrame:
    """A pair's tidy concept table (``rsvc.tables.CONCEPT_COLUMNS``, one row per class, direction and
    concept), as written by the aggregate_pair job; ids and names as ``str``, numbers as float64
    (NaN for empty cells; only empty cells: a class named "NA" stays a name)."""
    text = {"pair": str, "model_a": str, "model_b": str, "class_id": str, "class_name": str, "note": str}
    pd = _pd()
    table = pd.read_csv(path, dtype=text, keep_default_na=False, na_values=[""])
    for column in set(text) & set(table.columns):
        table[column] = table[column].fillna("")
    if "unique" in table.columns:  # True / False / empty (undefined: NA, never False)
        table["unique"] = (
            table["unique"].map({True: True, False: False, "True": True, "False": False}).astype("boolean")
        )
    return table
