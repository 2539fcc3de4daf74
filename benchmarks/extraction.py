"""Throughput of activation extraction: rsvc.activations.extract_to_h5 vs a naive per-image loop.

Both run in the same process on the same images, models (random weights) and
layers (every ReLU, or every ViT block, plus pre_logits), at 224 px with
64 px patches (16 per image):

- naive: per image, load -> canonical -> patches -> model input -> forward with
  hooks that keep the full feature maps -> pool -> copy to numpy; stack at the end;
- rsvc: ``extract_to_h5`` (DataLoader workers, large batches, channels_last,
  BatchNorm folded into the convolutions, pooling inside the hooks (bf16 maps
  summed in float32 a few rows at a time), background HDF5 writes).

Also measures the peak RSS of an extraction job for resnet50 on 200 images in
a fresh subprocess. Prints patches/s and the ratio rsvc / naive.

    python benchmarks/extraction.py            # 48 images per model, 200 for the RSS job
    python benchmarks/extraction.py --quick    # 12 images, 40 for the RSS job

``--loop``: only the workflow's own loop (``extract_to_h5``, what the activations job
calls), for every model x mode x batch size, one JSON line each (``--json``), with the
loop's wall-clock start and end to match GPU samples (``benchmarks/gpu_check.sh``).
A mode is ``+``-joined: a dtype (fp32, bf16, fp16: ``extraction.autocast``), ``cl``
(channels-last) and ``compile`` (``extraction.compile``):

    python benchmarks/extraction.py --loop --device cuda --models resnet50 \
        --modes fp32 bf16+cl bf16+cl+compile --batch-sizes 256 1024 --workers 12
    python benchmarks/extraction.py --loop --device cuda --models resnet50 --modes bf16+cl --seconds 25
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from rsvc._transfer import resolve_device
from rsvc.activations import extract_to_h5
from rsvc.formats import read_class_activations
from rsvc.images import canonical_image, load_rgb, to_model_input
from rsvc.layers import resolve_layers
from rsvc.models import create_model, model_data_config
from rsvc.patches import extract_patches
from rsvc.settings import ExtractionSettings
from rsvc.specs import ModelSpec

MODELS = {"resnet18": "relu", "resnet50": "relu", "vit_small_patch16_224": "blocks"}
IMAGE_SIZE, PATCH_SIZE = 224, 64


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """JPEG photos-like files of varied sizes (smooth noise, decoding cost like real photos)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(300, 500)), int(rng.integers(250, 400))
        small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        img = PIL.Image.fromarray(small).resize((w, h), PIL.Image.Resampling.BICUBIC)
        paths.append(str(folder / f"img{i:04d}.jpg"))
        img.save(paths[-1], quality=90)
    return paths


def naive_extract(model: torch.nn.Module, layers: list[str], paths: list[str], device: torch.device) -> dict:
    """One image (16 patches) per forward; hooks keep full maps; pooled and copied after each image."""
    cfg = model_data_config(model)
    modules = dict(model.named_modules())
    maps: dict[str, torch.Tensor] = {}
    hooks = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: maps.__setitem__(n, o))
        for n in layers
        if n != "pre_logits"
    ]
    out: dict[str, list[np.ndarray]] = {n: [] for n in layers}
    try:
        with torch.inference_mode():
            for path in paths:
                patches = extract_patches(canonical_image(load_rgb(path), IMAGE_SIZE)[None], PATCH_SIZE)
                x = to_model_input(patches, cfg["input_size"], cfg["mean"], cfg["std"]).to(device)
                pre = model.forward_head(model.forward_features(x), pre_logits=True)
                for n in layers:
                    t = pre if n == "pre_logits" else maps[n]
                    t = t.mean((2, 3)) if t.ndim == 4 else (t[:, 0] if t.ndim == 3 else t)
                    out[n].append(t.float().cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    return {n: np.concatenate(v) for n, v in out.items()}


def bench_model(
    name: str, paths: list[str], device: torch.device, workdir: Path, workers: int, batch_size: int
) -> dict:
    torch.manual_seed(0)
    model = create_model(ModelSpec(name, name), device=device)
    layers = resolve_layers(model, MODELS[name]) + ["pre_logits"]
    n_patches = len(paths) * 16
    naive_extract(model, layers, paths[:2], device)  # warm-up (allocator, kernels)

    t0 = time.perf_counter()
    naive = naive_extract(model, layers, paths, device)
    t_naive = time.perf_counter() - t0

    items = {"c": [(Path(p).stem, p) for p in paths]}
    result = {
        "model": name,
        "device": str(device),
        "layers": len(layers),
        "patches": n_patches,
        "naive_patches_per_s": n_patches / t_naive,
    }
    for label, autocast in (("fp32", None), ("bf16", "bf16")):
        settings = ExtractionSettings(
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
            batch_size=batch_size,
            num_workers=workers,
            device=str(device),
            autocast=autocast,
        )
        t0 = time.perf_counter()
        extract_to_h5(model, layers, items, workdir / f"{name}_{label}.h5", settings, {"model": name})
        t_rsvc = time.perf_counter() - t0
        ours = read_class_activations(workdir / f"{name}_{label}.h5", "c")[0]
        result[f"rsvc_{label}_patches_per_s"] = n_patches / t_rsvc
        result[f"speedup_{label}"] = t_naive / t_rsvc
        # largest deviation from the naive float32 numbers, relative to each layer's largest value
        result[f"max_rel_diff_{label}"] = max(
            float(np.abs(ours[n] - naive[n]).max() / (np.abs(naive[n]).max() + 1e-12)) for n in layers
        )
    return result


def parse_mode(mode: str) -> dict:
    """``"bf16+cl+compile"`` -> ``{"autocast": "bf16", "channels_last": True, "compile": True}``."""
    parts = mode.split("+")
    dtype, flags = parts[0], set(parts[1:])
    if dtype not in ("fp32", "bf16", "fp16") or not flags <= {"cl", "compile"}:
        raise ValueError(f"mode {mode!r}: a dtype (fp32, bf16, fp16), then optional +cl and +compile")
    return {
        "autocast": None if dtype == "fp32" else dtype,
        "channels_last": "cl" in flags,
        "compile": "compile" in flags,
    }


def loop_run(
    model: torch.nn.Module,
    name: str,
    layers: list[str],
    paths: list[str],
    repeat: int,
    mode: str,
    batch_size: int,
    args: argparse.Namespace,
    out: Path,
) -> dict:
    """One ``extract_to_h5`` call (the activations job's loop) on ``paths`` repeated ``repeat`` times."""
    items = {"c": [(f"{Path(p).stem}_{r}", p) for r in range(repeat) for p in paths]}
    settings = ExtractionSettings(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        batch_size=batch_size,
        num_workers=args.workers,
        device=args.device,
        **parse_mode(mode),
    )
    t0 = time.perf_counter()
    stats = extract_to_h5(model, layers, items, out, settings, {"model": name})
    wall = time.perf_counter() - t0
    out.unlink()
    return {
        "model": name,
        "device": str(resolve_device(args.device)),
        "mode": mode,
        "batch_size": batch_size,
        "layers": len(layers),
        "workers": args.workers,
        **stats,
        "patches_per_s": stats["patches"] / max(stats["seconds"], 1e-9),
        "call_seconds": wall,
    }


def loop_main(args: argparse.Namespace, work: Path) -> None:
    """``--loop``: the workflow loop only, every model x mode x batch size; one JSON line per run."""
    paths = make_images(work, args.images or 64)
    sink = open(args.json, "a") if args.json else None  # noqa: SIM115 - closed below
    try:
        for name in args.models:
            torch.manual_seed(0)
            model = create_model(ModelSpec(name, name))
            layers = resolve_layers(model, MODELS[name]) + ["pre_logits"]
            for mode in args.modes:
                for batch_size in args.batch_sizes:
                    repeat = args.repeat
                    if args.seconds:  # size the run from a short calibration run (same settings)
                        probe = loop_run(model, name, layers, paths, repeat, mode, batch_size, args, work / "x.h5")
                        rate = probe["steady_patches_per_s"]
                        rate = rate if rate == rate else probe["patches_per_s"]  # NaN: a single batch
                        repeat = max(1, round(args.seconds * rate / (len(paths) * 16)))
                    row = loop_run(model, name, layers, paths, repeat, mode, batch_size, args, work / "x.h5")
                    print(
                        f"{name:>22s} {row['device']:>5s} {mode:>16s} batch {batch_size:5d}: "
                        f"{row['patches']:7d} patches, loop {row['seconds']:6.1f} s, "
                        f"{row['patches_per_s']:8.1f} patches/s (after the first batch "
                        f"{row['steady_patches_per_s']:8.1f})",
                        flush=True,
                    )
                    if sink:
                        sink.write(json.dumps(row) + "\n")
                        sink.flush()
    finally:
        if sink:
            sink.close()


def peak_rss_mib() -> float:
    """This process's peak RSS. Linux: VmHWM, which starts afresh at exec; ``ru_maxrss``
    (the fallback) keeps the parent's peak across fork + exec and so over-reports here."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_job(args: argparse.Namespace) -> None:
    """Child process: one resnet50 extraction job, set up as the workflow's; prints its peak RSS (MiB) as JSON."""
    paths = sorted(str(p) for p in Path(args.rss_job).glob("*.jpg"))[: args.rss_images]
    model = create_model(ModelSpec("resnet50", "resnet50"))
    layers = resolve_layers(model, "relu") + ["pre_logits"]
    settings = ExtractionSettings(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
    )
    t0 = time.perf_counter()
    extract_to_h5(model, layers, {"c": [(Path(p).stem, p) for p in paths]}, Path(args.rss_job) / "rss.h5", settings, {})
    seconds = time.perf_counter() - t0
    peak = peak_rss_mib()
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "images": len(paths),
                "layers": len(layers),
                "batch_size": args.batch_size,
                "seconds": seconds,
                "peak_rss_mib": peak,
                "peak_rss_worker_mib": workers_peak,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small image counts (smoke run)")
    parser.add_argument("--images", type=int, default=None, help="images per model (default 48, quick 12)")
    parser.add_argument("--rss-images", type=int, default=None, help="images of the RSS job (default 200, quick 40)")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="patches per forward pass (extraction.batch_size; CPU memory grows with it)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto: cpu, plus cuda when present")
    parser.add_argument("--rss-job", default=None, help=argparse.SUPPRESS)
    loop = parser.add_argument_group("--loop: the workflow loop only")
    loop.add_argument("--loop", action="store_true", help="only extract_to_h5, for every model x mode x batch size")
    loop.add_argument("--modes", nargs="+", default=["fp32+cl", "bf16+cl"], help="e.g. fp32 bf16+cl bf16+cl+compile")
    loop.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="patches per forward pass")
    loop.add_argument("--repeat", type=int, default=1, help="each image appears this many times (longer runs)")
    loop.add_argument("--seconds", type=float, default=None, help="size each run to last about this long")
    loop.add_argument("--json", default=None, help="append one JSON line per run to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_job:
        return rss_job(args)
    if args.loop:
        args.batch_sizes = args.batch_sizes or [args.batch_size]
        with tempfile.TemporaryDirectory() as tmp:
            return loop_main(args, Path(tmp))

    n_images = args.images or (12 if args.quick else 48)
    n_rss = args.rss_images or (40 if args.quick else 200)
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else [resolve_device(args.device)]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, devices {[str(d) for d in devices]}, "
        f"{n_images} images x 16 patches per model, batch {args.batch_size}, {args.workers} workers",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = make_images(work, max(n_images, n_rss))
        rows = []
        for device in devices:
            for name in args.models:
                r = bench_model(name, paths[:n_images], device, work, args.workers, args.batch_size)
                rows.append(r)
                print(
                    f"{r['model']:>22s} {r['device']:>4s} ({r['layers']} layers): naive "
                    f"{r['naive_patches_per_s']:6.1f} patches/s | rsvc fp32 {r['rsvc_fp32_patches_per_s']:6.1f} "
                    f"({r['speedup_fp32']:.2f}x, max rel diff {r['max_rel_diff_fp32']:.0e}) | rsvc bf16 "
                    f"{r['rsvc_bf16_patches_per_s']:6.1f} ({r['speedup_bf16']:.2f}x, max rel diff "
                    f"{r['max_rel_diff_bf16']:.0e})",
                    flush=True,
                )
        cmd = [
            sys.executable,
            __file__,
            "--rss-job",
            str(work),
            "--rss-images",
            str(n_rss),
            "--workers",
            str(args.workers),
            "--device",
            str(devices[-1]),
            "--batch-size",
            str(args.batch_size),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        job = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )
        print(
            f"resnet50 extraction job, {job['images']} images, {job['layers']} layers, batch {job['batch_size']} on {devices[-1]}: "
            f"{job['seconds']:.1f} s, peak RSS {job['peak_rss_mib']:.0f} MiB "
            f"(largest worker {job['peak_rss_worker_mib']:.0f} MiB)"
        )
        for r in rows:
            print(
                f"ratio rsvc/naive {r['model']} {r['device']}: fp32 {r['speedup_fp32']:.2f}x, "
                f"bf16 autocast {r['speedup_bf16']:.2f}x"
            )


if __name__ == "__main__":
    main()
