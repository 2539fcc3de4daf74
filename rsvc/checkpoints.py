"""Checkpoint files checked without loading them: the safetensors header against the model's tensors.

Pure Python (``struct`` and ``json``): reading a header costs microseconds and no memory, so the
preflight can check every checkpoint of a run before the first job.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

_MAX_HEADER = 100 * 2**20  # the format's own limit on the JSON header


class CheckpointError(ValueError):
    """A checkpoint file that cannot be what the config says it is; the message names the file."""


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (dtype, shape)}`` from a ``.safetensors`` file's header, reading only the header.

    CheckpointError when the file is not a safetensors file or is cut short (the header promises more
    bytes than the file has).
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{path}: not a safetensors file (its first 8 bytes do not give a header length)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file (the header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (the header is not a JSON object)")
    tensors, end = {}, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (_, stop) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{path}: not a safetensors file (tensor {name!r} has no dtype/shape/offsets)"
            ) from None
        tensors[name] = (str(dtype), shape)
        end = max(end, int(stop))
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated: the header describes {8 + n + end} bytes, the file has {size}")
    return tensors


def compare_tensors(
    expected: Mapping[str, tuple[int, ...]], stored: Mapping[str, tuple[str, tuple[int, ...]]]
) -> str | None:
    """The first difference between the model's tensors ``{name: shape}`` and a header's, or None.

    Missing tensors first (in the model's order), then unexpected ones, then shapes.
    """
    for name in expected:
        if name not in stored:
            return f"tensor {name!r} of the model is missing from the file"
    for name in stored:
        if name not in expected:
            return f"the file has a tensor {name!r} that the model does not have"
    for name, shape in expected.items():
        if tuple(shape) != tuple(stored[name][1]):
            return f"tensor {name!r} has shape {list(stored[name][1])} in the file, {list(shape)} in the model"
    return None
