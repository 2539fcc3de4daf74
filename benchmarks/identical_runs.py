"""Did a change alter any number? Two finished runs compared exactly: every HDF5 dataset (bit for bit,
NaN equal to NaN), every table (byte for byte) and, reported apart, every HDF5 attribute (a change may
rename a stored parameter). Logs, Snakemake's job timings and the demo's images are left out.

    python benchmarks/identical_runs.py RUN_A/results RUN_B/results

Exit status 1 when a dataset or a table differs or exists in one run only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np

SKIP = ("logs/", "benchmarks/", "data/", ".snakemake")


def files(root, ext):
    return {
        str(p.relative_to(root)) for p in Path(root).rglob(f"*{ext}") if not str(p.relative_to(root)).startswith(SKIP)
    }


def h5_items(path):
    out, attrs = {}, {}
    with h5py.File(path, "r") as f:
        attrs["/"] = dict(f.attrs)

        def visit(name, obj):
            attrs[name] = dict(obj.attrs)
            if isinstance(obj, h5py.Dataset):
                v = obj[()]
                if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype):
                    v = np.asarray(obj.asstr()[()]) if obj.shape != () else obj.asstr()[()]
                out[name] = v

        f.visititems(visit)
    return out, attrs


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _text(value):
    value = np.asarray(value)
    return value.astype(str) if value.dtype.kind in "OS" else value


def main(A, B):
    bad, attr_diffs = [], []
    for ext in (".h5",):
        fa, fb = files(A, ext), files(B, ext)
        for only in sorted(fa ^ fb):
            bad.append(f"only in one run: {only}")
        for rel in sorted(fa & fb):
            da, aa = h5_items(Path(A, rel))
            db, ab = h5_items(Path(B, rel))
            if set(da) != set(db):
                bad.append(f"{rel}: datasets {sorted(set(da) ^ set(db))}")
            for k in sorted(set(da) & set(db)):
                if not same(da[k], db[k]):
                    bad.append(f"{rel}:{k}")
            for k in sorted(set(aa) | set(ab)):
                x, y = aa.get(k, {}), ab.get(k, {})
                for n in sorted(set(x) | set(y)):
                    if n not in x or n not in y or not same(_text(x[n]), _text(y[n])):
                        attr_diffs.append(f"{rel}:{k}@{n}: {x.get(n)!r} != {y.get(n)!r}")
        print(f"{len(fa & fb)} HDF5 files compared")
    for ext in (".csv", ".tsv"):
        fa, fb = files(A, ext), files(B, ext)
        for only in sorted(fa ^ fb):
            bad.append(f"only in one run: {only}")
        for rel in sorted(fa & fb):
            if Path(A, rel).read_bytes() != Path(B, rel).read_bytes():
                bad.append(f"{rel}: table differs")
        print(f"{len(fa & fb)} {ext} tables compared")
    for line in attr_diffs[:40]:
        print("attribute:", line[:300])
    print(f"{len(attr_diffs)} attribute differences")
    for line in bad:
        print("DIFFERENT:", line)
    print("identical numbers" if not bad else f"{len(bad)} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
