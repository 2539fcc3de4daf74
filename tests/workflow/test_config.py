"""Config validation: bad keys and types stop the run before any job, naming the key."""

from __future__ import annotations

import pytest
from conftest import run_snakemake, write_config


def _dry_run(tmp_path, config):
    cfg = write_config(tmp_path / "config.yaml", config)
    return run_snakemake("-n", "--configfile", str(cfg), cwd=tmp_path, check=False, timeout=120)


def test_default_config_builds_dag(tmp_path, demo_config):
    proc = _dry_run(tmp_path, demo_config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compare" in proc.stdout and "aggregate_pair" in proc.stdout


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["concepts"].__setitem__("kk", 3), "kk"),
        (lambda c: c.__setitem__("unknown_section", {}), "unknown_section"),
        (lambda c: c["concepts"].__setitem__("k", "ten"), "ten"),
        (lambda c: c["regression"].__setitem__("alpha", -1), "alpha"),
        (lambda c: c["models"]["ps"].__setitem__("layers", 5), "layers"),
    ],
)
def test_bad_config_names_the_key(tmp_path, demo_config, mutate, key):
    mutate(demo_config)
    proc = _dry_run(tmp_path, demo_config)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert key in out, out[-3000:]
    assert "Job stats" not in out
    assert "Traceback" not in out and 'File "' not in out and "Failed validating" not in out, out[-3000:]


def _set(path, value):
    def mutate(c):
        node = c
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _lite0_with_relu(c):
    """An EfficientNet's activations are ReLU6 modules: "relu" finds none."""
    c["models"]["ps"].update(timm_name="tf_efficientnet_lite0", layers="relu", model_kwargs={})


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_set(("models", "ps", "timm_name"), "resnet19"), "models.ps.timm_name"),
        (_set(("models", "nc", "layers"), ["layer1.0.act1", "layer9.act1"]), "models.nc.layers: 'layer9.act1'"),
        (_set(("pairs",), [["ps", "xx"]]), "pairs[0]: unknown model 'xx'"),
        (_set(("models", "ps", "num_classes"), 5), "models.ps: the model has 5 outputs"),
        (_set(("dataset", "patch_size"), 200), "dataset.patch_size=200"),
        # above the patches of the largest concept sample (120 images x 16): every class would be skipped
        (_set(("concepts", "k"), 2000), "concepts.k=2000"),
        (_set(("dataset", "analyze_classes"), ["nope"]), "dataset.analyze_classes"),
        (_lite0_with_relu, "models.ps.layers: 'relu' selects no module of model 'ps' (EfficientNet)"),
    ],
)
def test_semantic_config_errors_stop_before_any_job(tmp_path, demo_config, mutate, expected):
    mutate(demo_config)
    proc = _dry_run(tmp_path, demo_config)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expected in out, out[-3000:]
    assert "Job stats" not in out
    assert "Traceback" not in out and 'File "' not in out, out[-3000:]


def test_missing_dataset_folders_are_named(tmp_path, demo_config):
    del demo_config["synthetic"]
    for spec in demo_config["models"].values():
        spec.pop("train")
        spec["checkpoint"] = None
    demo_config["dataset"]["root"] = str(tmp_path / "no_such_dataset")
    proc = _dry_run(tmp_path, demo_config)
    assert proc.returncode != 0
    assert "dataset.root: folder" in proc.stderr + proc.stdout
    (tmp_path / "no_such_dataset" / "train" / "disc").mkdir(parents=True)
    proc = _dry_run(tmp_path, demo_config)
    out = proc.stdout + proc.stderr
    assert "val' does not exist" in out
    assert "class folders missing" in out


_NO_TORCH = """
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _Block())
"""


def test_lint_and_dry_run_work_without_torch(tmp_path, demo_config):
    """A login node with only Snakemake: parsing imports no torch or timm; the model checks say they were skipped."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NO_TORCH)
    env = {"PYTHONPATH": str(site)}
    probe = run_snakemake("--version", cwd=tmp_path, env=env)
    assert probe.returncode == 0
    cfg = write_config(tmp_path / "config.yaml", demo_config)
    dry = run_snakemake("-n", "--configfile", str(cfg), cwd=tmp_path, env=env, timeout=300)
    assert "model checks (timm names, layers, output sizes) were skipped" in dry.stderr
    assert "compare" in dry.stdout and "aggregate_pair" in dry.stdout
    lint = run_snakemake("--lint", "--configfile", str(cfg), cwd=tmp_path, env=env, timeout=300)
    assert "Congratulations, your workflow is in a good condition" in lint.stdout + lint.stderr


def test_the_torch_blocker_blocks(tmp_path):
    """The test above means something only if the blocker really hides torch from the workflow's Python."""
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NO_TORCH)
    proc = subprocess.run(
        [sys.executable, "-c", "import torch"], env={"PYTHONPATH": str(site)}, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


def test_missing_class_list_file_is_named_without_traceback(tmp_path, demo_config):
    demo_config.pop("synthetic")
    demo_config["dataset"]["classes"] = "missing_classes.txt"
    proc = _dry_run(tmp_path, demo_config)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "dataset.classes: class-list file 'missing_classes.txt' does not exist" in out, out[-2000:]
    assert "Traceback" not in out and 'File "' not in out


def test_cuda_without_a_gpu_stops_a_local_dry_run(tmp_path, demo_config):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    demo_config["extraction"]["device"] = "cuda"
    proc = _dry_run(tmp_path, demo_config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "extraction.device=cuda: no CUDA GPU is visible on this machine" in out, out[-2000:]
    assert "Traceback" not in out and "Job stats" not in out


def test_a_truncated_result_file_is_named_with_the_fix(tmp_path):
    import numpy as np

    from rsvc.formats import Concepts, DamagedFileError, read_concepts, write_concepts

    path = tmp_path / "concepts.h5"
    rng = np.random.default_rng(0)
    c = Concepts(
        W={"pre_logits": rng.random((3, 400))},
        U={"pre_logits": rng.random((500, 3))},
        fit={"pre_logits": {"method": "nmf", "rel_error": 0.1, "n_iter": 5, "converged": True}},
        image_ids=np.array(["a"], dtype=object),
        patch_image=np.zeros(500, int),
        patch_index=np.arange(500),
    )
    write_concepts(path, c, {"k": 3})
    np.testing.assert_array_equal(read_concepts(path).W["pre_logits"], c.W["pre_logits"])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DamagedFileError, match="damaged or cut short") as err:
        read_concepts(path)
    assert str(path) in str(err.value)
    assert f"snakemake --forcerun {path}" in str(err.value)  # a file output: the file itself
    (tmp_path / ".snakemake_timestamp").touch()  # a file inside a directory() output: the folder
    with pytest.raises(DamagedFileError, match=f"snakemake --forcerun {tmp_path}` plus the options"):
        read_concepts(path)


def test_a_yaml_error_in_the_default_config_names_file_and_line(tmp_path):
    """(A --configfile is read by Snakemake's command line before the workflow: its YAML errors are
    Snakemake's own message.)"""
    import shutil
    import subprocess

    from conftest import REPO, SNAKEMAKE

    copy = tmp_path / "workflow"
    copy.mkdir()
    for name in ("Snakefile", "workflow", "rules", "workflow_scripts", "schemas", "report", "envs", "config.yaml"):
        src = REPO / name
        (shutil.copytree(src, copy / name, symlinks=True) if src.is_dir() else shutil.copy(src, copy / name))
    (copy / "rsvc").symlink_to(REPO / "rsvc", target_is_directory=True)
    lines = (copy / "config.yaml").read_text().splitlines()
    lines.insert(12, "\tseed: 1")
    (copy / "config.yaml").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([SNAKEMAKE, "-n"], cwd=copy, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "config.yaml, line 13, column 1: not valid YAML" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr


def _rename_model(old, new):
    def mutate(c):
        c["models"] = {(new if m == old else m): spec for m, spec in c["models"].items()}

    return mutate


@pytest.mark.parametrize(
    "mutate, expected",
    [
        # model names are folder names of the outputs: path-like ones would write outside their folders
        (_rename_model("ps", ".."), "models: '..' does not match"),
        (_rename_model("ps", "."), "models: '.' does not match"),
        (_rename_model("ps", ".hidden"), "models: '.hidden' does not match"),
        (_set(("dataset", "pool_split"), ".."), "dataset.pool_split: '..' does not match"),
        # a pair listed twice, in either order, is refused with both places named
        (_set(("pairs",), [["ps", "nc"], ["nc", "ps"]]), "pairs[1]: [nc, ps] is pairs[0] [ps, nc] in the other order"),
        (_set(("pairs",), [["ps", "nc"], ["ps", "nc"]]), "pairs[1]: [ps, nc] is pairs[0] [ps, nc] again"),
        # class ids are folder names too
        (_set(("dataset", "classes"), ["disc", "..", "cross", "triangle", "star", "bars"]), "dataset.classes: '..'"),
        (
            _set(("synthetic", "classes"), ["disc", "a/b", "cross", "triangle", "star", "bars"]),
            "synthetic.classes: 'a/b'",
        ),
        (
            _set(("dataset", "classes"), ["disc", "x<b>y", "{c}", "triangle", "star", "bars"]),
            "dataset.classes: 'x<b>y', '{c}': a class id names output files",
        ),
    ],
)
def test_path_like_names_and_repeated_pairs_are_refused_at_dry_run(tmp_path, demo_config, mutate, expected):
    mutate(demo_config)
    proc = _dry_run(tmp_path, demo_config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert expected in out, out[-3000:]
    if "models:" in expected:  # the rule is stated with the refusal
        assert "must be a plain name" in out and "never '.', '..'" in out, out[-3000:]
    assert "Traceback" not in out and "Job stats" not in out, out[-3000:]
    assert not (tmp_path / "results").exists()  # nothing written, in or out of the output folder
