"""Check that two finished runs of the workflow produced identical numbers (e.g. before and after a
refactoring). Works on any two ``results/`` folders; needs only h5py and numpy.

    python benchmarks/identical_runs.py RUN_A/results RUN_B/results [--json out.json]
        [--strict-attrs] [--strict-figures] [--data] [--show N]

What is compared, by kind (relative paths; files only in A or only in B are listed):

- h5 (``*.h5``): the same groups and datasets; each dataset the same shape, dtype and values bit for
  bit (NaN equals NaN in the same places; strings compared decoded). Attributes of the root, groups
  and datasets are compared after decoding (JSON strings parsed) and reported apart ("attrs");
- table (``*.tsv``, ``*.csv``): the same lines of text (header, column and row order are told apart);
- json (``*.json``): parsed, keys containing seconds/time/elapsed/duration ignored (and listed);
- figures (``*.png``): byte-identical or not;
- explorer (``explorer/**/*.js|json`` only, sprites and pages skipped): byte-identical or not;
- data (``data/``, the synthetic images): the listing only; ``--data`` compares bytes;
- other (anything else, e.g. ``*.safetensors``, ``report.html``): byte-identical or not.

Skipped: ``logs/``, ``benchmarks/`` (Snakemake's per-job timing), ``.snakemake*``.
Exit status 1 when h5 datasets, tables, json or data differ, or such files exist in one run only;
attribute and figure differences fail only with ``--strict-attrs`` / ``--strict-figures``; explorer
and other files are only reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np

TIMING = ("seconds", "time", "elapsed", "duration")
KINDS = {".h5": "h5", ".tsv": "table", ".csv": "table", ".json": "json", ".png": "figures"}
ORDER = ("h5", "table", "json", "figures", "explorer", "data", "other")


def kind_of(rel: Path) -> str | None:
    top = rel.parts[0]
    if top in ("logs", "benchmarks") or any(p.startswith(".snakemake") for p in rel.parts):
        return None
    if top == "explorer":
        return "explorer" if rel.suffix in (".js", ".json") else None
    return "data" if top == "data" else KINDS.get(rel.suffix, "other")


def canon(v, ignored: set[str] | None = None, path: str = ""):
    """Plain Python value: bytes decoded, JSON strings parsed, numpy unpacked; timing keys dropped
    (and collected in ``ignored``) when ``ignored`` is given."""
    if isinstance(v, bytes):
        v = v.decode("utf-8", "surrogateescape")
    if isinstance(v, str) and v.lstrip().startswith(("{", "[")):
        try:
            v = json.loads(v)
        except ValueError:
            pass
    if isinstance(v, np.ndarray | np.generic):
        v = v.tolist()
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if ignored is not None and any(t in str(k).lower() for t in TIMING):
                ignored.add(f"{path}/{k}")
            else:
                out[str(k)] = canon(x, ignored, f"{path}/{k}")
        return out
    if isinstance(v, list | tuple):
        return [canon(x, ignored, f"{path}[{i}]") for i, x in enumerate(v)]
    return v


def dump(v) -> str:  # floats by repr: exact; NaN as NaN; -0.0 apart from 0.0
    return json.dumps(v, sort_keys=True, default=repr)


def first_diff(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys()):
            if k not in a or k not in b or dump(a[k]) != dump(b[k]):
                return first_diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}/{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if dump(x) != dump(y):
                return first_diff(x, y, f"{path}[{i}]")
    return f"{path or '/'}: A={short(dump(a))} B={short(dump(b))}"


def short(s: str, n: int = 200) -> str:
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


def dataset_diff(a: h5py.Dataset, b: h5py.Dataset) -> str | None:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    if a.shape is None:  # empty dataspace
        return None
    if h5py.check_string_dtype(a.dtype):
        va, vb = (np.atleast_1d(np.asarray(x.asstr(errors="surrogateescape")[()], dtype=object)) for x in (a, b))
    else:
        va, vb = np.atleast_1d(a[()]), np.atleast_1d(b[()])
    kind = va.dtype.kind
    if kind == "f" and va.itemsize in (2, 4, 8):  # bitwise, but any NaN equals any NaN
        u = f"u{va.itemsize}"
        eq = (va.view(u) == vb.view(u)) | (np.isnan(va) & np.isnan(vb))
    elif kind in "fc":
        eq = (va == vb) | (np.isnan(va) & np.isnan(vb))
    elif kind == "O":
        eq = np.array([np.array_equal(x, y) for x, y in zip(va.ravel(), vb.ravel())], dtype=bool)
    else:
        eq = np.asarray(va == vb)
    n = eq.size - int(np.count_nonzero(eq))
    if not n:
        return None
    msg = f"{n} of {eq.size} values differ"
    if kind in "fiub":
        fa, fb = va.astype(np.float64), vb.astype(np.float64)
        nan_a, nan_b = np.isnan(fa), np.isnan(fb)
        d = np.abs(fa - fb)[~(nan_a | nan_b)]
        msg += f", max |diff| {d.max() if d.size else 0.0:.6g}"
        msg += " and NaN in different places" if (nan_a != nan_b).any() else ""
    return msg


def compare_h5(pa: Path, pb: Path, rel: str, attrs: list[str]) -> tuple[int, list[str]]:
    diffs, n_datasets = [], 0
    with h5py.File(pa, "r") as fa, h5py.File(pb, "r") as fb:
        items = []
        for f in (fa, fb):
            found = {"/": f}
            f.visititems(found.__setitem__)
            items.append(found)
        ia, ib = items
        for name in sorted(ia.keys() | ib.keys()):
            where = f"{rel}:{name}"
            if name not in ia or name not in ib:
                diffs.append(f"{name}: only in {'A' if name in ia else 'B'}")
                continue
            a, b = ia[name], ib[name]
            for key in sorted(a.attrs.keys() | b.attrs.keys()):
                va, vb = (dump(canon(x.attrs[key])) if key in x.attrs else "<missing>" for x in (a, b))
                if va != vb:
                    attrs.append(f"{where} @{key}: A={va} B={vb}")
            if isinstance(a, h5py.Dataset) != isinstance(b, h5py.Dataset):
                diffs.append(f"{name}: a group in one run, a dataset in the other")
            elif isinstance(a, h5py.Dataset):
                n_datasets += 1
                if why := dataset_diff(a, b):
                    diffs.append(f"{name}: {why}")
    return n_datasets, diffs


def compare_text(pa: Path, pb: Path) -> str | None:
    la, lb = (p.read_text(errors="surrogateescape").splitlines() for p in (pa, pb))
    if la == lb:
        return None
    ha, hb = la[:1], lb[:1]
    if ha != hb:
        sep = "\t" if pa.suffix == ".tsv" else ","
        same = ha and hb and sorted(ha[0].split(sep)) == sorted(hb[0].split(sep))
        return f"header {'column order ' if same else ''}differs: A={short(str(ha))} B={short(str(hb))}"
    if sorted(la) == sorted(lb):
        return "same rows, different row order"
    i = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
    at = lambda lines: short(repr(lines[i]), 150) if i < len(lines) else "<end>"  # noqa: E731
    return f"{len(la)} vs {len(lb)} lines, first difference at line {i + 1}: A={at(la)} B={at(lb)}"


def compare_file(kind: str, pa: Path, pb: Path, args, rel: str, attrs, ignored) -> tuple[str | None, int]:
    """(why the files differ or None, number of h5 datasets compared)."""
    if kind == "h5":
        n, diffs = compare_h5(pa, pb, rel, attrs)
        lines = [f"{len(diffs)} differences ({n} datasets in both runs)", *diffs[: args.show]]
        lines += [f"... {len(diffs)} in all"] if len(diffs) > args.show else []
        return "\n      ".join(lines) if diffs else None, n
    if kind == "table":
        return compare_text(pa, pb), 0
    if kind == "json":
        a, b = (canon(json.loads(p.read_text()), ignored, rel) for p in (pa, pb))
        return (None if dump(a) == dump(b) else first_diff(a, b)), 0
    if kind == "data" and not args.data:
        return None, 0
    ba, bb = pa.read_bytes(), pb.read_bytes()
    if ba == bb:
        return None, 0
    i = next((i for i, (x, y) in enumerate(zip(ba, bb)) if x != y), min(len(ba), len(bb)))
    return f"{len(ba)} vs {len(bb)} bytes, first difference at byte {i}", 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--json", type=Path, help="write the full report here")
    ap.add_argument("--strict-attrs", action="store_true", help="attribute differences fail")
    ap.add_argument("--strict-figures", action="store_true", help="PNG differences fail")
    ap.add_argument("--data", action="store_true", help="byte-compare the files under data/ too")
    ap.add_argument("--show", type=int, default=5, help="differences listed per kind (default 5)")
    args = ap.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not run.is_dir():
            ap.error(f"not a folder: {run}")
    t0 = time.perf_counter()
    files = [{p.relative_to(r): p for p in r.rglob("*") if p.is_file()} for r in (args.run_a, args.run_b)]
    res = {k: {"compared": 0, "identical": 0, "differing": [], "only_a": [], "only_b": []} for k in ORDER}
    attrs, ignored, n_datasets, n_skipped = [], set(), 0, 0
    for rel in sorted(files[0].keys() | files[1].keys()):
        kind = kind_of(rel)
        if kind is None:
            n_skipped += 1
            continue
        r = res[kind]
        if rel not in files[1] or rel not in files[0]:
            r["only_a" if rel in files[0] else "only_b"].append(str(rel))
            continue
        try:
            why, n = compare_file(kind, files[0][rel], files[1][rel], args, str(rel), attrs, ignored)
        except (OSError, ValueError) as e:  # unreadable or not parseable: counts as a difference
            why, n = f"could not compare: {e}", 0
        n_datasets += n
        r["compared"] += 1
        r["identical"] += why is None
        if why:
            r["differing"].append(f"{rel}: {why}")
    failing = {"h5", "table", "json", "data"} | ({"figures"} if args.strict_figures else set())
    ok = not any(res[k]["differing"] or res[k]["only_a"] or res[k]["only_b"] for k in failing)
    ok = ok and not (args.strict_attrs and attrs)
    seconds = time.perf_counter() - t0

    print(f"A: {args.run_a}\nB: {args.run_b}")
    print(f"{'kind':10}{'compared':>10}{'identical':>11}{'differing':>11}{'only-in-A':>11}{'only-in-B':>11}")
    for k, r in res.items():
        print(f"{k + ('' if k in failing else '*'):10}{r['compared']:>10}{r['identical']:>11}", end="")
        print(f"{len(r['differing']):>11}{len(r['only_a']):>11}{len(r['only_b']):>11}")
    print(f"(* reported, not failing; data: {'bytes' if args.data else 'listing only'}; {n_skipped} files skipped)")
    print(f"h5 datasets compared: {n_datasets}; attributes differing: {len(attrs)}", end="")
    print("" if args.strict_attrs else " (not failing without --strict-attrs)")
    for k, r in res.items():
        for what, label in (("differing", "differs"), ("only_a", "only in A"), ("only_b", "only in B")):
            for line in r[what][: args.show]:
                print(f"  {k} {label}: {line}")
            if len(r[what]) > args.show:
                print(f"  {k} {label}: ... {len(r[what])} in all")
    for line in attrs:
        print(f"  attr: {short(line, 1000)}")
    if ignored:
        print(f"json timing keys ignored: {', '.join(sorted(ignored)[:10])}{' ...' if len(ignored) > 10 else ''}")
    print(f"{'IDENTICAL' if ok else 'DIFFERENT'} ({seconds:.1f} s)")
    if args.json:
        report = {"ok": ok, "seconds": seconds, "kinds": res, "h5_datasets": n_datasets, "attrs": attrs}
        args.json.write_text(json.dumps(report | {"ignored_timing_keys": sorted(ignored)}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
