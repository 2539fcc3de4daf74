"""Checks of a run's configuration before any job starts.

Each problem is reported with the config key that causes it and the fix, so
that a typo costs seconds, not a cluster allocation. Structural errors
(unknown keys, wrong types) are caught earlier by the JSON schema.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rsvc.specs import PRE_LOGITS, n_patches


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the fix."""


def _closest(name: str, valid: list[str], n: int = 5) -> str:
    close = difflib.get_close_matches(name, valid, n=n, cutoff=0.4)
    return ", ".join(close) if close else ", ".join(valid[:n])


def check_structure(
    config: Mapping[str, Any],
    classes: list[str],
    analyze: list[str],
    pairs: list[tuple[str, str]],
) -> list[str]:
    """Problems that need no model and no file system access."""
    errors: list[str] = []
    models = list(config["models"])
    for i, (a, b) in enumerate(pairs):
        for m in (a, b):
            if m not in models:
                errors.append(f"pairs[{i}]: unknown model '{m}'; models are: {', '.join(models)}")
        if a == b:
            errors.append(f"pairs[{i}]: a model is compared with itself ('{a}'); list two different models")
    unknown = [c for c in analyze if c not in set(classes)]
    if unknown:
        errors.append(f"dataset.analyze_classes: {unknown[:5]} not in dataset.classes; use ids from the class list")
    if len(set(classes)) != len(classes):
        errors.append("dataset.classes: duplicated class ids; each id must appear once")
    ds = config["dataset"]
    if ds["patch_size"] > ds["image_size"]:
        errors.append(
            f"dataset.patch_size={ds['patch_size']} is larger than dataset.image_size={ds['image_size']}; "
            "use a patch size <= the image size"
        )
    else:
        n_grid = n_patches(ds["image_size"], ds["patch_size"])
        c = config["concepts"]
        if c["k"] > c["min_images"] * n_grid:
            errors.append(
                f"concepts.k={c['k']} is larger than the {c['min_images'] * n_grid} patches of a class with "
                f"concepts.min_images={c['min_images']} images ({n_grid} patches each); lower concepts.k "
                "or raise concepts.min_images"
            )
    if config["regression"]["folds"] > config["concepts"]["min_images"]:
        errors.append(
            f"regression.folds={config['regression']['folds']} exceeds concepts.min_images="
            f"{config['concepts']['min_images']}: folds keep images together, so every class needs at least "
            "as many images as folds"
        )
    return errors


def check_dataset(root: str | Path, splits: list[str], classes: list[str], produced_by_workflow: bool) -> list[str]:
    """Dataset folders must exist (unless the workflow draws them itself)."""
    if produced_by_workflow:
        return []
    root = Path(root)
    if not root.is_dir():
        return [f"dataset.root: folder '{root}' does not exist; point dataset.root at an ImageFolder tree"]
    errors = []
    for split in splits:
        if not (root / split).is_dir():
            errors.append(
                f"dataset.pool_split/heldout_split: folder '{root / split}' does not exist; "
                f"the splits found are: {', '.join(sorted(p.name for p in root.iterdir() if p.is_dir()))}"
            )
            continue
        missing = [c for c in classes if not (root / split / c).is_dir()]
        if missing:
            errors.append(
                f"dataset.classes: {len(missing)} class folders missing under '{root / split}' "
                f"(e.g. {', '.join(missing[:3])}); fix dataset.classes or the dataset layout"
            )
    return errors


def model_checks_unavailable() -> str | None:
    """Why :func:`check_model` cannot run here (torch or timm missing, e.g. on a login node that has
    only Snakemake), or None. The jobs then check their model when they build it."""
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return (
            f"preflight: the model checks (timm names, layers, output sizes) were skipped: {exc.name} is not "
            "installed in this environment; the first job of each model checks it instead"
        )
    return None


def check_model(name: str, spec: Mapping[str, Any], n_classes: int) -> list[str]:
    """The timm name exists, the layers exist, and the output size matches the class list.

    The network is built on the meta device: no weights, no memory, no download.
    """
    import timm
    import torch

    key = f"models.{name}"
    if not timm.is_model(spec["timm_name"]):
        arch = spec["timm_name"].split(".")[0]
        return [
            f"{key}.timm_name: unknown timm model '{spec['timm_name']}'; closest: {_closest(arch, timm.list_models())}"
        ]
    kwargs = dict(spec["model_kwargs"])
    if spec["num_classes"] is not None:
        kwargs["num_classes"] = spec["num_classes"]
    try:
        with torch.device("meta"):
            model = timm.create_model(spec["timm_name"], pretrained=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - report any construction error with its key
        return [f"{key}: timm.create_model('{spec['timm_name']}', **model_kwargs) failed: {exc}"]
    errors = []
    layers = spec["layers"]
    if isinstance(layers, list):
        valid = [n for n, _ in model.named_modules() if n] + [PRE_LOGITS]
        for layer in layers:
            if layer not in valid:
                errors.append(
                    f"{key}.layers: '{layer}' is not a module of {spec['timm_name']}; closest: {_closest(layer, valid)}"
                )
    elif layers == "blocks" and not hasattr(model, "blocks"):
        errors.append(f"{key}.layers: 'blocks' needs a transformer with .blocks; {spec['timm_name']} has none")
    out = getattr(model, "num_classes", None)
    if out is not None and out != n_classes:
        errors.append(
            f"{key}: the model has {out} outputs but dataset.classes lists {n_classes} classes; class ids must "
            f"map to the model's label space (set {key}.num_classes or fix dataset.classes)"
        )
    return errors


def raise_if(errors: list[str]) -> None:
    if errors:
        raise ConfigError("configuration problems:\n  - " + "\n  - ".join(errors))
