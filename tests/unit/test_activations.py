"""Extraction against manual forward passes on real random-init timm models."""

from __future__ import annotations

import h5py
import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.transforms.functional as TF
from test_images import make_odd_folder

from rsvc._features import spatial_mean
from rsvc.activations import extract_to_h5
from rsvc.formats import read_class_activations
from rsvc.formats import read_skipped_images as read_skipped
from rsvc.images import canonical_image, load_rgb
from rsvc.models import create_model, model_data_config
from rsvc.patches import patch_boxes
from rsvc.predictions import predict_images, readable_mask
from rsvc.settings import ExtractionSettings
from rsvc.specs import ModelSpec

S, P = 64, 32  # canonical image, patch: a 2 x 2 grid (stride 25)
RESNET = ModelSpec(
    "rn",
    "resnet18",
    num_classes=4,
    model_kwargs={"channels": (16, 32, 64, 128), "stem_width": 16},
    pretrained_cfg_overlay={"input_size": (3, 40, 40), "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.3, 0.25)},
)
VIT = ModelSpec(
    "vt", "test_vit", num_classes=3, model_kwargs={"img_size": 32}, pretrained_cfg_overlay={"input_size": (3, 32, 32)}
)
SETTINGS = ExtractionSettings(image_size=S, patch_size=P, batch_size=8, num_workers=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(80, 64), (64, 90), (70, 70), (100, 66), (64, 64)]):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        paths.append(folder / f"img{i}.png")
        PIL.Image.fromarray(arr).save(paths[-1])
    return paths


def oracle_inputs(model, paths) -> torch.Tensor:
    """Patches by slicing, resized by torchvision, normalised by hand: (n * 4, 3, H, W)."""
    cfg = model_data_config(model)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    patches = []
    for path in paths:
        img = canonical_image(load_rgb(path), S)
        patches += [img[:, y0:y1, x0:x1] for x0, y0, x1, y1 in patch_boxes(S, P)]
    x = TF.resize(torch.stack(patches), list(cfg["input_size"][-2:]), antialias=True)
    return (x - mean) / std


def items_of(paths, split_at=2):
    return {
        "a": [(f"id{i}", str(p)) for i, p in enumerate(paths[:split_at])],
        "b": [(f"id{i}", str(p)) for i, p in enumerate(paths[split_at:], start=split_at)],
    }


def read_all(path, classes=("a", "b")):
    acts = [read_class_activations(path, c)[0] for c in classes]
    return {k: np.concatenate([a[k] for a in acts]) for k in acts[0]}


def test_resnet_hooks_match_manual_forward(tmp_path, resnet, images):
    layers = ["act1", "layer1.0.act2", "layer2.1.act2", "layer4.1.act2", "pre_logits"]
    out = tmp_path / "rn.h5"
    extract_to_h5(resnet, layers, items_of(images), out, SETTINGS, {"model": "rn", "note": "test"})
    got = read_all(out)
    x = oracle_inputs(resnet, images)
    with torch.no_grad():
        stem = resnet.act1(resnet.bn1(resnet.conv1(x)))
        block = resnet.layer1[0](resnet.maxpool(stem))
        _, stages = resnet.forward_intermediates(x, indices=[2, 4])  # outputs of layer2 and layer4
        pre = resnet.forward_head(resnet.forward_features(x), pre_logits=True)
    want = {"act1": stem, "layer1.0.act2": block, "layer2.1.act2": stages[0], "layer4.1.act2": stages[1]}
    for name, fmap in want.items():
        np.testing.assert_allclose(got[name], fmap.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["pre_logits"], pre.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["pre_logits"], stages[1].mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)

    with h5py.File(out) as f:
        assert f.attrs["model"] == "rn" and f.attrs["note"] == "test" and f.attrs["patch_size"] == P
        np.testing.assert_array_equal(f.attrs["patch_boxes"], patch_boxes(S, P))
        assert f["a/acts/act1"].dtype == np.float32
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in resnet.modules())
        assert f.attrs["fold_batchnorm"] and f.attrs["folded_batchnorms"] == n_bn == 21  # all, downsamples too
    assert isinstance(resnet.bn1, torch.nn.BatchNorm2d)  # folded on a copy: the caller's model is unchanged
    acts, ids, patch_image, patch_index = read_class_activations(out, "b", ["act1"])
    assert list(acts) == ["act1"] and list(ids) == ["id2", "id3", "id4"]
    np.testing.assert_array_equal(patch_image, np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(patch_index, np.tile(np.arange(4), 3))


@pytest.mark.parametrize("token", ["cls", "mean"])
def test_vit_tokens_match_forward_intermediates(tmp_path, vit, images, token):
    layers = ["blocks.0", "blocks.2", "pre_logits"]
    settings = ExtractionSettings(image_size=S, patch_size=P, batch_size=12, num_workers=0, token=token)
    extract_to_h5(vit, layers, items_of(images), tmp_path / "vit.h5", settings, {})
    got = read_all(tmp_path / "vit.h5")
    x = oracle_inputs(vit, images)
    with torch.no_grad():
        inter = vit.forward_intermediates(
            x, indices=[0, 2], norm=False, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True
        )
        pre = vit.forward_head(vit.forward_features(x), pre_logits=True)
    for name, (spatial, prefix) in zip(layers, inter):
        want = prefix[:, 0] if token == "cls" else spatial.mean(1)
        np.testing.assert_allclose(got[name], want.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["pre_logits"], pre.numpy(), rtol=1e-4, atol=1e-5)


def test_deterministic_and_batching_invariant(tmp_path, resnet, images):
    layers = ["layer3.1.act1", "pre_logits"]
    runs = []
    for i, (bs, workers) in enumerate([(8, 0), (8, 0), (4, 2), (1000, 1)]):
        settings = ExtractionSettings(image_size=S, patch_size=P, batch_size=bs, num_workers=workers)
        extract_to_h5(resnet, layers, items_of(images, split_at=3), tmp_path / f"{i}.h5", settings, {})
        runs.append(read_all(tmp_path / f"{i}.h5"))
    for name in layers:
        np.testing.assert_array_equal(runs[0][name], runs[1][name])  # same settings: bit-identical
        for other in runs[2:]:  # other batch sizes and worker counts: same numbers
            np.testing.assert_allclose(other[name], runs[0][name], rtol=1e-4, atol=1e-5)


def test_low_precision_close_to_float32(tmp_path, resnet, images):
    layers = ["layer2.1.act2", "pre_logits"]
    extract_to_h5(resnet, layers, items_of(images), tmp_path / "f32.h5", SETTINGS, {})
    lowp = ExtractionSettings(
        image_size=S, patch_size=P, batch_size=8, num_workers=0, autocast="bf16", storage_dtype="float16"
    )
    extract_to_h5(resnet, layers, items_of(images), tmp_path / "bf16.h5", lowp, {})
    with h5py.File(tmp_path / "bf16.h5") as f:
        assert f["a/acts/pre_logits"].dtype == np.float16
    ref, low = read_all(tmp_path / "f32.h5"), read_all(tmp_path / "bf16.h5")
    for name in layers:
        scale = np.abs(ref[name]).max()
        assert np.abs(low[name] - ref[name]).max() < 0.05 * scale, name


def test_unreadable_images_are_skipped(tmp_path, resnet):
    expected, unreadable = make_odd_folder(tmp_path / "odd")
    names = sorted(list(expected) + unreadable)
    items = {
        "odd": [(n, str(tmp_path / "odd" / n)) for n in names[:7]],
        "rest": [(n, str(tmp_path / "odd" / n)) for n in names[7:]],
    }
    out = tmp_path / "odd.h5"
    extract_to_h5(resnet, ["pre_logits"], items, out, SETTINGS, {})
    skipped = read_skipped(out)
    assert sorted(skipped["image_id"]) == sorted(unreadable)
    assert all(r.startswith(p) for p, r in zip(skipped["path"], skipped["reason"]))
    used = []
    for cid, lst in items.items():
        acts, ids, patch_image, _ = read_class_activations(out, cid)
        assert list(ids) == [n for n, _ in lst if n not in unreadable]
        assert acts["pre_logits"].shape[0] == 4 * len(ids) and np.all(np.isfinite(acts["pre_logits"]))
        np.testing.assert_array_equal(patch_image, np.repeat(np.arange(len(ids)), 4))
        used += list(ids)
    assert sorted(used) == sorted(expected)


def test_non_finite_activation_names_model_layer_class_image(tmp_path, images):
    torch.manual_seed(0)
    model = create_model(RESNET)
    with torch.no_grad():
        model.layer3[0].bn2.weight[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"model broken, layer layer3\.0\.act2, class a, image id0"):
        extract_to_h5(
            model,
            ["layer2.1.act2", "layer3.0.act2", "pre_logits"],
            items_of(images),
            tmp_path / "nan.h5",
            SETTINGS,
            {"model": "broken"},
        )
    assert not (tmp_path / "nan.h5").exists()


def test_predict_images_matches_manual(tmp_path, resnet, images):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    paths = [str(images[0]), str(bad), *map(str, images[1:])]
    settings = ExtractionSettings(image_size=S, patch_size=P, batch_size=2, num_workers=0)
    pred, prob, skipped = predict_images(resnet, paths, settings)
    assert [p for p, _ in skipped] == [str(bad)]
    mask = readable_mask(paths, skipped)
    np.testing.assert_array_equal(mask, [True, False, True, True, True, True])
    cfg = model_data_config(resnet)
    x = torch.stack([canonical_image(load_rgb(p), S) for p in np.array(paths)[mask]])
    x = TF.normalize(TF.resize(x, list(cfg["input_size"][-2:]), antialias=True), cfg["mean"], cfg["std"])
    with torch.no_grad():
        want = torch.softmax(resnet(x), 1).double().numpy()
    np.testing.assert_array_equal(pred, want.argmax(1))
    np.testing.assert_allclose(prob, want.max(1), rtol=1e-5)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_spatial_mean_accumulates_in_float32(channels_last, dtype):
    x = torch.rand(3, 5, 23, 29, generator=torch.Generator().manual_seed(0)).to(dtype)  # 667 pixels: 3 chunks
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = spatial_mean(x, rows=256)
    assert got.dtype == torch.float32 and got.shape == (3, 5)
    np.testing.assert_allclose(got.numpy(), x.double().mean((2, 3)).numpy(), rtol=1e-6)


def test_timm_eval_predictions_feed_timm_own_transform(tmp_path, images):
    """dataset.preprocess: timm_eval: the whole-image input the model receives equals timm's own
    create_transform(**resolve_data_config(model)) output for the same file (a crop_pct and a
    bicubic interpolation that differ from the canonical path), and the predictions are its."""
    import timm.data

    spec = ModelSpec(
        "rn",
        "resnet18",
        num_classes=4,
        model_kwargs={"channels": (16, 32, 64, 128), "stem_width": 16},
        pretrained_cfg_overlay={"input_size": (3, 48, 48), "crop_pct": 0.8, "interpolation": "bicubic"},
    )
    torch.manual_seed(0)
    model = create_model(spec).eval()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    settings = ExtractionSettings(image_size=S, batch_size=2, num_workers=0, preprocess="timm_eval")
    paths = [str(p) for p in images]
    pred, prob, skipped = predict_images(model, paths, settings)
    assert not skipped
    got = torch.cat(seen).float().contiguous()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    want = torch.stack([transform(PIL.Image.open(p).convert("RGB")) for p in paths])
    assert got.shape == want.shape == (len(paths), 3, 48, 48)
    assert float((got - want).abs().max()) <= 1e-6
    with torch.no_grad():
        logits = model(want)
    np.testing.assert_array_equal(pred, logits.argmax(1).numpy())
    # the canonical path gives another input (shorter side to S, crop, bilinear resize)
    seen.clear()
    predict_images(model, paths, ExtractionSettings(image_size=S, batch_size=2, num_workers=0))
    assert float((torch.cat(seen).float() - want).abs().max()) > 1e-2
    with pytest.raises(ValueError, match="preprocess"):
        ExtractionSettings(image_size=S, preprocess="resize")


# ------------------------------------------------------------------ one transfer per batch, torch.compile
def _per_layer_reference(model, layers, x):
    """An independent reference: own hooks keep each layer's full map, pooled and copied one layer at a time."""
    modules = dict(model.named_modules())
    maps = {}
    hooks = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: maps.__setitem__(n, o))
        for n in layers
        if n != "pre_logits"
    ]
    try:
        with torch.no_grad():
            pre = model.forward_head(model.forward_features(x), pre_logits=True)
    finally:
        for h in hooks:
            h.remove()
    return {n: (pre if n == "pre_logits" else maps[n].mean((2, 3))).cpu().numpy() for n in layers}, maps


@pytest.mark.parametrize("pin", [False, True])  # pin=True without CUDA: the guard keeps it an ordinary copy
def test_single_transfer_equals_per_layer_copies(resnet, pin):
    from rsvc._features import HookedForward
    from rsvc._transfer import HostTransfer

    layers = ["act1", "layer1.0.act2", "layer3.1.act1", "layer4.1.act2", "pre_logits"]
    x = torch.randn(6, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    want, _ = _per_layer_reference(resnet, layers, x)
    forward = HookedForward(resnet, layers, "cls")
    try:
        with torch.inference_mode():
            out = forward(x)
            single = HostTransfer(pin=pin, slots=1)
            got = single.collect(single.submit(out), np.float32)
            old = {n: v.cpu().numpy().astype(np.float32, copy=False) for n, v in out.items()}  # the old path
            transfer = HostTransfer(pin=pin)  # two slots: batch i collected after batch i+1 was submitted
            first = transfer.submit(out)
            second = transfer.submit({n: 2 * v for n, v in out.items()})
            with pytest.raises(RuntimeError, match="collect a batch"):
                transfer.submit(out)
            a, b = transfer.collect(first), transfer.collect(second)
            again = transfer.collect(transfer.submit(out), np.float16)  # the reused buffer, another dtype
    finally:
        forward.remove()
    assert list(got) == layers
    for n in layers:
        assert got[n].flags.c_contiguous and got[n].dtype == np.float32
        np.testing.assert_array_equal(got[n], old[n])  # bit-identical to one .cpu() per layer
        np.testing.assert_allclose(got[n], want[n], rtol=1e-6, atol=0, err_msg=n)
        np.testing.assert_array_equal(a[n], old[n])  # not overwritten by the second batch
        np.testing.assert_array_equal(b[n], 2 * old[n])
        np.testing.assert_array_equal(again[n], old[n].astype(np.float16))


def test_extraction_loop_equals_per_layer_reference(tmp_path, resnet, images):
    """The whole loop (two buffers, each batch collected one batch late) against the independent reference:
    float32, batches of 2 images (8 patches), the last batch smaller."""
    layers = ["act1", "layer2.1.act2", "pre_logits"]
    stats = extract_to_h5(resnet, layers, items_of(images), tmp_path / "rn.h5", SETTINGS, {})
    assert stats["patches"] == 4 * len(images) and stats["seconds"] > 0 and stats["loop_end"] >= stats["loop_start"]
    got = read_all(tmp_path / "rn.h5")
    settings = ExtractionSettings(image_size=S, patch_size=P, num_workers=0, fold_batchnorm=True)
    from rsvc._manipulate import prepare_model

    folded, _ = prepare_model(resnet, torch.device("cpu"), settings, keep=layers)
    want, _ = _per_layer_reference(folded, layers, oracle_inputs(resnet, images))
    for n in layers:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-6, atol=1e-7, err_msg=n)


def _reduction_bound(fmap: torch.Tensor) -> float:
    """Relative bound on the difference of two float32 means of a map of n >= 0 pixels summed in any two
    orders: 2 (n - 1) u (u = 2^-24; each order's error is at most (n - 1) u relative for non-negative terms)."""
    n = fmap.shape[2] * fmap.shape[3] if fmap.ndim == 4 else 1
    return 2 * (n - 1) * 2.0**-24


@pytest.mark.slow  # inductor compiles C++ for the tiny resnet: about 45 s on 2 cores
def test_compiled_activations_equal_eager(tmp_path, resnet, images):
    """extraction.compile: the same activations as eager, float32. Both run the same oneDNN convolutions
    and exact element-wise ops; what can differ is the order in which the pooling mean (and any reduction
    inductor generates) sums a map's n pixels. For the non-negative maps pooled here (post-ReLU) that
    bounds the relative difference by 2 (n - 1) u; the test asserts max(1e-6, that bound) per layer
    (1e-6 for maps of at most 9 pixels, pre_logits included), never a machine-tuned number."""
    layers = ["act1", "layer1.0.act2", "layer3.1.act2", "layer4.1.act2", "pre_logits"]
    eager_file, compiled_file = tmp_path / "eager.h5", tmp_path / "compiled.h5"
    extract_to_h5(resnet, layers, items_of(images), eager_file, SETTINGS, {})
    compiled = ExtractionSettings(image_size=S, patch_size=P, batch_size=8, num_workers=0, compile=True)
    extract_to_h5(resnet, layers, items_of(images), compiled_file, compiled, {})  # 5 images: last batch padded
    eager, got = read_all(eager_file), read_all(compiled_file)
    _, maps = _per_layer_reference(resnet, layers, oracle_inputs(resnet, images)[:1])
    for n in layers:
        assert np.all(eager[n] >= 0), n  # the bound below is for non-negative maps
        bound = max(1e-6, _reduction_bound(maps[n]) if n in maps else 0.0)
        np.testing.assert_allclose(got[n], eager[n], rtol=bound, atol=0, err_msg=f"{n} (bound {bound:.1e})")

    pred, prob, _ = predict_images(
        resnet, [str(p) for p in images], ExtractionSettings(image_size=S, batch_size=2, num_workers=0)
    )
    pred_c, prob_c, _ = predict_images(
        resnet, [str(p) for p in images], ExtractionSettings(image_size=S, batch_size=2, num_workers=0, compile=True)
    )
    np.testing.assert_array_equal(pred_c, pred)
    np.testing.assert_allclose(prob_c, prob, rtol=1e-6)


def test_small_classes_take_little_disk(tmp_path):
    """HDF5 allocates whole chunks: a class's chunks are capped at its rows, so a file of many small
    classes stays near the size of its data (it was 70 times larger in the 1000-class rehearsal)."""
    from rsvc.formats import ActivationFile

    dims = {"a": 64, "b": 128}
    rows = {f"c{i}": 40 for i in range(50)}
    path = tmp_path / "acts.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        store = ActivationFile(f, rows, dims, np.float32, {"a": 4096, "b": 2048}, class_rows=rows)
        for cid, n in rows.items():
            for layer, d in dims.items():
                ds = store.dataset(cid, layer)
                ds.resize((n, d))
                ds[:] = rng.random((n, d), dtype=np.float32)
                assert ds.chunks[0] == n
    data = sum(n * d * 4 for n in rows.values() for d in dims.values())
    assert path.stat().st_size < 2 * data
    with h5py.File(path) as f:  # every dataset stores its data and no more
        stored = sum(f[f"{c}/acts/{l}"].id.get_storage_size() for c in rows for l in dims)
        assert stored == pytest.approx(data, rel=0.01)
    with h5py.File(tmp_path / "uncapped.h5", "w") as f:  # what the cap prevents: one whole chunk per dataset
        ds = ActivationFile(f, ["c0"], {"a": 64}, np.float32, {"a": 4096}).dataset("c0", "a")
        ds.resize((40, 64))
        ds[:] = 1.0
        assert ds.id.get_storage_size() == 4096 * 64 * 4
