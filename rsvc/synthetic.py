"""The embedded demo dataset: procedurally drawn objects and a planted magenta square.

Paper appendix A.2 at small scale. Class ``i`` is the shape ``SHAPES[i]``
(class names are only folder names), drawn with random position, scale,
rotation, colour and texture on a varied background (gradient, noise,
stripes, checks), plus 1-3 small "confetti" squares of random colour. A
magenta ``(255, 0, 255)`` square of side ``round(square_frac * image_size)``
is pasted at a random position with a probability that depends on the scheme:

- ``"ps"``: class index 0 only, probability 0.7 (the square predicts class 0);
- ``"nc"``: every class, probability 0.5 (the square carries no information);
- ``"eval"``: class index 0, probability 1.0.

Design choices that make the planted-concept experiment work at a tiny scale
(measured, see the training module):

- classes 0 and 1 are a look-alike pair (a disc and a ring with a small hole,
  same colour family), so the square is a tempting shortcut for class 0;
  the other classes have their own colour family and shape;
- every colour has a hue in ``HUE_RANGE`` = yellow..cyan, i.e. green is its
  largest channel, and colours are only combined in hue-preserving ways (hard
  edges, blends towards gray or a darker shade of the same hue, gray noise):
  no pixel besides the square ever has red or blue above green, so magenta
  (green = 0) is a colour of its own;
- the confetti make "a small vivid square" common and uninformative, so only
  the square's colour singles it out.

The base images (everything but the magenta square) are identical across
schemes for the same seed: each image draws its base from its own random
stream ``(seed, split, class, i)`` and its square from an independent stream.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
import pandas as pd
import PIL.Image
import PIL.ImageDraw

from rsvc.io import atomic_path, write_table

SPLITS = ("train", "val", "test")
SHAPES = ("disc", "ring", "cross", "triangle", "star", "bars", "diamond", "crescent", "hexagon", "arrow")
SCHEMES = {"ps": (0.7, False), "nc": (0.5, True), "eval": (1.0, False)}  # (probability, every class)
MAGENTA = (255, 0, 255)
SQUARE_FRAC = 20 / 224  # the paper's 20 px square on 224 px images
HUE_RANGE = (60.0, 180.0)  # degrees, yellow to cyan: green is always the largest channel
HUE_JITTER = 8.0  # degrees, std of an object's hue around its class hue
RING_HOLE = 0.3  # radius of the ring's hole relative to the ring (small: the ring looks like the disc)
CONFETTI = (1, 4)  # distractor squares per image: integers in [lo, hi)
_SQUARE_STREAM = 7919


METADATA = "metadata.csv"  # per image: split, class, path, has_square, square box x0 y0 x1 y1


def square_probability(scheme: str, class_index: int) -> float:
    """Probability that an image of ``class_index`` carries the square under ``scheme``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {list(SCHEMES)}")
    p, every_class = SCHEMES[scheme]
    return p if every_class or class_index == 0 else 0.0


def square_side(image_size: int, square_frac: float = SQUARE_FRAC) -> int:
    """Side of the planted square in pixels: ``round(square_frac * image_size)``."""
    side = round(square_frac * image_size)
    if not 0 < side < image_size:
        raise ValueError(f"square side {side} px does not fit a {image_size} px image (square_frac={square_frac})")
    return side


def class_shapes(classes: list[str]) -> list[str]:
    """Shape of each class: ``SHAPES[index]`` (classes 0 and 1 are the look-alike disc and ring)."""
    if len(classes) > len(SHAPES):
        raise ValueError(f"at most {len(SHAPES)} classes, got {len(classes)}")
    return list(SHAPES[: len(classes)])


def _rgb(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h_deg / 360.0, s, v)) * 255.0


def _class_hue(class_index: int, n_classes: int) -> float:
    """Hue (degrees) around which a class's objects are coloured; classes 0 and 1 share one."""
    lo, hi = HUE_RANGE
    return lo + (hi - lo) * max(0, class_index - 1) / max(1, n_classes - 2)


def _hue(rng: np.random.Generator) -> float:
    return rng.uniform(*HUE_RANGE)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(S, S, 3)`` float in [0, 255]: muted colours, hue in ``HUE_RANGE``."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c1 = _rgb(_hue(rng), rng.uniform(0.0, 0.45), rng.uniform(0.3, 0.95))
    kind = rng.integers(4)
    if kind == 0:  # gradient towards a gray level (hue preserving)
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
        gray = np.full(3, rng.uniform(20, 235))
        img = c1 * (1 - t[..., None]) + gray * t[..., None]
    elif kind == 1:  # gray noise
        img = c1 + rng.normal(0, rng.uniform(10, 35), (size, size, 1))
    elif kind == 2:  # stripes, hard edges
        c2 = _rgb(_hue(rng), rng.uniform(0.0, 0.45), rng.uniform(0.3, 0.95))
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.08, 0.3)
        m = ((xx * math.cos(angle) + yy * math.sin(angle)) / period % 1.0) < 0.5
        img = np.where(m[..., None], c1, c2)
    else:  # checks, hard edges
        c2 = c1 * rng.uniform(0.5, 0.85)
        cell = rng.uniform(0.06, 0.2)
        m = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) == 0
        img = np.where(m[..., None], c1, c2)
    return np.clip(img, 0, 255)


def _polygon(cx: float, cy: float, r: float, angle: float, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _shape_mask(shape: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Boolean ``(S, S)`` mask of one object (hard edges: no blending with the background)."""
    r = size * rng.uniform(0.2, 0.36)
    cx, cy = rng.uniform(r * 0.8, size - r * 0.8, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    mask = PIL.Image.new("L", (size, size), 0)
    d = PIL.ImageDraw.Draw(mask)

    def ell(rr):
        return (cx - rr, cy - rr * 0.9, cx + rr, cy + rr * 0.9)

    if shape == "disc":
        d.ellipse(ell(r), fill=255)
    elif shape == "ring":
        d.ellipse(ell(r), fill=255)
        d.ellipse(ell(r * RING_HOLE), fill=0)
    elif shape == "crescent":
        d.ellipse(ell(r), fill=255)
        off = r * 0.55
        d.ellipse(
            (
                cx - r + off * math.cos(angle),
                cy - r + off * math.sin(angle),
                cx + r + off * math.cos(angle),
                cy + r + off * math.sin(angle),
            ),
            fill=0,
        )
    elif shape == "cross":
        w = 0.3
        d.polygon(
            _polygon(
                cx,
                cy,
                r,
                angle,
                [
                    (-w, -1),
                    (w, -1),
                    (w, -w),
                    (1, -w),
                    (1, w),
                    (w, w),
                    (w, 1),
                    (-w, 1),
                    (-w, w),
                    (-1, w),
                    (-1, -w),
                    (-w, -w),
                ],
            ),
            fill=255,
        )
    elif shape == "triangle":
        d.polygon(
            _polygon(cx, cy, r, angle, [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3]), fill=255
        )
    elif shape == "star":
        pts = [
            (
                (1.0 if k % 2 == 0 else 0.42) * math.cos(k * math.pi / 5),
                (1.0 if k % 2 == 0 else 0.42) * math.sin(k * math.pi / 5),
            )
            for k in range(10)
        ]
        d.polygon(_polygon(cx, cy, r, angle, pts), fill=255)
    elif shape == "bars":
        for off in (-0.7, 0.0, 0.7):
            d.polygon(
                _polygon(cx, cy, r, angle, [(off - 0.18, -1), (off + 0.18, -1), (off + 0.18, 1), (off - 0.18, 1)]),
                fill=255,
            )
    elif shape == "diamond":
        d.polygon(_polygon(cx, cy, r, angle, [(0, -1), (0.55, 0), (0, 1), (-0.55, 0)]), fill=255)
    elif shape == "hexagon":
        d.polygon(
            _polygon(cx, cy, r, angle, [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]), fill=255
        )
    elif shape == "arrow":
        d.polygon(
            _polygon(
                cx, cy, r, angle, [(-1, -0.2), (0.2, -0.2), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.2), (-1, 0.2)]
            ),
            fill=255,
        )
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(mask) > 127


def _texture(rng: np.random.Generator, size: int, hue: float) -> np.ndarray:
    """``(S, S, 3)`` object fill: a vivid colour near the class hue, solid, striped or dotted."""
    h = float(np.clip(hue + rng.normal(0, HUE_JITTER), *HUE_RANGE))
    c1 = _rgb(h, rng.uniform(0.65, 1.0), rng.uniform(0.6, 1.0))
    c2 = c1 * rng.uniform(0.35, 0.7)  # darker shade, same hue
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(c1, (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == 1:
        angle = rng.uniform(0, math.pi)
        m = ((xx * math.cos(angle) + yy * math.sin(angle)) / rng.uniform(0.05, 0.12) % 1.0) < 0.5
    else:
        cell = rng.uniform(0.06, 0.1)
        m = ((xx / cell % 1.0 - 0.5) ** 2 + (yy / cell % 1.0 - 0.5) ** 2) < 0.09
    return np.where(m[..., None], c2, c1)


def _confetti(img: np.ndarray, rng: np.random.Generator, side: int) -> None:
    """Paint a few vivid squares of random in-range hue, about the planted square's size (in place)."""
    size = img.shape[0]
    for _ in range(rng.integers(*CONFETTI)):
        s = max(1, round(side * rng.uniform(0.7, 1.3)))
        x0, y0 = rng.integers(0, size - s + 1, size=2)
        img[y0 : y0 + s, x0 : x0 + s] = _rgb(_hue(rng), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0))


def draw_base_image(shape: str, hue: float, rng: np.random.Generator, size: int, square_side: int) -> np.ndarray:
    """One object on a background with confetti squares: ``(S, S, 3)`` uint8, no magenta."""
    img = _background(rng, size)
    mask = _shape_mask(shape, rng, size)
    img = np.where(mask[..., None], _texture(rng, size, hue), img)
    _confetti(img, rng, square_side)
    return np.rint(img).astype(np.uint8)


def make_dataset(
    root: Path,
    *,
    classes: list[str],
    n_per_split: dict[str, int],
    image_size: int,
    scheme: str,
    seed: int,
    square_frac: float = SQUARE_FRAC,
) -> pd.DataFrame:
    """Draw the dataset into ``root/<split>/<class>/<class>_<split>_<i>.png`` (ImageFolder layout).

    Returns and writes ``root/metadata.csv`` with columns split, class, path
    (relative to ``root``), has_square, x0, y0, x1, y1 (the square's box in
    canonical pixels, x1/y1 exclusive; -1 when there is no square).
    """
    root = Path(root)
    shapes = class_shapes(classes)
    side = square_side(image_size, square_frac)
    rows = []
    for split, n in n_per_split.items():
        split_index = SPLITS.index(split) if split in SPLITS else len(SPLITS) + sorted(n_per_split).index(split)
        for ci, (cname, shape) in enumerate(zip(classes, shapes)):
            folder = root / split / cname
            folder.mkdir(parents=True, exist_ok=True)
            p = square_probability(scheme, ci)
            for i in range(int(n)):
                img = draw_base_image(
                    shape,
                    _class_hue(ci, len(classes)),
                    np.random.default_rng([seed, split_index, ci, i]),
                    image_size,
                    side,
                )
                srng = np.random.default_rng([seed, split_index, ci, i, _SQUARE_STREAM])
                has_square = bool(srng.random() < p)
                x0, y0 = (int(v) for v in srng.integers(0, image_size - side + 1, size=2))
                if has_square:
                    img[y0 : y0 + side, x0 : x0 + side] = MAGENTA
                else:
                    x0 = y0 = -1
                path = folder / f"{cname}_{split}_{i:05d}.png"
                with atomic_path(path) as tmp:
                    PIL.Image.fromarray(img).save(tmp, format="PNG")
                rows.append(
                    dict(
                        split=split,
                        **{"class": cname},
                        path=path.relative_to(root).as_posix(),
                        has_square=has_square,
                        x0=x0,
                        y0=y0,
                        x1=x0 + side if has_square else -1,
                        y1=y0 + side if has_square else -1,
                    )
                )
    meta = pd.DataFrame(rows, columns=["split", "class", "path", "has_square", "x0", "y0", "x1", "y1"])
    write_table(root / METADATA, meta)
    return meta


def read_metadata(root: str | Path) -> pd.DataFrame:
    """The ``metadata.csv`` that :func:`make_dataset` wrote into ``root`` (one row per image)."""
    return pd.read_csv(Path(root) / METADATA, dtype={"class": str})
