"""The short results file of ``benchmarks/gpu_check.sh``: summary.txt and summary.json in RESULTS.

Reads RESULTS/extraction.jsonl (one line per ``extraction.py --loop`` run, with the loop's wall-clock
window), RESULTS/gpu_samples.csv (``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used
--format=csv,noheader,nounits -lms 200``), RESULTS/compare.json (``compare_runs.py``) and the
script's step table, and reports patches/s per model / mode / batch size, the GPU utilisation over
each run's forward loop, and the CUDA-vs-CPU demo comparison, each against the issue's targets; and
the GPU time of the paper's RN18-vs-RN50 run (experiments/imagenet_rn18_rn50.yaml: 1000 classes)
projected from the measured rates (:func:`projection`).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PAPER_RUN = REPO / "experiments/imagenet_rn18_rn50.yaml"
IMAGENET_VAL_PER_CLASS = 50  # the held-out split (ImageNet val) has 50 images per class, all predicted
TARGET_PATCHES_PER_S = 5000  # resnet50, 224 px, bf16, the workflow's loop
TARGET_UTILISATION = 80.0  # % of the forward loop's samples
TARGET_MMCS, TARGET_CMCS = 0.01, 0.02


def read_samples(path: Path) -> list[tuple[float, float, float]]:
    """``(time.time(), utilisation %, memory MiB)`` per nvidia-smi sample (local-time timestamps)."""
    samples = []
    if not path.exists():
        return samples
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) < 3:
                continue
            try:
                when = dt.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
                samples.append((when, float(row[1]), float(row[2])))
            except ValueError:  # a header or a cut-off last line
                continue
    return samples


def window(samples: list[tuple[float, float, float]], start: float, end: float) -> dict[str, float]:
    """Mean utilisation and peak memory of the samples inside ``[start, end]`` (NaN when none)."""
    inside = [(u, m) for t, u, m in samples if start <= t <= end]
    if not inside:
        return {"gpu_util_mean": math.nan, "gpu_mem_peak_mib": math.nan, "samples": 0}
    return {
        "gpu_util_mean": sum(u for u, _ in inside) / len(inside),
        "gpu_mem_peak_mib": max(m for _, m in inside),
        "samples": len(inside),
    }


def read_runs(path: Path, samples: list) -> list[dict]:
    runs = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                run = json.loads(line)
                runs.append({**run, **window(samples, run["loop_start"], run["loop_end"])})
    return runs


def _fmt(x: float, spec: str = ".0f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def forward_passes(config_path: Path = PAPER_RUN) -> dict:
    """Forward passes per model of a run of ``config_path`` (each one 224 px input through the network).

    Per model: a prediction for every pool image (``pool_images_per_class`` per class) and every
    held-out image; activations of every patch of its own and each other model's shared and
    held-out images (``activations(model, owner)``: owners = the models), patches per image from the
    patch grid (:func:`rsvc.patches.patch_boxes`).
    """
    from rsvc.patches import patch_boxes

    cfg = yaml.safe_load(config_path.read_text())
    ds, c = cfg["dataset"], cfg["concepts"]
    classes_file = Path(ds["classes"])
    classes_file = classes_file if classes_file.is_absolute() else REPO / classes_file
    n_classes = sum(1 for line in classes_file.read_text().splitlines() if line.strip() and not line.startswith("#"))
    patches = len(patch_boxes(ds["image_size"], ds["patch_size"]))
    owners = len(cfg["models"])
    predict = n_classes * (ds["pool_images_per_class"] + IMAGENET_VAL_PER_CLASS)
    activations = owners * n_classes * (c["shared_images"] + c["heldout_images"]) * patches
    models = {name: m["timm_name"].split(".")[0] for name, m in cfg["models"].items()}
    return {
        "classes": n_classes,
        "patches_per_image": patches,
        "predict": predict,
        "activations": activations,
        "models": models,
    }


def projection(runs: list[dict], config_path: Path = PAPER_RUN) -> dict:
    """Projected GPU seconds of the run of ``config_path`` per model, from the best measured steady rate
    of its architecture in bf16 + channels-last, eager and with ``extraction.compile``."""
    passes = forward_passes(config_path)
    per_model, totals = {}, {}
    for name, arch in passes["models"].items():
        row = {"arch": arch, "forwards": passes["predict"] + passes["activations"]}
        for label, mode in (("eager", "bf16+cl"), ("compile", "bf16+cl+compile")):
            rates = [
                (r["steady_patches_per_s"], r["batch_size"]) for r in runs if r["model"] == arch and r["mode"] == mode
            ]
            rates = [x for x in rates if x[0] == x[0]]  # NaN: a run of one batch
            rate, batch = max(rates) if rates else (math.nan, None)
            row[label] = {"rate": rate, "batch_size": batch, "seconds": row["forwards"] / rate}
            totals[label] = totals.get(label, 0.0) + row[label]["seconds"]
        per_model[name] = row
    devices = sorted({r.get("device", "?") for r in runs if r["mode"].startswith("bf16+cl")})
    return {
        **passes,
        "per_model": per_model,
        "total_seconds": totals,
        "config": str(config_path.relative_to(REPO)),
        "devices": devices,
    }


def summarise(results: Path, steps: Path | None, sustained_model: str, total_seconds: float | None) -> dict:
    samples = read_samples(results / "gpu_samples.csv")
    runs = read_runs(results / "extraction.jsonl", samples)
    compare = json.loads((results / "compare.json").read_text()) if (results / "compare.json").exists() else None
    step_rows = []
    if steps and steps.exists():
        step_rows = list(csv.DictReader(steps.open(), delimiter="\t"))
    sustained = [r for r in runs if r["model"] == sustained_model and r["mode"] == "bf16+cl"]
    sustained = max(sustained, key=lambda r: r["seconds"]) if sustained else None
    checks = {}
    if sustained:
        rate = sustained["steady_patches_per_s"]
        checks["patches_per_s"] = {
            "what": f"{sustained_model} bf16 channels-last, the workflow's loop, patches/s after the first batch",
            "value": rate,
            "target": f">= {TARGET_PATCHES_PER_S}",
            "pass": rate >= TARGET_PATCHES_PER_S,
        }
        checks["gpu_utilisation"] = {
            "what": f"mean GPU utilisation over that loop ({sustained['samples']} samples, 200 ms)",
            "value": sustained["gpu_util_mean"],
            "target": f">= {TARGET_UTILISATION:.0f} %",
            "pass": sustained["gpu_util_mean"] >= TARGET_UTILISATION,
        }
    if compare:
        checks["demo"] = {
            "what": "tiny demo, device vs CPU: max |d layerwise MMCS|, max |d CMCS| (same concept), image sets",
            "value": [compare["max_abs_mmcs_diff"], compare["max_abs_cmcs_diff"], compare["image_sets_identical"]],
            "target": f"<= {TARGET_MMCS}, <= {TARGET_CMCS}, identical",
            "pass": compare["max_abs_mmcs_diff"] <= TARGET_MMCS
            and compare["max_abs_cmcs_diff"] <= TARGET_CMCS
            and compare["image_sets_identical"],
        }
    return {
        "total_seconds": total_seconds,
        "steps": step_rows,
        "checks": checks,
        "runs": runs,
        "compare": compare,
        "samples": len(samples),
        "projection": projection(runs),
    }


def render(summary: dict) -> str:
    lines = [f"GPU check ({_fmt(summary['total_seconds'])} s; {summary['samples']} nvidia-smi samples)", ""]
    lines += ["steps:"] + [f"  {s['step']}: {s['status']} ({s['seconds']} s)" for s in summary["steps"]] + [""]
    lines.append("checks:")
    for name, c in summary["checks"].items():
        value = c["value"]
        shown = (
            ", ".join(_fmt(v, ".4f") if isinstance(v, float) else ("yes" if v is True else str(v)) for v in value)
            if isinstance(value, list)
            else _fmt(value, ".1f")
        )
        lines.append(f"  {name}: {'PASS' if c['pass'] else 'FAIL'}  {c['what']}: {shown} (target {c['target']})")
    if not summary["checks"]:
        lines.append("  none measured")
    if summary["compare"]:
        c = summary["compare"]
        lines.append(
            f"  demo details: max rel activation diff {_fmt(c['max_rel_activation_diff'], '.2e')}, "
            f"MMCS pearson {_fmt(c['max_abs_mmcs_diff_pearson'], '.4f')} / spearman "
            f"{_fmt(c['max_abs_mmcs_diff_spearman'], '.4f')}, CMCS by index {_fmt(c['max_abs_cmcs_diff_by_index'], '.4f')}, "
            f"{c['concepts_not_found_again']} of {c['concepts']} concepts not found again"
        )
    lines += ["", "patches/s (the workflow's loop; 'steady' = after the first batch, which pays compile/autotune):"]
    lines.append(
        f"  {'model':<24}{'mode':<18}{'batch':>6}{'patches':>9}{'loop/s':>10}{'steady/s':>10}{'GPU %':>7}{'MiB':>8}"
    )
    for r in summary["runs"]:
        lines.append(
            f"  {r['model']:<24}{r['mode']:<18}{r['batch_size']:>6}{r['patches']:>9}{_fmt(r['patches_per_s']):>10}"
            f"{_fmt(r['steady_patches_per_s']):>10}{_fmt(r['gpu_util_mean']):>7}{_fmt(r['gpu_mem_peak_mib']):>8}"
        )
    p = summary.get("projection")
    if p:
        lines += [
            "",
            f"projected GPU time of {p['config']} ({p['classes']} classes; per model {p['predict']:,} predictions + "
            f"{p['activations']:,} patch forwards of {p['patches_per_image']} per image), at the best bf16 "
            f"channels-last rate measured above (on {', '.join(p['devices']) or 'nothing'}):",
        ]
        for name, r in p["per_model"].items():
            parts = [
                f"{label} {_fmt(r[label]['rate'])}/s (batch {r[label]['batch_size']}) -> "
                f"{_fmt(r[label]['seconds'] / 60, '.1f')} min"
                if r[label]["batch_size"]
                else f"{label} not measured"
                for label in ("eager", "compile")
            ]
            lines.append(f"  {name} ({r['arch']}, {r['forwards']:,} forwards): " + "; ".join(parts))
        total = p["total_seconds"]
        lines.append(
            f"  both models: eager {_fmt(total['eager'] / 60, '.1f')} min, compile {_fmt(total['compile'] / 60, '.1f')} min"
            " (GPU time only: JPEG decoding by the data workers runs beside it)"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--steps", type=Path, default=None, help="the script's step table (tsv)")
    parser.add_argument("--sustained-model", default="resnet50")
    parser.add_argument("--total-seconds", type=float, default=None)
    args = parser.parse_args()
    summary = summarise(args.results, args.steps, args.sustained_model, args.total_seconds)
    (args.results / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (args.results / "summary.txt").write_text(render(summary))


if __name__ == "__main__":
    main()
