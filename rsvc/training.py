"""Train the demo classifiers from scratch on CPU (paper appendix A.2, small scale).

Augmentation is random-resized-crop (scale ``(0.08, 1)``, ratio ``(3/4, 4/3)``)
plus horizontal flip, so that the 16 resized patches RSVC shows the model later
are in-domain. The whole training set is held in memory as uint8 canonical
images and each batch is cropped and resized in one call
(``torchvision.ops.roi_align``, bilinear with area averaging). Evaluation uses
exactly the whole-image pixels of :func:`rsvc.predictions.predict_images`
(canonical image -> model input size -> the model's mean/std).

Demo recipe (measured on the 6-class synthetic data of :mod:`rsvc.synthetic`,
112 px images, 240 train / 40 val images per class, 2 CPU threads): timm
``resnet18`` with ``model_kwargs={"channels": (32, 64, 128, 256),
"stem_width": 32}``, ``pretrained_cfg_overlay={"input_size": (3, 64, 64),
"mean": (0.5,) * 3, "std": (0.25,) * 3}``, ``input_size=64, epochs=40,
batch_size=64, lr=3e-3``: about 145 s per model on an idle machine. At 20
epochs the models are as accurate, but NC's penultimate layer still encodes
the square well enough that its purest square concept gets a CMCS of about
0.3; at 40 epochs about 0.15 (see docs/demo.md).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from rsvc.images import canonical_uint8, list_image_files, load_rgb, to_model_input
from rsvc.models import ModelSpec, create_model, model_data_config
from rsvc.synthetic import MAGENTA, square_side

_SCALE = (0.08, 1.0)
_RATIO = (3 / 4, 4 / 3)


def load_image_folder(root: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageFolder ``root/<class>/*`` -> (images ``(N, 3, S, S)`` uint8 canonical, labels ``(N,)`` int64).

    Labels follow the order of ``classes`` (never the folder listing); ``S`` is
    the shorter side of the first image.
    """
    images, labels, size = [], [], None
    for label, cname in enumerate(classes):
        files = list_image_files(Path(root) / cname)
        if not files:
            raise FileNotFoundError(f"no images in {Path(root) / cname}")
        for path in files:
            img = load_rgb(path)
            size = size or min(img.size)
            images.append(canonical_uint8(img, size))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64)


def random_resized_boxes(rng: np.random.Generator, n: int, size: int, tries: int = 10) -> np.ndarray:
    """torchvision ``RandomResizedCrop.get_params`` for ``n`` square images: ``(n, 4)`` float x0, y0, x1, y1.

    Falls back to the whole image when no try fits.
    """
    area = size * size * rng.uniform(*_SCALE, size=(n, tries))
    ratio = np.exp(rng.uniform(math.log(_RATIO[0]), math.log(_RATIO[1]), size=(n, tries)))
    w = np.rint(np.sqrt(area * ratio))
    h = np.rint(np.sqrt(area / ratio))
    ok = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = np.argmax(ok, axis=1)
    rows = np.arange(n)
    w = np.where(ok.any(1), w[rows, first], size)
    h = np.where(ok.any(1), h[rows, first], size)
    x0 = np.floor(rng.uniform(size=n) * (size - w + 1))
    y0 = np.floor(rng.uniform(size=n) * (size - h + 1))
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1)


def augment(x: torch.Tensor, rng: np.random.Generator, cfg: dict) -> torch.Tensor:
    """Random-resized-crop + hflip + normalise: uint8 ``(B, 3, S, S)`` -> float ``(B, 3, H, W)``."""
    b, _, s, _ = x.shape
    boxes = torch.from_numpy(random_resized_boxes(rng, b, s)).float()
    rois = torch.cat([torch.arange(b, dtype=torch.float32)[:, None], boxes], dim=1)
    out = roi_align(x.float().div_(255.0), rois, output_size=tuple(cfg["input_size"][-2:]), aligned=True)
    flip = torch.from_numpy(rng.random(b) < 0.5)
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return to_model_input(out, cfg["input_size"], cfg["mean"], cfg["std"])


@torch.inference_mode()
def log_probs(model: torch.nn.Module, x: torch.Tensor, cfg: dict, batch_size: int = 256) -> np.ndarray:
    """Log-softmax of whole canonical uint8 images ``(N, 3, S, S)`` -> ``(N, C)``."""
    model.eval()
    out = [
        torch.log_softmax(model(to_model_input(x[i : i + batch_size], cfg["input_size"], cfg["mean"], cfg["std"])), 1)
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).double().numpy()


def has_square(x: torch.Tensor) -> np.ndarray:
    """``(N,)`` bool: the image contains a magenta pixel (only the planted square is magenta)."""
    magenta = torch.tensor(MAGENTA, dtype=torch.uint8).view(1, 3, 1, 1)
    return (x == magenta).all(dim=1).flatten(1).any(dim=1).numpy()


def paste_squares(x: torch.Tensor, rng: np.random.Generator, side: int) -> torch.Tensor:
    """Copy of ``x`` with a magenta square of ``side`` px at a random position in every image."""
    out = x.clone()
    s = x.shape[-1]
    for i, (x0, y0) in enumerate(rng.integers(0, s - side + 1, size=(len(x), 2))):
        out[i, :, y0 : y0 + side, x0 : x0 + side] = torch.tensor(MAGENTA, dtype=torch.uint8).view(3, 1, 1)
    return out


def _mean(values: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean of ``values[mask]``; NaN when empty."""
    v = values if mask is None else values[mask]
    return float(v.mean()) if v.size else float("nan")


def square_metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict, seed: int) -> dict:
    """How a model classifies and how much it uses the square.

    ``acc``; ``acc_class0_with_square`` / ``acc_class0_without_square``; on the
    images of the other classes that have no square: the rate predicted as
    class 0 and the same after pasting a square at a random position, and the
    mean change of ``log p(class 0)`` that pasting causes (about 0 for a model
    that ignores the square).
    """
    y = y.numpy()
    logp = log_probs(model, x, cfg)
    pred = logp.argmax(1)
    sq = has_square(x)
    correct = pred == y
    clean_other = (y != 0) & ~sq
    pasted = paste_squares(x[torch.from_numpy(clean_other)], np.random.default_rng(seed), square_side(x.shape[-1]))
    logp_pasted = log_probs(model, pasted, cfg)
    return {
        "acc": _mean(correct),
        "acc_class0_with_square": _mean(correct, (y == 0) & sq),
        "acc_class0_without_square": _mean(correct, (y == 0) & ~sq),
        "class0_rate_other_classes": _mean(pred == 0, clean_other),
        "class0_rate_other_classes_pasted_square": _mean(logp_pasted.argmax(1) == 0),
        "class0_logprob_shift_pasted_square": _mean(logp_pasted[:, 0] - logp[clean_other, 0]),
    }


def train_classifier(
    spec: ModelSpec,
    train_root: Path,
    classes: list[str],
    *,
    input_size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    val_root: Path | None = None,
    num_threads: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Train ``spec``'s timm model from random init on ``train_root/<class>/*``.

    AdamW (weight decay 0.05) with a one-cycle schedule peaking at ``lr``,
    label smoothing 0.1, random-resized-crop + hflip. Deterministic for a
    given seed and thread count. The model's data config (``spec``'s
    ``pretrained_cfg_overlay``) must declare ``input_size`` ``(3, input_size,
    input_size)``: the same pixels are used later for patches.

    Returns ``(state_dict, metrics)``: contiguous CPU tensors (save with
    safetensors) and ``train_*`` / ``val_*`` metrics of :func:`square_metrics`,
    ``epochs``, ``seconds``, ``final_loss``.
    """
    previous_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = create_model(dataclasses.replace(spec, checkpoint=None, pretrained=False))
        model = model.to(memory_format=torch.channels_last)
        cfg = model_data_config(model)
        if tuple(cfg["input_size"][-2:]) != (input_size, input_size):
            raise ValueError(
                f"model {spec.name}: data config input_size {cfg['input_size']} != training input_size "
                f"{input_size}; set pretrained_cfg_overlay.input_size = [3, {input_size}, {input_size}]"
            )
        x, y = load_image_folder(train_root, classes)
        steps_per_epoch = math.ceil(len(x) / batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.2
        )
        t0 = time.perf_counter()
        loss_value = float("nan")
        for _ in range(epochs):
            model.train()
            order = torch.from_numpy(rng.permutation(len(x)))
            losses = []
            for i in range(0, len(x), batch_size):
                idx = order[i : i + batch_size]
                if len(idx) < 2:  # BatchNorm needs more than one sample
                    continue
                inputs = augment(x[idx], rng, cfg).contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(model(inputs), y[idx], label_smoothing=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
            loss_value = float(np.mean(losses)) if losses else float("nan")
        seconds = time.perf_counter() - t0
        model.eval()
        metrics: dict = {"epochs": epochs, "seconds": seconds, "final_loss": loss_value, "n_train": len(x)}
        metrics.update({f"train_{k}": v for k, v in square_metrics(model, x, y, cfg, seed).items()})
        if val_root is not None:
            xv, yv = load_image_folder(val_root, classes)
            metrics["n_val"] = len(xv)
            metrics.update({f"val_{k}": v for k, v in square_metrics(model, xv, yv, cfg, seed).items()})
        state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        return state, metrics
    finally:
        torch.set_num_threads(previous_threads)
