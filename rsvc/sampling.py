"""Seeded image samples and the rows (patches) of image sets: the bottom-m sketch that lets jobs which
only see parts of a class's images pick the same sample of their union.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RowSet:
    """Patches (rows) of an image set, in a fixed order.

    image_ids: (n_images,) image identifiers; patch_image: (n_rows,) index into
    image_ids; patch_index: (n_rows,) position of the patch in the grid.
    """

    image_ids: np.ndarray
    patch_image: np.ndarray
    patch_index: np.ndarray

    @property
    def row_image_ids(self) -> np.ndarray:
        return self.image_ids[self.patch_image]

    @classmethod
    def empty(cls) -> RowSet:
        """No image, no row."""
        return cls(np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


#: The ranking stream of the shared set: a second seeded ranking, independent of the concept sample's
#: (the default stream ""), as in the paper's code, where the two samples are independent draws.
SHARED_STREAM = "shared"


def image_ranks(image_ids, class_id: str, seed: int, stream: str = "") -> np.ndarray:
    """A seeded pseudo-random rank per image of a class: ``(n,)`` uint64 from BLAKE2b of (seed, stream,
    class, image id). The ``m`` lowest-ranked images of a set are a seeded uniform sample of it; the ``m``
    lowest of a union are among the ``m`` lowest of each of its parts (a bottom-m sketch), so jobs that
    only see the parts pick the same sample of the union without sharing anything but the ids. Streams
    are independent rankings: ``""`` draws each model's concept images, :data:`SHARED_STREAM` the shared
    set."""

    prefix = (f"{seed}\x1f{class_id}\x1f" if not stream else f"{seed}\x1f{stream}\x1f{class_id}\x1f").encode()
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest(), "little")
            for i in image_ids
        ],
        dtype=np.uint64,
    )


def lowest_ranked(image_ids, m: int | None, class_id: str, seed: int, stream: str = "") -> np.ndarray:
    """The ``m`` images of ``image_ids`` with the lowest :func:`image_ranks` of ``stream`` (all if ``m``
    is None or not smaller), sorted by id: a seeded uniform sample."""
    ids = np.array(sorted(set(map(str, image_ids))), dtype=object)
    if m is None or len(ids) <= m:
        return ids
    order = np.argsort(image_ranks(ids, class_id, seed, stream), kind="stable")
    return np.sort(ids[order[:m]])


def union_images(
    image_sets: list[np.ndarray], cap: int | None, seed: int, class_id: str = "", stream: str = SHARED_STREAM
) -> np.ndarray:
    """Sorted union of image ids, subsampled to at most ``cap`` images: the ``cap`` lowest-ranked of
    ``stream`` (:func:`lowest_ranked`; the shared set's ranking by default), a seeded uniform sample of
    the union."""
    union = set().union(*[set(map(str, s)) for s in image_sets])
    return lowest_ranked(union, cap, class_id, seed, stream)


def gather_rows(parts: list[RowSet], images: np.ndarray) -> tuple[list[tuple[int, np.ndarray]], RowSet]:
    """Select the rows of ``images`` from several row sets (first part that has an image wins).

    Returns ``[(part, row_indices), ...]`` in output order (image-major, patch
    order within an image) and the :class:`RowSet` of the gathered rows.
    """
    wanted = {str(i) for i in images}
    owner: dict[str, int] = {}
    for p, part in enumerate(parts):
        for img in part.image_ids:
            img = str(img)
            if img in wanted and img not in owner:
                owner[img] = p
    order = sorted(owner)
    picks: list[tuple[int, np.ndarray]] = []
    patch_image, patch_index = [], []
    row_ids = [part.row_image_ids.astype(str) for part in parts]
    for new_idx, img in enumerate(order):
        p = owner[img]
        rows = np.flatnonzero(row_ids[p] == img)
        rows = rows[np.argsort(parts[p].patch_index[rows], kind="stable")]
        picks.append((p, rows))
        patch_image.append(np.full(len(rows), new_idx))
        patch_index.append(parts[p].patch_index[rows])
    rowset = RowSet(
        image_ids=np.array(order, dtype=object),
        patch_image=np.concatenate(patch_image) if patch_image else np.zeros(0, int),
        patch_index=np.concatenate(patch_index) if patch_index else np.zeros(0, int),
    )
    return picks, rowset


def take_rows(arrays: list[np.ndarray], picks: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Concatenate ``arrays[part][rows]`` for every pick."""
    if not picks:
        return np.zeros((0,) + arrays[0].shape[1:], arrays[0].dtype)
    return np.concatenate([arrays[p][rows] for p, rows in picks], axis=0)
