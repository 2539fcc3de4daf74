"""Pretrained timm weights: where they live in the local cache, and fetching them.

Compute jobs never download: :func:`require_cached_weights` finds the file that
``timm.create_model(name, pretrained=True)`` would load in the local Hugging
Face cache (``$HF_HOME/hub``, or ``$TORCH_HOME/hub/checkpoints`` for weights
that timm only knows by URL) and raises :class:`MissingWeightsError` at once,
naming the model and the command that fetches it, when it is not there.
:func:`fetch_weights` fills the cache on a machine with internet access (the
workflow's ``fetch_weights`` local rule, on a SLURM login node).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

#: The workflow puts the exact fetch command for its config here (rules/weights.smk).
FETCH_COMMAND_ENV = "RSVC_FETCH_WEIGHTS_COMMAND"
DEFAULT_FETCH_COMMAND = "snakemake --cores 1 fetch_weights --configfile <your config>"
_HF_PREFIX = "hf-hub:"


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not in the local cache; the message says how to fetch them."""


@dataclass(frozen=True)
class WeightsSource:
    """Where timm takes a model's pretrained weights from.

    ``kind`` is ``"hf-hub"`` (``location`` = repo id, ``revision`` optional,
    ``filenames`` = the files timm tries, in order, the first present wins),
    ``"url"`` (``location`` = the URL, cached under torch hub's
    ``checkpoints/``) or ``"file"`` (``location`` = a local path).
    """

    kind: str
    location: str
    filenames: tuple[str, ...] = ()
    revision: str | None = None


def _hf_candidates(filename: str | None) -> tuple[str, ...]:
    """timm's order: the safetensors twin of a ``.bin`` first, then the file itself."""
    filename = filename or "pytorch_model.bin"
    if filename == "pytorch_model.bin":
        return ("model.safetensors", filename)
    if filename == "open_clip_pytorch_model.bin":
        return ("open_clip_model.safetensors", filename)
    if filename.endswith(".bin"):
        return (filename[:-4] + ".safetensors", filename)
    return (filename,)


def weights_source(timm_name: str) -> WeightsSource:
    """The source timm resolves for ``timm.create_model(timm_name, pretrained=True)``.

    Registry names (``resnet18.a2_in1k``; no tag = timm's default tag) and
    ``hf-hub:<repo>`` names. ``ValueError`` if timm has no pretrained weights
    for the name.
    """
    if timm_name.startswith(_HF_PREFIX):
        repo, _, revision = timm_name[len(_HF_PREFIX) :].partition("@")
        return WeightsSource("hf-hub", repo, _hf_candidates(None), revision or None)
    import timm.models

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights for '{timm_name}' (see timm.list_pretrained())")
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        return WeightsSource("hf-hub", repo, _hf_candidates(cfg.hf_hub_filename), revision or None)
    if cfg.url:
        return WeightsSource("url", cfg.url, (os.path.basename(urlparse(cfg.url).path),))
    if cfg.file:
        return WeightsSource("file", str(cfg.file))
    raise ValueError(f"timm has no pretrained weights for '{timm_name}' (see timm.list_pretrained())")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache this process reads (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_weights_file(timm_name: str) -> Path | None:
    """The local weights file timm would load for ``timm_name``, or None when not cached.

    Reads the cache only: no network access whatever ``HF_HUB_OFFLINE`` says.
    """
    source = weights_source(timm_name)
    if source.kind == "hf-hub":
        from huggingface_hub import try_to_load_from_cache

        for filename in source.filenames:
            hit = try_to_load_from_cache(source.location, filename, revision=source.revision)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
        return None
    if source.kind == "url":
        from torch.hub import get_dir

        path = Path(get_dir()) / "checkpoints" / source.filenames[0]
        return path if path.is_file() else None
    path = Path(source.location)
    return path if path.is_file() else None


def _describe(source: WeightsSource) -> str:
    if source.kind == "hf-hub":
        rev = f"@{source.revision}" if source.revision else ""
        return f"{source.location}{rev} ({' or '.join(source.filenames)}) in the Hugging Face cache {hub_cache_dir()}"
    if source.kind == "url":
        from torch.hub import get_dir

        return (
            f"{source.filenames[0]} in the torch hub cache {Path(get_dir()) / 'checkpoints'} (from {source.location})"
        )
    return f"the file {source.location}"


def require_cached_weights(timm_name: str, model: str | None = None) -> Path:
    """The cached weights file of ``timm_name``; :class:`MissingWeightsError` at once if absent.

    The message names the model (``model``: its name in the config), the file
    that was looked for and where, and the command that fetches it (taken from
    ``$RSVC_FETCH_WEIGHTS_COMMAND``, which the workflow sets for its config).
    """
    path = cached_weights_file(timm_name)
    if path is not None:
        return path
    source = weights_source(timm_name)
    label = f"model '{model}' (timm '{timm_name}')" if model else f"timm model '{timm_name}'"
    offline = " (this job runs offline: HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
    command = os.environ.get(FETCH_COMMAND_ENV) or DEFAULT_FETCH_COMMAND
    raise MissingWeightsError(
        f"pretrained weights of {label} are not cached: looked for {_describe(source)}. "
        f"Jobs never download weights{offline}. Fetch them once on a machine with internet access "
        f"that sees the same cache (e.g. the SLURM login node, with the same HF_HOME / TORCH_HOME):\n"
        f"    {command}"
    )


def fetch_weights(timm_name: str) -> Path:
    """Download the pretrained weights of ``timm_name`` into the local cache; returns the file.

    ``timm.create_model(timm_name, pretrained=True)``: timm's own download path,
    which also checks that the weights load into the architecture. Needs
    internet access and ``HF_HUB_OFFLINE`` unset (or 0) before huggingface_hub
    is imported.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise RuntimeError(
            "HF_HUB_OFFLINE is set in this process: fetching weights needs the network "
            "(set HF_HUB_OFFLINE=0 before importing huggingface_hub)"
        )
    import timm

    timm.create_model(timm_name, pretrained=True)
    path = cached_weights_file(timm_name)
    if path is None:  # pragma: no cover - timm loaded from a place this module does not know
        raise RuntimeError(
            f"timm loaded '{timm_name}' but the weights are not where rsvc looks: {_describe(weights_source(timm_name))}"
        )
    return path
