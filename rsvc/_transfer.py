"""The device side of a forward pass: the device, autocast, the model's input on the device, ONE
device-to-host copy per batch (:class:`HostTransfer`) and ``torch.compile`` at one fixed shape
(:func:`fixed_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from rsvc.images import to_model_input
from rsvc.settings import ExtractionSettings

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # keys: rsvc.settings.AUTOCAST_MODES


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cuda_setup(device: torch.device) -> None:
    """cuDNN picks the fastest convolution per input shape (a job runs one shape, thousands of times)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def autocast(device: torch.device, mode: str | None):
    if mode is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[mode])


def layout(x: torch.Tensor, settings: ExtractionSettings) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x


def model_inputs(x: torch.Tensor, cfg: dict, device: torch.device, settings: ExtractionSettings) -> torch.Tensor:
    """uint8 canonical images or patches -> the model's normalised input on ``device``."""
    return layout(to_model_input(x.to(device, non_blocking=True), cfg["input_size"], cfg["mean"], cfg["std"]), settings)


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


class Ticket:
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

    def submit(self, out: Mapping[str, torch.Tensor]) -> Ticket:
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
        return Ticket(slot, host, spans, event)

    def collect(self, ticket: Ticket, storage: Any = np.float32) -> dict[str, np.ndarray]:
        """Wait for the copy, -> ``{layer: (N, d_l)}`` in ``storage`` (fresh arrays; the buffer is free again)."""
        if ticket.event is not None:
            ticket.event.synchronize()
        blocks = split_columns(ticket.host.numpy(), ticket.spans, storage)
        self.busy[ticket.slot] = False
        return blocks


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
