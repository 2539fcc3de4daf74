"""Checks of a run's configuration before any job starts.

Each problem is reported with the config key that causes it and the fix, so
that a typo costs seconds, not a cluster allocation. Structural errors
(unknown keys, wrong types) are caught earlier by the JSON schema.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rsvc.specs import n_patches


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
    first: dict[frozenset[str], int] = {}  # each unordered pair -> where it is first listed
    for i, (a, b) in enumerate(pairs):
        for m in (a, b):
            if m not in models:
                errors.append(f"pairs[{i}]: unknown model '{m}'; models are: {', '.join(models)}")
        if a == b:
            errors.append(f"pairs[{i}]: a model is compared with itself ('{a}'); list two different models")
        j = first.setdefault(frozenset((a, b)), i)
        if j != i:
            a0, b0 = pairs[j]
            how = "again" if (a0, b0) == (a, b) else "in the other order"
            errors.append(
                f"pairs[{i}]: [{a}, {b}] is pairs[{j}] [{a0}, {b0}] {how}; a pair's results already hold both "
                f"directions ({a0}'s concepts predicted from {b0} and {b0}'s from {a0}), so list each pair once"
            )
    for key, ids in (("dataset.classes", classes), ("synthetic.classes", config.get("synthetic", {}).get("classes"))):
        errors += [f"{key}: {problem}" for problem in _class_id_problems(ids or [])]
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
    else:  # k above the patches of a small class: that class is skipped with its reason (rsvc.concepts.concepts_job)
        n_grid = n_patches(ds["image_size"], ds["patch_size"])
        c = config["concepts"]
        if c["k"] > c["concept_images"] * n_grid:
            errors.append(
                f"concepts.k={c['k']} is larger than the {c['concept_images'] * n_grid} patches of the largest "
                f"concept sample (concepts.concept_images={c['concept_images']} images, {n_grid} patches each): "
                "every class would be skipped; lower concepts.k or raise concepts.concept_images"
            )
    if config["regression"]["folds"] > config["concepts"]["min_images"]:
        errors.append(
            f"regression.folds={config['regression']['folds']} exceeds concepts.min_images="
            f"{config['concepts']['min_images']}: folds keep images together, so every class needs at least "
            "as many images as folds"
        )
    return errors


# Snakemake (9) reads "<name>" in a file path as a path variable (snakemake.pathvars.PATHVAR_REGEX).
_PATHVAR = re.compile(r"<[a-z][a-z0-9_]*>")


def _class_id_problems(classes: list[str]) -> list[str]:
    """Class ids that cannot be file names of the outputs: each is a folder of the dataset
    (<root>/<split>/<id>) and names output files (<id>.h5) that Snakemake reads as patterns."""
    problems = []
    bad = [c for c in classes if c in ("", ".", "..") or "/" in c or "\0" in c]
    if bad:
        problems.append(
            f"{', '.join(repr(c) for c in bad[:5])}: a class id is a folder name (<root>/<split>/<id>) and a file "
            "name of the outputs, so it must not be empty, '.' or '..' nor contain '/'; rename the class folder"
        )
    bad = [c for c in classes if "{" in c or "}" in c or _PATHVAR.search(c)]
    if bad:
        problems.append(
            f"{', '.join(repr(c) for c in bad[:5])}: a class id names output files, in which Snakemake reads "
            "'{...}' as a wildcard and '<name>' (lower-case letters, digits, '_') as a path variable; rename the "
            "class folder (a readable name with any characters can follow the id in a class-list file)"
        )
    return problems


def check_dataset(
    root: str | Path,
    splits: list[str],
    classes: list[str],
    produced_by_workflow: bool,
    analyze: list[str] | None = None,
    image_sets: str = "predicted",
) -> tuple[list[str], list[str]]:
    """Dataset folders: ``(errors, notes)``.

    The split folders must exist (unless the workflow draws the dataset itself). Class folders may be
    missing or empty where that is harmless: with ``image_sets: predicted`` (a class's images are those
    a model predicts as it, from any folder) and, with ``labels``, for classes outside ``analyze``. One
    note per split counts them. The class list itself is never the fix: it is the model's label order.
    """
    if produced_by_workflow:
        return [], []
    root = Path(root)
    if not root.is_dir():
        return [f"dataset.root: folder '{root}' does not exist; point dataset.root at an ImageFolder tree"], []
    analyze = list(classes if analyze is None else analyze)
    errors, notes = [], []
    for split in splits:
        folder = root / split
        if not folder.is_dir():
            errors.append(
                f"dataset.pool_split/heldout_split: folder '{folder}' does not exist; "
                f"the splits found are: {', '.join(sorted(p.name for p in root.iterdir() if p.is_dir()))}"
            )
            continue
        present = {p.name for p in folder.iterdir() if p.is_dir()}
        missing = [c for c in classes if c not in present]
        if len(missing) == len(classes):
            errors.append(
                f"dataset.root: no folder under '{folder}' is named after a class id of dataset.classes "
                f"(found e.g. {', '.join(sorted(present)[:3]) or 'nothing'}; class ids e.g. {', '.join(classes[:3])}); "
                "name the class folders by class id"
            )
            continue
        if image_sets == "labels":
            needed = [c for c in analyze if c in set(missing)]
            if needed:
                errors.append(
                    f"dataset.image_sets: labels takes the images of folder c for class c, and {len(needed)} analysed "
                    f"classes have no folder under '{folder}' (e.g. {', '.join(needed[:3])}); add those folders, "
                    "leave them out of dataset.analyze_classes, or use dataset.image_sets: predicted "
                    "(dataset.classes stays as it is: it is the models' label order)"
                )
        if missing:
            notes.append(
                f"dataset: {len(missing)} of {len(classes)} class folders missing under '{folder}' (e.g. "
                f"{', '.join(missing[:3])}); harmless: those classes only have the images the models predict as them"
                + (" (dataset.image_sets: predicted)" if image_sets == "predicted" else " and are not analysed")
            )
    return errors, notes


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


def check_model(
    name: str, spec: Mapping[str, Any], n_classes: int, checkpoint_made_by_workflow: bool = False
) -> list[str]:
    """The timm name exists, the layers exist, the output size matches the class list, and a
    ``.safetensors`` checkpoint holds exactly the model's tensors with their shapes.

    The network is built on the meta device and of the checkpoint only the header is read: no
    weights, no memory, no download. ``checkpoint_made_by_workflow``: the file is an output of
    this run (the demo trains it), so it need not exist yet.
    """
    import timm
    import torch

    from rsvc.layers import LayerSelectionError, resolve_layers

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
            model = timm.create_model(
                spec["timm_name"],
                pretrained=False,
                pretrained_cfg_overlay=dict(spec["pretrained_cfg_overlay"]),
                **kwargs,
            )
    except Exception as exc:  # noqa: BLE001 - report any construction error with its key
        return [f"{key}: timm.create_model('{spec['timm_name']}', **model_kwargs) failed: {exc}"]
    errors = []
    try:  # a dummy forward pass on the meta device: shapes only, no weights
        resolve_layers(model, spec["layers"], model_name=name)
    except LayerSelectionError as exc:
        errors.append(f"{key}.layers: {exc}")
    errors += _check_checkpoint(key, spec, model, checkpoint_made_by_workflow)
    out = getattr(model, "num_classes", None)
    if out is not None and out != n_classes:
        errors.append(
            f"{key}: the model has {out} outputs but dataset.classes lists {n_classes} classes; class ids must "
            f"map to the model's label space (set {key}.num_classes or fix dataset.classes)"
        )
    return errors


def _check_checkpoint(key: str, spec: Mapping[str, Any], model: Any, made_by_workflow: bool) -> list[str]:
    from rsvc.checkpoints import CheckpointError, compare_tensors, read_safetensors_header

    path = spec["checkpoint"]
    if not path:
        return []
    if not Path(path).is_file():
        if made_by_workflow:
            return []
        return [
            f"{key}.checkpoint: {path} does not exist; fix the path or remove the key (pretrained: true uses "
            "timm's weights)"
        ]
    if not str(path).endswith(".safetensors"):
        return []  # .pth: a pickle container, checked when the job loads it
    try:
        stored = read_safetensors_header(path)
    except CheckpointError as exc:
        return [f"{key}.checkpoint: {exc}; save the state dict with safetensors.torch.save_file"]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problem = compare_tensors(expected, stored)
    if problem is None:
        return []
    what = f"timm {spec['timm_name']}" + (f" with num_classes={spec['num_classes']}" if spec["num_classes"] else "")
    return [
        f"{key}.checkpoint: {path} does not fit {what}: {problem}; check timm_name, num_classes and "
        "model_kwargs against the checkpoint"
    ]


def check_device(device: str, local: bool) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of ``extraction.device``: cuda without a visible GPU is an error when the jobs
    run here, a warning when they are submitted to a cluster (the compute nodes may have one)."""
    if not device.startswith("cuda"):
        return [], []
    try:
        import torch
    except ImportError:
        return [], []
    if torch.cuda.is_available():
        return [], []
    if local:
        return [
            f"extraction.device={device}: no CUDA GPU is visible on this machine; use device: auto "
            "(cuda where there is one, else cpu) or cpu, or submit to a cluster with --profile profiles/slurm"
        ], []
    return [], [
        f"extraction.device={device}: this machine has no CUDA GPU; the jobs are submitted, so the compute "
        "nodes must have one"
    ]


def read_class_list(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """Class ids (and readable names) from a class-list file: one id per line, optionally a tab and a name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"configuration problems:\n  - dataset.classes: class-list file '{path}' does not exist (relative "
            f"paths are relative to {Path.cwd()}); give the file's path or list the class ids in the config"
        )
    ids, names = [], {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        cid, _, name = line.partition("\t")
        ids.append(cid.strip())
        if name.strip():
            names[cid.strip()] = name.strip()
    return ids, names


def message(errors: list[str]) -> str:
    return "configuration problems:\n  - " + "\n  - ".join(errors)


def raise_if(errors: list[str]) -> None:
    if errors:
        raise ConfigError(message(errors))


def _model_check_key(name: str, spec: Mapping[str, Any], n_classes: int, made_by_workflow: bool) -> str:
    """What a model check's outcome depends on: the spec, the class count, the timm and torch versions and
    the checkpoint file's size and modification time (all known without importing torch)."""
    import hashlib
    import json
    from importlib import metadata

    versions = {}
    for package in ("timm", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    ckpt = spec.get("checkpoint")
    stat = None
    if ckpt and Path(ckpt).is_file():
        st = Path(ckpt).stat()
        stat = [st.st_size, st.st_mtime_ns]
    blob = json.dumps([name, dict(spec), n_classes, made_by_workflow, versions, stat], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_models_cached(
    models: Mapping[str, Mapping[str, Any]], n_classes: int, made_by_workflow: Iterable[str], cache: Path
) -> tuple[list[str], list[str]]:
    """:func:`check_model` for every model, skipping those that passed before with the same inputs.

    ``cache``: a JSON list of the keys of passed checks (``.snakemake/`` of the working directory), so a
    second dry-run or the run after a dry-run imports neither torch nor timm. -> ``(errors, notes)``.
    """
    import json
    import os

    made = set(made_by_workflow)
    try:
        passed = set(json.loads(cache.read_text()))
    except (OSError, ValueError):
        passed = set()
    keys = {m: _model_check_key(m, spec, n_classes, m in made) for m, spec in models.items()}
    todo = [m for m in models if keys[m] not in passed]
    if not todo:
        return [], []
    unavailable = model_checks_unavailable()
    if unavailable:
        return [], [unavailable]
    errors = []
    for m in todo:
        found = check_model(m, models[m], n_classes, checkpoint_made_by_workflow=m in made)
        errors += found
        if not found and not (m in made and not Path(models[m]["checkpoint"] or "").is_file()):
            passed.add(keys[m])  # a checkpoint still to be made is checked again once it exists
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(sorted(passed)))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only working directory: the checks simply run again next time
    return errors, []
