"""Atomic, pickle-free output helpers.

Every file the workflow writes goes through :func:`atomic_path`: the payload is
written to a temporary name in the destination directory and renamed into
place only once it is complete, so a killed job never leaves a half-written
HDF5 file, table or image behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

if TYPE_CHECKING:
    import pandas as pd  # write_table takes a DataFrame; importing pandas costs 0.2 s

_UMASK = os.umask(0)
os.umask(_UMASK)


class DiskFullError(OSError):
    """An output could not be written because its file system is full (or over quota); the message
    names the folder and what to do. A job that fails with it exits with status 1 and says so on the
    console (:func:`rsvc.runtime.setup_logging`), never with HDF5's crash at exit."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is ENOSPC or EDQUOT, also as HDF5 reports it
    (an ``OSError`` or ``RuntimeError`` whose text holds ``errno = 28``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        if any(f"errno = {code}," in str(exc) for code in _DISK_FULL):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(path: Path, exc: BaseException) -> DiskFullError:
    """The :class:`DiskFullError` of ``exc`` (a full disk) while ``path`` was written."""
    folder = path.parent.resolve()
    return DiskFullError(
        errno.ENOSPC,
        f"the disk is full: no space left on the file system of {folder} while writing {path.name} "
        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Free space there (or set outdir to a "
        "disk with room) and run snakemake again with the options of your run (no --forcerun needed): the "
        "finished outputs are kept, this job's partial file was removed and the run resumes where it stopped",
    )


@contextlib.contextmanager
def _full_disk_named(path: Path) -> Iterator[None]:
    """Re-raise a full disk while ``path`` is written as :class:`DiskFullError` (folder and fix named)."""
    try:
        yield
    except BaseException as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full_error(path, exc) from exc
        raise


def _remove_stale_tmp(path: Path) -> None:
    """Delete temporaries that a killed writer of ``path`` left behind (one writer per output)."""
    import shutil

    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched; a full disk (while
    creating, writing or renaming) is raised as :class:`DiskFullError`.
    """
    path = Path(path)
    with _full_disk_named(path):
        yield from _atomic_path(path)


def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs are shared
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; rename it to ``path`` on success."""
    path = Path(path)
    with _full_disk_named(path):
        yield from _atomic_dir(path)


def _atomic_dir(path: Path) -> Iterator[Path]:
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(path)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o777 & ~_UMASK)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp_path, path)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _attr_value(value: Any) -> Any:
    """HDF5 attributes hold scalars, strings and arrays; everything else as JSON."""
    if value is None:
        return "null"
    if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return np.asarray(value)
    return json.dumps(value, sort_keys=True, default=str)


def set_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """Store ``attrs`` (parameters that produced the data) on an HDF5 object."""
    for key, value in attrs.items():
        obj.attrs[key] = _attr_value(value)


def write_h5(
    path: str | os.PathLike,
    datasets: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any] | None = None,
    group_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    compression: str | None = "gzip",
) -> None:
    """Atomically write ``{"group/name": array}`` to an HDF5 file.

    String arrays are stored as UTF-8 variable-length strings. ``attrs`` go on
    the root, ``group_attrs`` on named groups or datasets.
    """
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            for name, arr in datasets.items():
                arr = np.asarray(arr)
                if arr.dtype.kind in "UO":
                    f.create_dataset(name, data=arr.astype(object), dtype=h5py.string_dtype())
                else:
                    comp = compression if arr.size >= 1024 else None
                    f.create_dataset(name, data=arr, compression=comp)
            set_attrs(f, attrs or {})
            for name, obj_attrs in (group_attrs or {}).items():
                set_attrs(f[name] if name in f else f.require_group(name), obj_attrs)


def read_strings(ds: h5py.Dataset) -> np.ndarray:
    """Read a string dataset as a numpy array of ``str``."""
    return np.asarray([s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]], dtype=object)


def write_table(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Atomically write a table; the format follows the suffix (.csv, .tsv, .parquet)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".tsv":
            df.to_csv(tmp, sep="\t", index=False)
        else:
            df.to_csv(tmp, index=False)


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """Atomically save a matplotlib figure (format from the suffix of ``path``)."""
    path = Path(path)
    kwargs.setdefault("dpi", 110)
    kwargs.setdefault("bbox_inches", "tight")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
