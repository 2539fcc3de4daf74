"""Rehearse the ImageNet-scale workflow for real on this machine and measure how its costs grow.

For each N given with --classes, builds an ImageNet-shaped tree of N classes (the real wnids and
names of experiments/imagenet_classes.txt) of small procedurally drawn images that differ by class,
saves two small timm models with random weights as checkpoints (one output per class: 1000 at N = 1000) (a ResNet-18 of narrow
channels and a small ViT), writes a config with ``image_sets: labels`` (random models would predict
few images of most classes) and runs every stage of the workflow with the local profile, then the
Snakemake report. It prints, per N:

- total wall and CPU time (all processes);
- per rule: jobs, median and maximum wall and CPU per job (the rules' benchmark files), and the
  start-up of the rule's script (its imports in a fresh interpreter, measured separately);
- Snakemake's own CPU time and peak memory (the main process, sampled every 0.2 s);
- wall time and peak memory of aggregate_pair, gallery, explorer, summary and the report, and the report's size;
- the concept explorer: its build wall (its benchmark file), its size on disk, and how long headless
  Chromium takes to open its index (until the table of every class is rendered) and a class page;
- with two or more N: the exponent b of cost ~ N^b for each of these (least squares in log-log).

    python benchmarks/scale_rehearsal.py                      # N = 50 and 200
    python benchmarks/scale_rehearsal.py --classes 1000 --out results/rehearsal_1000.json

Everything is written under --workdir (default /tmp/rsvc_rehearsal); nothing is downloaded.

The explorer of a finished rehearsal (e.g. one run with an older version of the workflow) is measured
alone with ``--measure-explorer <rehearsal folder>`` (the folder holding rehearsal.yaml and results/):
it builds the explorer there first when it is missing (``snakemake <explorer outputs> --rerun-triggers
mtime``: nothing else is rerun), then measures it, e.g.

    python benchmarks/scale_rehearsal.py --measure-explorer /tmp/reh/n1000
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import psutil
import yaml

from rsvc.paths import JOB_NAMES, TEMPLATES, files, fill, templates

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
IMAGE_SIZE = 32  # canonical square; patches of 16 px with stride 12: a 2 x 2 grid
PATCH_SIZE = 16
POOL_IMAGES, HELDOUT_IMAGES = 10, 6  # per class
MODELS = {
    "rn18": {
        "timm_name": "resnet18",
        "model_kwargs": {"channels": [16, 32, 64, 128], "stem_width": 16},
        "pretrained_cfg_overlay": {"input_size": [3, 32, 32]},
        "layers": "relu",
    },
    "vit": {
        "timm_name": "test_vit",
        "model_kwargs": {"img_size": 32},
        "pretrained_cfg_overlay": {"input_size": [3, 32, 32]},
        "layers": "blocks",
    },
}
LATE_RULES = ("aggregate_pair", "gallery", "explorer", "summary")


# ---------------------------------------------------------------- data
def _class_image(rng: np.random.Generator, index: int) -> np.ndarray:
    """A 48 px image of class ``index``: class-specific colours, stripe orientation and frequency, a blob."""
    crng = np.random.default_rng(index)
    fg, bg = crng.integers(0, 256, 3), crng.integers(0, 256, 3)
    angle, freq = crng.uniform(0, np.pi), crng.uniform(0.15, 0.6)
    yy, xx = np.mgrid[0:48, 0:48].astype(float)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = (np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase) > 0)[..., None]
    img = np.where(stripes, fg, bg).astype(float)
    cx, cy, r = rng.uniform(10, 38), rng.uniform(10, 38), crng.uniform(4, 10)
    blob = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)[..., None]
    img = np.where(blob, 255 - fg, img) + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def build_tree(root: Path, n_classes: int) -> Path:
    """``root/{train,val}/<wnid>/*.JPEG`` for the first ``n_classes`` ImageNet classes; returns the class file."""
    lines = (REPO / "experiments/imagenet_classes.txt").read_text().splitlines()[:n_classes]
    class_file = root / "classes.txt"
    if class_file.exists() and len(class_file.read_text().splitlines()) == n_classes:
        return class_file
    for i, line in enumerate(lines):
        wnid = line.split("\t")[0]
        for split, n in (("train", POOL_IMAGES), ("val", HELDOUT_IMAGES)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([i, 0 if split == "train" else 1])
            for j in range(n):
                PIL.Image.fromarray(_class_image(rng, i)).save(folder / f"{wnid}_{j:04d}.JPEG", quality=90)
    class_file.write_text("\n".join(lines) + "\n")
    return class_file


def save_checkpoints(folder: Path, n_classes: int) -> dict[str, str]:
    """Random-weight checkpoints (seeded) of the two models, one output per class (1000 at full scale)."""
    import torch
    from safetensors.torch import save_file

    from rsvc.models import create_model
    from rsvc.specs import ModelSpec

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seed, (name, m) in enumerate(MODELS.items()):
        path = folder / f"{name}.safetensors"
        if not path.exists():
            torch.manual_seed(seed)
            spec = ModelSpec(
                name,
                m["timm_name"],
                num_classes=n_classes,
                model_kwargs=m["model_kwargs"],
                pretrained_cfg_overlay=m["pretrained_cfg_overlay"],
            )
            state = create_model(spec).state_dict()
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        paths[name] = str(path)
    return paths


def write_config(workdir: Path, n_classes: int) -> Path:
    data = workdir / "data"
    class_file = build_tree(data, n_classes)
    checkpoints = save_checkpoints(workdir / "checkpoints", n_classes)
    cfg = {
        "outdir": "results",
        "seed": 0,
        "dataset": {
            "root": str(data),
            "classes": str(class_file),
            "image_sets": "labels",
            "pool_split": "train",
            "heldout_split": "val",
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        "models": {
            name: {**m, "checkpoint": checkpoints[name], "num_classes": n_classes} for name, m in MODELS.items()
        },
        "pairs": [list(MODELS)],
        "concepts": {
            "k": 5,
            "concept_images": POOL_IMAGES,
            "shared_images": 2 * POOL_IMAGES,
            "heldout_images": HELDOUT_IMAGES,
            "min_heldout_images": HELDOUT_IMAGES - 1,  # the default 10 would leave CMCS unscored here
            "min_images": 5,
            "min_images_per_model": 2,  # k = 5 concepts need more than one image's 4 patches
        },
        "regression": {"folds": 3},
        "extraction": {"batch_size": 256, "predict_batch_size": 256, "num_workers": 0, "shard_size": 50},
    }
    path = workdir / "rehearsal.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---------------------------------------------------------------- measuring
def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_measured(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run ``cmd``; wall, CPU of the whole tree, and the main process's own CPU and peak RSS."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        own_cpu, peak = 0.0, 0
        while proc.poll() is None:
            try:
                t = ps.cpu_times()
                own_cpu = t.user + t.system
                peak = max(peak, ps.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}); see {log}")
    return {"wall_s": wall, "cpu_s": _children_cpu() - cpu0, "own_cpu_s": own_cpu, "own_peak_mb": peak / 2**20}


def rule_benchmarks(results: Path) -> dict[str, dict]:
    """Per rule: jobs, median/max wall and CPU, peak RSS, from Snakemake's benchmark files."""
    import pandas as pd

    out = {}
    for rule in sorted(JOB_NAMES):
        found = files(results, f"benchmarks/{rule}") if f"benchmarks/{rule}" in TEMPLATES else []
        if found:
            out[rule] = _stats(pd.concat([pd.read_csv(f, sep="\t") for f in found]))
    return out


def _stats(df) -> dict:
    cpu = df["cpu_time"].astype(float)
    return {
        "jobs": len(df),
        "wall_median_s": float(df["s"].median()),
        "wall_max_s": float(df["s"].max()),
        "wall_total_s": float(df["s"].sum()),
        "cpu_median_s": float(cpu.median()),
        "cpu_max_s": float(cpu.max()),
        "cpu_total_s": float(cpu.sum()),
        "max_rss_mb": float(df["max_rss"].replace("-", np.nan).astype(float).max()),
    }


def script_startup(repeats: int = 3) -> dict[str, dict]:
    """Per workflow script: wall and CPU of importing what it imports, in a fresh interpreter."""
    out = {}
    for script in sorted((REPO / "workflow_scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        imports = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        code = "\n".join(["import os", "os.environ.setdefault('HF_HUB_OFFLINE', '1')", *imports])
        walls, cpus = [], []
        for _ in range(repeats):
            cpu0, t0 = _children_cpu(), time.perf_counter()
            subprocess.run([PYTHON, "-c", code], cwd=REPO / "workflow_scripts", check=True)
            walls.append(time.perf_counter() - t0)
            cpus.append(_children_cpu() - cpu0)
        out[script.stem] = {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}
    return out


def _folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes, files) of every file under ``folder``."""
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


def time_explorer_pages(site: Path, repeats: int = 3) -> dict:
    """Seconds headless Chromium needs to open the explorer's index until its table of every class is
    rendered (median of ``repeats`` fresh loads: wall from navigation, and the page's own
    ``performance.now()`` when the table was done), and to open the first class page with its patches."""
    sys.path.insert(0, str(REPO / "tests"))
    import tempfile

    from chromium import Chromium, find_chromium

    url = (site / "index.html").as_uri()
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(find_chromium(install=False), Path(profile))
        try:
            walls, in_page = [], []
            for _ in range(repeats):
                browser.call("Page.navigate", session=True, url="about:blank")
                t0 = time.perf_counter()
                browser.call("Page.navigate", session=True, url=url)
                browser.wait_for("window.RSVC_READY !== undefined", timeout=120)
                walls.append(time.perf_counter() - t0)
                in_page.append(browser.js("window.RSVC_READY") / 1000)
            rows = browser.js("document.querySelectorAll('#rows tr').length")
            first = browser.js("RSVC_INDEX.classes.find(c => c.status !== 'skipped').id")
            t0 = time.perf_counter()
            browser.js(f"location.hash = {json.dumps('#' + first)}")
            browser.wait_for(
                "document.querySelectorAll('article.concept').length > 0 && [...document.images].every(x => x.complete)",
                timeout=120,
            )
            class_s = time.perf_counter() - t0
            errors = browser.errors()
        finally:
            browser.close()
    return {
        "index_open_s": statistics.median(walls),
        "index_open_in_page_s": statistics.median(in_page),
        "index_rows": rows,
        "class_page_s": class_s,
        "console_errors": errors,
    }


def measure_explorer(results: Path) -> dict:
    """Per pair: the explorer's build (its benchmark file), size on disk and opening times in Chromium."""
    out = {}
    # none in a run of a workflow version without the explorer; explorer/* holds the sites' links too
    for site in [p for p in files(results, "explorer") if p.is_dir()]:
        bench = Path(fill(templates(results), "benchmarks/explorer", pair=site.name))
        size, n_files = _folder_bytes(site)
        sprites, _ = _folder_bytes(site / "sprites")
        entry = {"bytes": size, "files": n_files, "sprite_bytes": sprites}
        if bench.exists():
            entry["build"] = _stats(__import__("pandas").read_csv(bench, sep="\t"))
        entry.update(time_explorer_pages(site))
        out[site.name] = entry
    return out


def explorer_text(explorer: dict) -> list[str]:
    lines = []
    for pair, e in explorer.items():
        build = e.get("build", {})
        lines.append(
            f"explorer {pair}: built in {build.get('wall_median_s', math.nan):.0f} s wall "
            f"({build.get('cpu_median_s', math.nan):.0f} s CPU, {build.get('max_rss_mb', math.nan):.0f} MB); "
            f"{e['bytes'] / 1e6:.1f} MB in {e['files']} files (sprites {e['sprite_bytes'] / 1e6:.1f} MB); "
            f"index opens in {e['index_open_s']:.2f} s ({e['index_rows']} rows; table rendered at "
            f"{e['index_open_in_page_s']:.2f} s in the page), a class page in {e['class_page_s']:.2f} s; "
            f"console errors: {len(e['console_errors'])}"
        )
    return lines


def build_and_measure_explorer(workdir: Path, cores: int) -> dict:
    """The explorer of a finished rehearsal in ``workdir``: built when missing (nothing else rerun), then measured."""
    config = workdir / "rehearsal.yaml"
    cfg = yaml.safe_load(config.read_text())
    results = workdir / cfg["outdir"]
    pairs = ["-vs-".join(p) for p in cfg["pairs"]]
    missing = [p for p in pairs if not (Path(fill(templates(results), "explorer", pair=p)) / "index.html").exists()]
    if missing:
        targets = [fill(templates(cfg["outdir"]), "explorer_link", pair=p) for p in missing]  # run in workdir
        cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *targets]
        cmd += ["--configfile", str(config), "--cores", str(cores), "--rerun-triggers", "mtime"]
        run = run_measured(cmd, workdir, workdir / "explorer_build.log")
        print(f"built the explorer of {missing}: {run['wall_s']:.0f} s wall (Snakemake included)", flush=True)
    return measure_explorer(results)


def rehearse(n_classes: int, workdir: Path, cores: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    config = write_config(workdir, n_classes)
    build_s = time.perf_counter() - t0
    base = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(config)]
    dry = run_measured([*base, "-n", "--quiet", "rules"], workdir, workdir / "dryrun.log")
    run = run_measured(
        [*base, "--profile", str(REPO / "profiles/local"), "--cores", str(cores)], workdir, workdir / "run.log"
    )
    results = workdir / yaml.safe_load(config.read_text())["outdir"]
    report_path = results / "report.html"
    report = run_measured([*base, "--report", str(report_path)], workdir, workdir / "report.log")
    rules = rule_benchmarks(results)
    summary = __import__("pandas").read_csv(
        fill(templates(results), "run_summary"), sep="\t", dtype=str, keep_default_na=False
    )
    left = subprocess.run([*base, "-n"], cwd=workdir, capture_output=True, text=True)
    jobs_cpu = sum(r["cpu_total_s"] for r in rules.values())
    return {
        "classes": n_classes,
        "build_s": build_s,
        "dry_run": dry,
        "run": run,
        "report": {**report, "bytes": report_path.stat().st_size},
        "rules": rules,
        "jobs": sum(r["jobs"] for r in rules.values()),
        "jobs_cpu_s": jobs_cpu,
        # the benchmark files under-read jobs shorter than their sampling interval: the jobs' CPU is what
        # the whole process tree used minus Snakemake's own
        "snakemake_cpu_share": run["own_cpu_s"] / max(run["cpu_s"] - run["own_cpu_s"], 1e-9),
        "summary_rows": {s: int((summary["stage"] == s).sum()) for s in summary["stage"].unique()},
        "nothing_left": "Nothing to be done" in left.stdout + left.stderr,
        "explorer": measure_explorer(results),
    }


def exponent(ns: list[int], values: list[float]) -> float:
    """b of value ~ N^b, least squares in log-log."""
    x, y = np.log(ns), np.log(np.maximum(values, 1e-9))
    return float(np.polyfit(x, y, 1)[0])


def report_text(runs: list[dict], startup: dict) -> str:
    lines = []
    for r in runs:
        run = r["run"]
        lines.append(f"\n=== N = {r['classes']} classes: {r['jobs']} jobs ===")
        lines.append(
            f"total: wall {run['wall_s']:.0f} s, CPU {run['cpu_s']:.0f} s (all processes); "
            f"dataset and checkpoints built in {r['build_s']:.0f} s"
        )
        lines.append(
            f"snakemake itself: CPU {run['own_cpu_s']:.1f} s = {100 * r['snakemake_cpu_share']:.1f} % of "
            f"the jobs' CPU ({run['cpu_s'] - run['own_cpu_s']:.0f} s; their benchmark files say "
            f"{r['jobs_cpu_s']:.0f} s), peak RSS {run['own_peak_mb']:.0f} MB; "
            f"dry run {r['dry_run']['wall_s']:.1f} s wall, {r['dry_run']['own_cpu_s']:.1f} s CPU"
        )
        lines.append(
            f"{'rule':16s} {'jobs':>5s} {'wall med':>9s} {'wall max':>9s} {'CPU med':>8s} {'CPU max':>8s} "
            f"{'CPU sum':>8s} {'RSS max':>8s} {'start-up CPU':>12s}"
        )
        for rule, s in sorted(r["rules"].items(), key=lambda kv: -kv[1]["cpu_total_s"]):
            st = startup.get(rule, {}).get("cpu_s", float("nan"))
            lines.append(
                f"{rule:16s} {s['jobs']:5d} {s['wall_median_s']:8.2f}s {s['wall_max_s']:8.2f}s "
                f"{s['cpu_median_s']:7.2f}s {s['cpu_max_s']:7.2f}s {s['cpu_total_s']:7.0f}s "
                f"{s['max_rss_mb']:6.0f}MB {st:11.2f}s"
            )
        late = {k: r["rules"][k] for k in LATE_RULES if k in r["rules"]}
        late_wall = sum(v["wall_total_s"] for v in late.values()) + r["report"]["wall_s"]
        lines.append(
            f"aggregate_pair + gallery + explorer + summary + report: {late_wall:.0f} s wall; report "
            f"{r['report']['wall_s']:.0f} s, peak {r['report']['own_peak_mb']:.0f} MB, "
            f"{r['report']['bytes'] / 2**20:.1f} MiB"
        )
        lines += explorer_text(r.get("explorer", {}))
        lines.append(f"run summary rows by stage: {r['summary_rows']}; nothing left to do: {r['nothing_left']}")
    if len(runs) >= 2:
        ns = [r["classes"] for r in runs]
        lines.append(f"\n=== growth with N over {ns}: exponent b of cost ~ N^b ===")
        series = {
            "total wall": [r["run"]["wall_s"] for r in runs],
            "total CPU": [r["run"]["cpu_s"] for r in runs],
            "snakemake CPU": [r["run"]["own_cpu_s"] for r in runs],
            "snakemake peak RSS": [r["run"]["own_peak_mb"] for r in runs],
            "dry-run CPU": [r["dry_run"]["own_cpu_s"] for r in runs],
            "report wall": [r["report"]["wall_s"] for r in runs],
            "report size": [r["report"]["bytes"] for r in runs],
        }
        for rule in LATE_RULES:
            series[f"{rule} wall"] = [r["rules"].get(rule, {}).get("wall_total_s", math.nan) for r in runs]
            series[f"{rule} RSS"] = [r["rules"].get(rule, {}).get("max_rss_mb", math.nan) for r in runs]
        for pair in runs[0].get("explorer", {}):
            series[f"explorer size {pair}"] = [r["explorer"].get(pair, {}).get("bytes", math.nan) for r in runs]
            series[f"explorer index open {pair}"] = [
                r["explorer"].get(pair, {}).get("index_open_s", math.nan) for r in runs
            ]
        for name, values in series.items():
            lines.append(f"{name:24s} {exponent(ns, values):5.2f}   ({', '.join(f'{v:.3g}' for v in values)})")
    lines.append(
        "\nscript start-up (imports in a fresh interpreter, median of 3): "
        + ", ".join(f"{k} {v['cpu_s']:.2f}s CPU" for k, v in sorted(startup.items()))
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rsvc_rehearsal"))
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    ap.add_argument(
        "--measure-explorer",
        type=Path,
        metavar="REHEARSAL_DIR",
        help="only build (if missing) and measure the explorer of a finished rehearsal folder (rehearsal.yaml, results/)",
    )
    args = ap.parse_args()
    if args.measure_explorer:
        explorer = build_and_measure_explorer(args.measure_explorer, args.cores)
        print("\n".join(explorer_text(explorer)))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"explorer": explorer}, indent=2))
        return
    startup = script_startup()
    runs = []
    for n in args.classes:
        print(f"rehearsing N = {n} classes in {args.workdir / f'n{n}'} ...", flush=True)
        runs.append(rehearse(n, args.workdir / f"n{n}", args.cores))
        print(report_text(runs[-1:], startup), flush=True)
    print(report_text(runs, startup))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": runs, "startup": startup}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
