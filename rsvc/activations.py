"""Patch activations (the GPU half of the workflow): every patch of every image, all layers, one HDF5 file.

Data flow of :func:`extract_to_h5`: DataLoader workers decode each image, make the canonical square
and cut the patch grid (:mod:`rsvc._loading`); the main process moves a batch of patches to the device,
resizes and normalises it for the model (:func:`rsvc._transfer.model_inputs`) and runs ONE forward pass
in which forward hooks on every requested layer pool the outputs immediately (:mod:`rsvc._features`),
so no full feature map is kept. The pooled layers of a batch reach the host in ONE copy
(:class:`rsvc._transfer.HostTransfer`), collected while the next batch's forward pass runs on the
device. A background thread appends each batch to chunked HDF5 datasets while the next batch runs.
``ExtractionSettings.compile`` runs the forward pass through ``torch.compile``
(:func:`rsvc._transfer.fixed_rows`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from rsvc._features import HookedForward
from rsvc._loading import CanonicalImages, make_loader, progress_bar
from rsvc._manipulate import prepare_model
from rsvc._transfer import HostTransfer, Ticket, autocast, cuda_setup, fixed_rows, model_inputs, resolve_device
from rsvc.formats import ActivationFile
from rsvc.io import atomic_path
from rsvc.models import model_data_config
from rsvc.patches import patch_boxes, patch_stride
from rsvc.settings import ExtractionSettings

log = logging.getLogger(__name__)

_STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}


class _Writer:
    """Appends row blocks to resizable HDF5 datasets in a background thread."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is not None:
                continue
            try:
                for ds, block in job:
                    n = ds.shape[0]
                    ds.resize(n + block.shape[0], axis=0)
                    ds[n:] = block
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                self.error = exc

    def put(self, job: list[tuple[h5py.Dataset, np.ndarray]]) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(job)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _chunk_rows(d: int, itemsize: int) -> int:
    return int(max(16, min(4096, (1 << 20) // max(1, d * itemsize))))


def extract_to_h5(
    model: nn.Module,
    layers: Sequence[str],
    items: dict[str, list[tuple[str, str]]],
    out_path: str | os.PathLike,
    settings: ExtractionSettings,
    attrs: dict[str, Any],
) -> dict[str, float]:
    """Pooled activations of every patch of every image, all layers, into one HDF5 file.

    items: ``{class_id: [(image_id, path), ...]}``. Written atomically in the layout of
    :class:`rsvc.formats.ActivationFile` (read with :func:`rsvc.formats.read_class_activations`):
    per class ``(n_patches, d)`` activations of every layer in ``storage_dtype``, the readable
    images in input order and each patch's image and grid position; the unreadable images
    (skipped with a warning); root attributes: the settings, ``folded_batchnorms``, ``layers``,
    ``classes``, ``model`` (``attrs["model"]`` or the timm architecture), the model's data
    config, the patch grid, and ``attrs``.

    Non-finite activations raise ``FloatingPointError`` naming model, layer, class and image.

    Returns the timing of the forward loop (``_loop_stats``): ``patches``, ``seconds``, and
    ``steady_patches_per_s`` (after the first batch, which pays for cuDNN autotuning and
    ``torch.compile``), ``loop_start`` and ``loop_end`` (``time.time()``, to match GPU samples).
    """
    layers = list(layers)
    device = resolve_device(settings.device)
    model, folded = prepare_model(model, device, settings, keep=layers)
    cfg = model_data_config(model)
    model_name = str(attrs.get("model", getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)))
    if settings.patch_size is None:
        raise ValueError("extract_to_h5 needs ExtractionSettings.patch_size (dataset.patch_size)")
    storage = _STORAGE_DTYPES[settings.storage_dtype]
    boxes = patch_boxes(settings.image_size, settings.patch_size)
    n_grid = len(boxes)
    flat = [(cid, iid, path) for cid, lst in items.items() for iid, path in lst]
    dataset = CanonicalImages([p for _, _, p in flat], settings.image_size, settings.patch_size)

    forward = HookedForward(model, layers, settings.token)
    cuda_setup(device)
    images_per_batch = max(1, settings.batch_size // n_grid)
    run = fixed_rows(forward.__call__, images_per_batch * n_grid) if settings.compile else forward
    try:
        with torch.inference_mode(), autocast(device, settings.autocast):  # probe: widths, every hook fires
            probe = forward(torch.zeros((1, *cfg["input_size"]), device=device))
        dims = {n: int(v.shape[1]) for n, v in probe.items()}

        root_attrs = {
            **asdict(settings),
            "device_used": str(device),
            "folded_batchnorms": folded,
            "layers": layers,
            "classes": list(items),
            "model": model_name,
            "architecture": getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__),
            "input_size": list(cfg["input_size"]),
            "mean": list(cfg["mean"]),
            "std": list(cfg["std"]),
            "patch_stride": patch_stride(settings.patch_size),
            "patches_per_image": n_grid,
            "patch_boxes": boxes,
            **attrs,
        }
        with atomic_path(out_path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
            store = ActivationFile(
                f,
                items,
                dims,
                storage,
                {n: _chunk_rows(d, np.dtype(storage).itemsize) for n, d in dims.items()},
                class_rows={cid: len(images) * n_grid for cid, images in items.items()},
            )
            image_ids: dict[str, list[str]] = {cid: [] for cid in items}
            skipped: list[tuple[str, str, str, str]] = []
            writer = _Writer()
            transfer = HostTransfer(pin=device.type == "cuda")
            done: list[tuple[float, float, int]] = []  # per batch: submitted, on the host (time.time()), patches

            def finish(ticket: Ticket, ok: list[int], submitted: float) -> None:
                blocks = transfer.collect(ticket, storage)
                _check_finite(blocks, ok, n_grid, flat, model_name, settings.storage_dtype)
                writer.put(_route(blocks, ok, n_grid, flat, store, image_ids))
                done.append((submitted, time.time(), len(ok) * n_grid))

            bar = progress_bar(len(flat) * n_grid, "patch", f"{model_name} activations")
            loop_start = time.time()
            pending: tuple[Ticket, list[int], float] | None = None  # the batch whose copy is in flight
            try:
                for index, counts, x, reasons in make_loader(dataset, images_per_batch, settings, device):
                    index, counts = index.tolist(), counts.tolist()
                    for i, c, r in zip(index, counts, reasons):
                        if c == 0:
                            skipped.append((*flat[i], r))
                            log.warning("skipped unreadable image (class %s, image %s): %s", flat[i][0], flat[i][1], r)
                    ok = [i for i, c in zip(index, counts) if c > 0]
                    if ok:
                        with torch.inference_mode():
                            with autocast(device, settings.autocast):
                                out = run(model_inputs(x, cfg, device, settings))
                            ticket = transfer.submit(out)  # queued behind this forward pass
                        if pending is not None:  # the previous batch, while this one runs on the device
                            finish(*pending)
                        pending = (ticket, ok, time.time())
                    bar.update(len(index) * n_grid)
                if pending is not None:
                    finish(*pending)
            finally:
                writer.close()
                bar.close()
            stats = _loop_stats(loop_start, done)
            log.info(
                "%s: %d patches in %.1f s (%.0f patches/s; after the first batch %.0f patches/s)",
                model_name,
                stats["patches"],
                stats["seconds"],
                stats["patches"] / max(stats["seconds"], 1e-9),
                stats["steady_patches_per_s"],
            )

            store.finish(image_ids, n_grid, skipped, root_attrs)
    finally:
        forward.remove()
    return stats


def _loop_stats(loop_start: float, done: Sequence[tuple[float, float, int]]) -> dict[str, float]:
    """Timing of a forward loop from ``(time.time() when a batch was submitted, when it reached the host,
    its patches)`` per batch.

    ``steady_patches_per_s``: the patches after the first batch over the time from the first batch's
    submission (on the CPU: its forward pass done; on CUDA: its kernels queued, after any compilation
    and cuDNN autotuning) to the last batch on the host; NaN with one batch. On CUDA the interval
    still holds the first batch's device time, so the rate errs low.
    """
    end = done[-1][1] if done else loop_start
    patches = sum(n for _, _, n in done)
    steady = float("nan")
    if len(done) > 1 and end > done[0][0]:
        steady = (patches - done[0][2]) / (end - done[0][0])
    return {
        "patches": patches,
        "seconds": end - loop_start,
        "steady_patches_per_s": steady,
        "loop_start": loop_start,
        "loop_end": end,
    }


def _route(
    blocks: dict[str, np.ndarray],
    ok: list[int],
    n_grid: int,
    flat: list[tuple[str, str, str]],
    store: ActivationFile,
    image_ids: dict[str, list[str]],
) -> list[tuple[h5py.Dataset, np.ndarray]]:
    """Split a batch's rows into per-class runs (a batch can span classes); record the image ids."""
    job, start = [], 0
    while start < len(ok):
        cid = flat[ok[start]][0]
        stop = start
        while stop < len(ok) and flat[ok[stop]][0] == cid:
            image_ids[cid].append(str(flat[ok[stop]][1]))
            stop += 1
        rows = slice(start * n_grid, stop * n_grid)
        job += [(store.dataset(cid, n), block[rows]) for n, block in blocks.items()]
        start = stop
    return job


def _check_finite(
    blocks: dict[str, np.ndarray], ok: list[int], n_grid: int, flat: list[tuple[str, str, str]], model: str, dtype: str
) -> None:
    for name, block in blocks.items():
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            cid, iid, path = flat[ok[row // n_grid]]
            raise FloatingPointError(
                f"non-finite activation (storage dtype {dtype}): model {model}, layer {name}, class {cid}, "
                f"image {iid} ({path}), patch {row % n_grid}"
            )
