"""Whole-image predictions (the GPU job that decides the image sets): the images of a shard's class
folders, each model's predicted class and its probability, unreadable images listed with the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from rsvc._loading import CanonicalImages, TimmEvalImages, make_loader, progress_bar, timm_eval_transform
from rsvc._manipulate import prepare_model
from rsvc._transfer import autocast, cuda_setup, fixed_rows, layout, model_inputs, resolve_device
from rsvc.formats import OK, SKIPPED_IMAGE
from rsvc.images import list_image_files
from rsvc.models import model_data_config
from rsvc.settings import ExtractionSettings

log = logging.getLogger(__name__)


def shard_images(root: str | Path, split: str, shard_classes: list[str], cap: int | None) -> pd.DataFrame:
    """The image files of a shard's class folders (``image_id`` relative to ``root``, ``path``, ``label``),
    at most ``cap`` per folder in file-name order. A missing class folder has no rows, as an empty one
    (the preflight says where that is harmful)."""
    root = Path(root)
    rows = []
    for cid in shard_classes:
        folder = root / split / cid
        files = list_image_files(folder) if folder.is_dir() else []
        if cap is not None and len(files) > cap:
            files = files[:cap]
        rows += [(str(f.relative_to(root)), str(f), cid) for f in files]
    return pd.DataFrame(rows, columns=["image_id", "path", "label"])


def predict_images(
    model: nn.Module, paths: Sequence[str | os.PathLike], settings: ExtractionSettings
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Predict whole images: canonical (``settings.preprocess="canonical"``: the shorter side resized to
    ``image_size``, centre crop, then the model's input size and normalisation) or through the model's
    own timm evaluation transform (``"timm_eval"``: :func:`timm_eval_transform`).

    Returns ``(pred_index (n_ok,) int64, max_prob (n_ok,) float64, skipped)``:
    the arrays follow ``paths`` with the unreadable images left out, and
    ``skipped`` lists ``(path, reason)`` for those. :func:`readable_mask`
    turns ``(paths, skipped)`` into the boolean mask of the kept paths.
    """
    device = resolve_device(settings.device)
    timm_eval = settings.preprocess == "timm_eval"
    model, _ = prepare_model(model, device, settings)
    cuda_setup(device)
    run = fixed_rows(model, settings.batch_size) if settings.compile else model
    cfg = model_data_config(model)
    if timm_eval:
        dataset = TimmEvalImages(paths, timm_eval_transform(model), cfg["input_size"])
    else:
        dataset = CanonicalImages(paths, settings.image_size, None)
    preds, probs, skipped = [], [], []
    bar = progress_bar(len(dataset), "img", "predict")
    with torch.inference_mode():
        for index, counts, x, reasons in make_loader(dataset, settings.batch_size, settings, device):
            skipped += [
                (str(dataset.paths[i]), r) for i, c, r in zip(index.tolist(), counts.tolist(), reasons) if c == 0
            ]
            if x.shape[0]:
                if timm_eval:  # already the model's input
                    inputs = layout(x.to(device, non_blocking=True), settings)
                else:
                    inputs = model_inputs(x, cfg, device, settings)
                with autocast(device, settings.autocast):
                    logits = run(inputs)
                prob = torch.softmax(logits.float(), dim=1)
                p, k = prob.max(dim=1)
                preds.append(k.cpu().numpy())
                probs.append(p.double().cpu().numpy())
            bar.update(len(index))
    bar.close()
    for _path, reason in skipped:
        log.warning("skipped unreadable image %s", reason)
    pred = np.concatenate(preds).astype(np.int64) if preds else np.zeros(0, np.int64)
    prob = np.concatenate(probs) if probs else np.zeros(0)
    return pred, prob, skipped


def readable_mask(paths: Sequence[str | os.PathLike], skipped: Iterable[tuple[str, str]]) -> np.ndarray:
    """Boolean ``(len(paths),)``: True where the image was read (aligns predictions with paths)."""
    bad = {p for p, _ in skipped}
    return np.array([str(p) not in bad for p in paths], dtype=bool)


def predictions_job(
    model: nn.Module, images: pd.DataFrame, classes: list[str], settings: ExtractionSettings
) -> pd.DataFrame:
    """Whole-image predictions of ``model`` (torch module) for the rows of :func:`shard_images`:
    the table of :func:`rsvc.formats.write_predictions` (unreadable images: status skipped, reason)."""
    images = images.copy()
    pred, prob, skipped = predict_images(model, list(images["path"]), settings)
    readable = readable_mask(list(images["path"]), skipped)
    images["status"] = SKIPPED_IMAGE
    images["pred_index"] = -1
    images["prob"] = np.nan
    images.loc[readable, "status"] = OK
    images.loc[readable, "pred_index"] = pred
    images.loc[readable, "prob"] = prob
    names = np.asarray(classes, dtype=object)
    images["pred_class"] = [names[i] if i >= 0 else "" for i in images["pred_index"]]
    reasons = dict(skipped)
    images["reason"] = [reasons.get(path, "") for path in images["path"]]
    return images
