"""The workflow deployed as its users deploy a catalog workflow: from a git tag, as a module.

    snakedeploy deploy-workflow https://github.com/<owner>/rsvc <dir> --tag v0.1.0

writes ``<dir>/workflow/Snakefile`` (``module rsvc: snakefile: github("<owner>/rsvc",
path="workflow/Snakefile", tag="v0.1.0")``) and copies the repository's ``config/``. Here
the "GitHub repository" is a local git repository of this checkout's files, tagged, reached
through git's ``url.<base>.insteadOf`` (a throw-away ``GIT_CONFIG_GLOBAL``): snakedeploy's
``git clone`` and Snakemake's own clone of the module's repository are the real ones, only the
transport is a file. After the tag the repository gets a commit that breaks its HEAD (no
rsvc/, a Snakefile that exits), so a run that passes read the tag. Jobs and parsing must use
the tag's rsvc: an ``rsvc`` on PYTHONPATH that raises on import stands in for any other
installed version (this venv has the checkout's rsvc installed in editable mode).

Without snakedeploy installed (``pip install -r requirements.txt``) the module Snakefile is
written by hand with the same content, and the snakedeploy test is skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, SNAKEMAKE, write_config
from test_slurm_rsvc import reduced_config

OWNER_REPO = "rsvc-project/rsvc"
TAG = "v0.1.0"
MODULE_SNAKEFILE = f"""\
from snakemake.utils import min_version


min_version("6.10.0")


configfile: "config/config.yaml"


# declare https://github.com/{OWNER_REPO} as a module
module rsvc:
    snakefile:
        github("{OWNER_REPO}", path="workflow/Snakefile", tag="{TAG}")
    config:
        config


# use all rules from https://github.com/{OWNER_REPO}
use rule * from rsvc
"""
HAS_SNAKEDEPLOY = importlib.util.find_spec("snakedeploy") is not None


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def checkout_files() -> list[str]:
    """This checkout's files as a commit would hold them (tracked and new, not ignored)."""
    out = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return [f for f in out.split("\0") if f and (os.path.lexists(REPO / f))]


def tagged_origin(root: Path) -> Path:
    """``root/<owner>/rsvc``: a git repository of the checkout's files, tagged TAG, whose HEAD is broken."""
    origin = root / OWNER_REPO
    for rel in checkout_files():
        dest = origin / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_symlink():
            dest.symlink_to(os.readlink(REPO / rel))
        else:
            shutil.copy2(REPO / rel, dest)
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "release")
    git(origin, "tag", TAG)
    shutil.rmtree(origin / "rsvc")
    (origin / "workflow" / "Snakefile").write_text('raise SystemExit("read HEAD, not the tag")\n')
    git(origin, "commit", "-qam", "after the release: HEAD is broken")
    return origin


@dataclass(frozen=True)
class Deployment:
    dest: Path
    env: dict[str, str]  # git through insteadOf, its own Snakemake cache, the poisoned PYTHONPATH
    origin: Path
    deployed_by: str  # "snakedeploy" or "hand"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    tmp = tmp_path_factory.mktemp("deploy")
    origin = tagged_origin(tmp / "origin")
    gitconfig = tmp / "gitconfig"
    gitconfig.write_text(f'[url "file://{tmp / "origin"}/"]\n\tinsteadOf = https://github.com/\n')
    poison = tmp / "poison" / "rsvc"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text('raise ImportError("an rsvc from outside the deployed tag was imported")\n')
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "XDG_CACHE_HOME": str(tmp / "cache"),  # Snakemake's clone of the module's repository
        "PYTHONPATH": str(poison.parent),
    }
    dest = tmp / "analysis"
    url = f"https://github.com/{OWNER_REPO}"
    if HAS_SNAKEDEPLOY:
        # snakedeploy itself must import: the poison is for snakemake only
        sd_env = {**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, "-m", "snakedeploy.client", "deploy-workflow", url, str(dest), "--tag", TAG]
        subprocess.run(cmd, env=sd_env, check=True, capture_output=True, text=True, timeout=120)
        deployed_by = "snakedeploy"
    else:
        (dest / "workflow").mkdir(parents=True)
        (dest / "workflow" / "Snakefile").write_text(MODULE_SNAKEFILE)
        shutil.copytree(REPO / "config", dest / "config")
        deployed_by = "hand"
    # the user's edit of the template config: the reduced demo (2 classes)
    write_config(dest / "config" / "config.yaml", reduced_config())
    return Deployment(dest, env, origin, deployed_by)


def snakemake(dep: Deployment, *args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, *args], cwd=dep.dest, env=dep.env, capture_output=True, text=True, timeout=timeout
    )


def test_manifest_lists_every_file_of_the_package() -> None:
    """rsvc/FILES is what a module from a tag copies (rules/common.smk: rsvc_root)."""
    listed = (REPO / "rsvc" / "FILES").read_text().split()
    present = sorted(
        str(p.relative_to(REPO / "rsvc"))
        for p in (REPO / "rsvc").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.name != "FILES"
    )
    assert sorted(listed) == present, (
        "rsvc/FILES must list every file of the package (a module deployed from a tag copies only those): "
        "regenerate it with  cd rsvc && git ls-files | grep -vx FILES > FILES"
    )


def test_poisoned_rsvc_fails_where_the_workflow_does_not_provide_its_own(deployment: Deployment) -> None:
    """The control: an interpreter with only the poisoned PYTHONPATH cannot import rsvc."""
    cmd = [sys.executable, "-c", "import rsvc"]
    res = subprocess.run(cmd, cwd=deployment.dest, env=deployment.env, capture_output=True, text=True)
    assert res.returncode != 0 and "outside the deployed tag" in res.stderr


@pytest.mark.skipif(not HAS_SNAKEDEPLOY, reason="snakedeploy is not installed (pip install -r requirements.txt)")
def test_snakedeploy_writes_the_module_of_the_tag(deployment: Deployment) -> None:
    text = (deployment.dest / "workflow" / "Snakefile").read_text()
    assert f'github("{OWNER_REPO}", path="workflow/Snakefile", tag="{TAG}")' in text
    assert "use rule * from rsvc" in text
    # config/ of the tag: the demo config (the test then replaced config.yaml) and its README
    assert (deployment.dest / "config" / "README.md").read_text() == (REPO / "config" / "README.md").read_text()


def test_deployed_workflow_dry_runs_from_the_tag(deployment: Deployment) -> None:
    res = snakemake(deployment, "-n", "--quiet", "rules", timeout=600)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    out = res.stdout + res.stderr
    for rule in ("make_dataset", "train_model", "activations", "concepts", "compare", "explorer", "summary"):
        assert f"\n{rule} " in out, out[-3000:]
    # parsing used the tag's rsvc, copied into the working directory (rules/common.smk: rsvc_root)
    (copy,) = (deployment.dest / ".snakemake" / "rsvc").glob("*/rsvc")
    for name in (REPO / "rsvc" / "FILES").read_text().split():
        assert (copy / name).read_text().rstrip("\n") == git(deployment.origin, "show", f"{TAG}:rsvc/{name}").rstrip(
            "\n"
        ), name


@pytest.mark.slow
@pytest.mark.workflow
def test_deployed_workflow_runs_the_reduced_demo(deployment: Deployment) -> None:
    """Every job (local executor, 2 cores) imports the tag's rsvc: the poison on PYTHONPATH would fail it.
    About 6 minutes on 2 shared cores."""
    res = snakemake(deployment, "--cores", "2", timeout=1500)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    results = deployment.dest / "results"
    assert (results / "summary" / "run_summary.tsv").is_file()
    assert (results / "summary" / "planted_concept.csv").is_file()
    assert list(results.glob("compare/*/shard*/*.h5"))
    res = snakemake(deployment, "-n", timeout=600)
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr, res.stdout[-2000:]
