"""Whole-image predictions and patch activations (the GPU half of the workflow).

Data flow of :func:`extract_to_h5`: DataLoader workers decode each image
(:func:`rsvc.images.load_rgb`), make the canonical square and cut the patch
grid (uint8, model independent); the main process moves a batch of patches to
the device, resizes and normalises it for the model
(:func:`rsvc.images.to_model_input`) and runs ONE forward pass in which
forward hooks on every requested layer pool the outputs immediately (global
average pool for 4-D ``(N, C, H, W)`` maps, class token or token mean for 3-D
``(N, T, D)`` token sequences), so no full feature map is kept. ``pre_logits``
is ``model.forward_head(model.forward_features(x), pre_logits=True)``, the
input of the linear classifier. The pooled layers of a batch reach the host in
ONE copy (:class:`HostTransfer`: concatenated on the device, copied without
blocking into a reusable pinned buffer, one synchronisation, split into
per-layer arrays), collected while the next batch's forward pass runs on the
device. A background thread appends each batch to chunked HDF5 datasets while
the next batch runs. ``ExtractionSettings.compile`` runs the forward pass
through ``torch.compile`` (:func:`fixed_rows`).
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from rsvc.formats import ActivationFile
from rsvc.images import ImageLoadError, canonical_uint8, load_rgb, to_model_input
from rsvc.io import atomic_path
from rsvc.models import fold_batchnorm, model_data_config
from rsvc.patches import extract_patches, patch_boxes, patch_stride
from rsvc.specs import PRE_LOGITS, ExtractionSettings  # noqa: F401 - ExtractionSettings re-exported

log = logging.getLogger(__name__)

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # keys: rsvc.specs.AUTOCAST_MODES
_STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------- data loading
class _CanonicalImages(Dataset):
    """Item i -> (i, uint8 tensor, reason): the patches ``(P, 3, p, p)`` of image i,
    or its canonical image ``(1, 3, S, S)`` when ``patch_size`` is None; an empty
    tensor and the reason when the file cannot be read."""

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int, patch_size: int | None):
        self.paths = list(paths)
        self.image_size = image_size
        self.patch_size = patch_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        side = self.patch_size or self.image_size
        try:
            canon = canonical_uint8(load_rgb(self.paths[i]), self.image_size)
        except ImageLoadError as exc:
            return i, torch.empty((0, 3, side, side), dtype=torch.uint8), str(exc)
        x = torch.from_numpy(canon.copy()).permute(2, 0, 1).unsqueeze(0)
        if self.patch_size is not None:
            x = extract_patches(x, self.patch_size)
        return i, x.contiguous(), ""


class _TimmEvalImages(Dataset):
    """Item i -> (i, float tensor ``(1, 3, H, W)`` normalised by the model's own timm evaluation
    transform (resize by ``crop_pct`` with its interpolation, centre crop), reason)."""

    def __init__(self, paths: Sequence[str | os.PathLike], transform: Any, input_size: Sequence[int]):
        self.paths = list(paths)
        self.transform = transform
        self.input_size = tuple(input_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        try:
            img = load_rgb(self.paths[i])
        except ImageLoadError as exc:
            return i, torch.empty((0, *self.input_size)), str(exc)
        return i, self.transform(img).unsqueeze(0), ""


def timm_eval_transform(model: nn.Module):
    """timm's own evaluation transform of ``model``: ``create_transform(**resolve_data_config(model=model))``."""
    import timm.data

    return timm.data.create_transform(**timm.data.resolve_data_config(model=model))


def _collate(batch: list[tuple[int, torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """-> (item indices (b,), rows per item (b,), all rows concatenated, reasons (b,))."""
    index = torch.tensor([b[0] for b in batch], dtype=torch.int64)
    counts = torch.tensor([b[1].shape[0] for b in batch], dtype=torch.int64)
    return index, counts, torch.cat([b[1] for b in batch]), [b[2] for b in batch]


def _loader(dataset: Dataset, items_per_batch: int, settings: ExtractionSettings, device: torch.device) -> DataLoader:
    workers = settings.num_workers
    return DataLoader(
        dataset,
        batch_size=items_per_batch,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )


def _progress(total: int, unit: str, desc: str) -> tqdm:
    tty = sys.stderr.isatty()
    return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, file=sys.stderr, mininterval=0.5 if tty else 30.0)


# ---------------------------------------------------------------- the forward pass
def _pool(out: Any, token: str, num_prefix_tokens: int, has_cls: bool) -> torch.Tensor:
    """Pool one layer output to ``(N, d)`` float32 (never keeps the feature map).

    4-D outputs are taken as ``(N, C, H, W)``; 3-D as ``(N, T, D)`` token sequences.
    """
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 4:
        return _spatial_mean(out)
    if out.ndim == 3:
        if token == "cls":
            if not has_cls:
                raise ValueError("token='cls' but the model has no class token; use token='mean'")
            return out[:, 0].float()
        return out[:, num_prefix_tokens:].mean(dim=1, dtype=torch.float32)
    if out.ndim == 2:
        return out.float()
    raise ValueError(f"cannot pool a layer output of shape {tuple(out.shape)}")


def _spatial_mean(x: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C)`` float32 mean, accumulated in float32.

    bf16/fp16 maps on CPU are summed ``rows`` pixels at a time: torch's CPU
    reduction with ``dtype=float32`` converts the whole map first, which costs
    more than the convolution that made it.
    """
    if x.dtype == torch.float32 or x.device.type != "cpu":
        return x.mean(dim=(2, 3), dtype=torch.float32)
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):
        pixels, dim = x.permute(0, 2, 3, 1).reshape(n, h * w, c), 1  # a view: (N, HW, C)
    else:
        pixels, dim = x.reshape(n, c, h * w), 2
    total = torch.zeros((n, c), dtype=torch.float32, device=x.device)
    for start in range(0, h * w, rows):
        total += pixels.narrow(dim, start, min(rows, h * w - start)).float().sum(dim)
    return total / (h * w)


class _HookedForward:
    """All requested layers pooled in one forward pass: ``self(x) -> {layer: (N, d) float32}``."""

    def __init__(self, model: nn.Module, layers: Sequence[str], token: str):
        self.model = model
        self.layers = list(layers)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self.has_cls = getattr(model, "cls_token", None) is not None
        self.token = token
        self.out: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self.handles = [
            modules[name].register_forward_hook(self._hook(name)) for name in self.layers if name != PRE_LOGITS
        ]

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.out[name] = _pool(output, self.token, self.num_prefix_tokens, self.has_cls)

        return hook

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.out = {}
        features = self.model.forward_features(x)
        pre = self.model.forward_head(features, pre_logits=True)
        if PRE_LOGITS in self.layers:
            self.out[PRE_LOGITS] = pre.float()
        missing = [n for n in self.layers if n not in self.out]
        if missing:
            raise RuntimeError(f"layers not run by forward_features/forward_head(pre_logits=True): {missing}")
        return {n: self.out[n] for n in self.layers}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _autocast(device: torch.device, mode: str | None):
    if mode is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[mode])


def _prepare_model(
    model: nn.Module, device: torch.device, settings: ExtractionSettings, keep: Sequence[str] = ()
) -> tuple[nn.Module, int]:
    """-> (the model ready for inference, number of BatchNorms folded).

    Folding works on a copy, so the caller's model keeps its modules; convs named
    in ``keep`` (requested layers) are not folded.
    """
    model = model.eval()
    folded = 0
    if settings.fold_batchnorm and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        model = copy.deepcopy(model)
        folded = fold_batchnorm(model, keep)
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, folded


def _layout(x: torch.Tensor, settings: ExtractionSettings) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x


def _model_inputs(x: torch.Tensor, cfg: dict, device: torch.device, settings: ExtractionSettings) -> torch.Tensor:
    """uint8 canonical images or patches -> the model's normalised input on ``device``."""
    return _layout(
        to_model_input(x.to(device, non_blocking=True), cfg["input_size"], cfg["mean"], cfg["std"]), settings
    )


# ---------------------------------------------------------------- one device-to-host copy per batch
def concat_pooled(out: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, list[tuple[str, int, int]]]:
    """``{layer: (N, d_l) float32}`` -> ``((N, sum_l d_l) float32 on their device, [(layer, start, stop)])``:
    the layers side by side, so that one copy moves them all."""
    spans, start = [], 0
    for name, v in out.items():
        spans.append((name, start, start + int(v.shape[1])))
        start += int(v.shape[1])
    return torch.cat([v.float() for v in out.values()], dim=1), spans


def split_columns(host: np.ndarray, spans: Sequence[tuple[str, int, int]], storage: Any) -> dict[str, np.ndarray]:
    """``(N, D)`` -> ``{layer: (N, d_l)}`` in the ``storage`` dtype, each a fresh C-contiguous array
    (copied out of ``host``, a buffer that the next batches reuse). A value past the storage dtype's range
    becomes inf, which the non-finite check of the writer names (no warning here)."""
    with np.errstate(over="ignore"):
        return {name: np.array(host[:, a:b], dtype=storage, order="C") for name, a, b in spans}


class _Ticket:
    """A copy in flight: its host buffer ``(N, D)``, the column spans, the CUDA event that marks its end."""

    def __init__(self, slot: int, host: torch.Tensor, spans: list[tuple[str, int, int]], event: Any):
        self.slot, self.host, self.spans, self.event = slot, host, spans, event


class HostTransfer:
    """The pooled layers of a batch moved to the host in ONE transfer.

    :meth:`submit` concatenates the layers on the device (:func:`concat_pooled`) and copies
    them into a reusable host buffer; with ``pin`` (and CUDA present) the buffer is pinned and
    the copy ``non_blocking``, so it is queued behind the forward pass and returns at once.
    :meth:`collect` waits for that copy (one synchronisation per batch) and splits it into
    per-layer arrays (:func:`split_columns`). ``slots`` buffers alternate: with two, batch
    i+1 can be submitted (its forward pass queued on the device) before batch i is collected.
    ``pin`` is ignored without CUDA (pinning needs the CUDA driver), and on the CPU the
    copy is an ordinary one: the same numbers, bit for bit, as a ``.cpu()`` per layer.
    """

    def __init__(self, pin: bool = False, slots: int = 2):
        self.pin = bool(pin) and torch.cuda.is_available()
        self.buffers: list[torch.Tensor | None] = [None] * slots
        self.busy = [False] * slots
        self.next = 0

    def _buffer(self, slot: int, numel: int) -> torch.Tensor:
        buf = self.buffers[slot]
        if buf is None or buf.numel() < numel:
            with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
                buf = torch.empty(numel, dtype=torch.float32, pin_memory=self.pin)
            self.buffers[slot] = buf
        return buf

    def submit(self, out: Mapping[str, torch.Tensor]) -> _Ticket:
        """Queue the copy of ``{layer: (N, d_l)}``; collect the ticket before submitting ``slots`` more."""
        slot = self.next
        if self.busy[slot]:
            raise RuntimeError("HostTransfer: collect a batch before its buffer is reused")
        flat, spans = concat_pooled(out)
        host = self._buffer(slot, flat.numel())[: flat.numel()].view(flat.shape)
        cuda = flat.device.type == "cuda"
        host.copy_(flat, non_blocking=cuda and self.pin)
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(flat.device))
        self.busy[slot] = True
        self.next = (slot + 1) % len(self.buffers)
        return _Ticket(slot, host, spans, event)

    def collect(self, ticket: _Ticket, storage: Any = np.float32) -> dict[str, np.ndarray]:
        """Wait for the copy, -> ``{layer: (N, d_l)}`` in ``storage`` (fresh arrays; the buffer is free again)."""
        if ticket.event is not None:
            ticket.event.synchronize()
        blocks = split_columns(ticket.host.numpy(), ticket.spans, storage)
        self.busy[ticket.slot] = False
        return blocks


# ---------------------------------------------------------------- torch.compile
def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``(n, ...)`` -> ``(rows, ...)``: zero rows appended, the memory format kept."""
    padded = x.new_zeros((rows, *x.shape[1:]))
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        padded = padded.contiguous(memory_format=torch.channels_last)
    padded[: x.shape[0]] = x
    return padded


def _take_rows(out: Any, n: int) -> Any:
    if isinstance(out, dict):
        return {k: v[:n] for k, v in out.items()}
    return out[:n]


def fixed_rows(fn: Callable[[torch.Tensor], Any], rows: int) -> Callable[[torch.Tensor], Any]:
    """``torch.compile(fn)`` for batches of at most ``rows`` rows: a smaller batch (the last one) is
    padded with zero rows and the output (a tensor ``(n, ...)`` or a dict of them) cut back to its rows,
    so the graph is compiled once, for one shape (rows are independent in an eval forward pass)."""
    compiled = torch.compile(fn, dynamic=False)

    def run(x: torch.Tensor) -> Any:
        n = int(x.shape[0])
        if n >= rows:
            return compiled(x)
        return _take_rows(compiled(_pad_rows(x, rows)), n)

    return run


def _cuda_setup(device: torch.device) -> None:
    """cuDNN picks the fastest convolution per input shape (a job runs one shape, thousands of times)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


# ---------------------------------------------------------------- predictions
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
    model, _ = _prepare_model(model, device, settings)
    _cuda_setup(device)
    run = fixed_rows(model, settings.batch_size) if settings.compile else model
    cfg = model_data_config(model)
    if timm_eval:
        dataset = _TimmEvalImages(paths, timm_eval_transform(model), cfg["input_size"])
    else:
        dataset = _CanonicalImages(paths, settings.image_size, None)
    preds, probs, skipped = [], [], []
    bar = _progress(len(dataset), "img", "predict")
    with torch.inference_mode():
        for index, counts, x, reasons in _loader(dataset, settings.batch_size, settings, device):
            skipped += [
                (str(dataset.paths[i]), r) for i, c, r in zip(index.tolist(), counts.tolist(), reasons) if c == 0
            ]
            if x.shape[0]:
                if timm_eval:  # already the model's input
                    inputs = _layout(x.to(device, non_blocking=True), settings)
                else:
                    inputs = _model_inputs(x, cfg, device, settings)
                with _autocast(device, settings.autocast):
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


# ---------------------------------------------------------------- activations
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

    Returns the timing of the forward loop (:func:`_loop_stats`): ``patches``, ``seconds``, and
    ``steady_patches_per_s`` (after the first batch, which pays for cuDNN autotuning and
    ``torch.compile``), ``loop_start`` and ``loop_end`` (``time.time()``, to match GPU samples).
    """
    layers = list(layers)
    device = resolve_device(settings.device)
    model, folded = _prepare_model(model, device, settings, keep=layers)
    cfg = model_data_config(model)
    model_name = str(attrs.get("model", getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)))
    if settings.patch_size is None:
        raise ValueError("extract_to_h5 needs ExtractionSettings.patch_size (dataset.patch_size)")
    storage = _STORAGE_DTYPES[settings.storage_dtype]
    boxes = patch_boxes(settings.image_size, settings.patch_size)
    n_grid = len(boxes)
    flat = [(cid, iid, path) for cid, lst in items.items() for iid, path in lst]
    dataset = _CanonicalImages([p for _, _, p in flat], settings.image_size, settings.patch_size)

    forward = _HookedForward(model, layers, settings.token)
    _cuda_setup(device)
    images_per_batch = max(1, settings.batch_size // n_grid)
    run = fixed_rows(forward.__call__, images_per_batch * n_grid) if settings.compile else forward
    try:
        with torch.inference_mode(), _autocast(device, settings.autocast):  # probe: widths, every hook fires
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

            def finish(ticket: _Ticket, ok: list[int], submitted: float) -> None:
                blocks = transfer.collect(ticket, storage)
                _check_finite(blocks, ok, n_grid, flat, model_name, settings.storage_dtype)
                writer.put(_route(blocks, ok, n_grid, flat, store, image_ids))
                done.append((submitted, time.time(), len(ok) * n_grid))

            bar = _progress(len(flat) * n_grid, "patch", f"{model_name} activations")
            loop_start = time.time()
            pending: tuple[_Ticket, list[int], float] | None = None  # the batch whose copy is in flight
            try:
                for index, counts, x, reasons in _loader(dataset, images_per_batch, settings, device):
                    index, counts = index.tolist(), counts.tolist()
                    for i, c, r in zip(index, counts, reasons):
                        if c == 0:
                            skipped.append((*flat[i], r))
                            log.warning("skipped unreadable image (class %s, image %s): %s", flat[i][0], flat[i][1], r)
                    ok = [i for i, c in zip(index, counts) if c > 0]
                    if ok:
                        with torch.inference_mode():
                            with _autocast(device, settings.autocast):
                                out = run(_model_inputs(x, cfg, device, settings))
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
