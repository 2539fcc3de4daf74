"""The SLURM profiles speak the installed plugin's vocabulary (snakemake-executor-plugin-slurm,
pinned in requirements.txt): every key is an option of this snakemake, every `slurm-*` key a
setting of the plugin with a value of its type, every resource one that Snakemake or the plugin
reads, every rule one of the workflow; the example partition file is read by the plugin's own
parser and routes the workflow's GPU and CPU jobs as documented. No cluster needed (seconds).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import typing
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE

slurm_plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
from snakemake_executor_plugin_slurm import partitions  # noqa: E402

PROFILES = [REPO / "profiles" / "slurm" / "config.yaml", REPO / "tests" / "slurm" / "profile" / "config.yaml"]
PARTITION_FILE = REPO / "profiles" / "slurm" / "partitions.yaml"
# resources that Snakemake itself reads (the rest must be read by the plugin)
SNAKEMAKE_RESOURCES = {"mem_mb", "mem_mib", "disk_mb", "disk_mib", "runtime", "threads", "tmpdir"}
GPU_RULES = {"predict", "activations", "train_model"}


def profile(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def workflow_rules() -> set[str]:
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    return set(re.findall(r"^(?:rule|checkpoint) (\w+):", text, flags=re.M))


def plugin_resources() -> set[str]:
    """Every resource name the plugin's source reads (``job.resources.get("x")`` / ``job.resources.x``)."""
    text = "\n".join(p.read_text() for p in Path(slurm_plugin.__file__).parent.glob("*.py"))
    names = set(re.findall(r"resources\.get\(\s*[\"'](\w+)[\"']", text))
    names |= set(re.findall(r"resources\.(\w+)\b", text)) - {"get", "items", "keys"}
    return names


@pytest.fixture(scope="module")
def snakemake_options() -> set[str]:
    out = subprocess.run([SNAKEMAKE, "--help"], capture_output=True, text=True, timeout=120, check=True).stdout
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]+)", out))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_profile_key_is_an_option_of_this_snakemake(path: Path, snakemake_options: set[str]) -> None:
    unknown = sorted(set(profile(path)) - snakemake_options)
    assert not unknown, f"{path.relative_to(REPO)}: not options of `snakemake --help` here: {unknown}"


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_slurm_key_is_a_plugin_setting_of_its_type(path: Path) -> None:
    fields = {f.name: f for f in dataclasses.fields(slurm_plugin.ExecutorSettings)}
    hints = typing.get_type_hints(slurm_plugin.ExecutorSettings)
    problems = []
    for key, value in profile(path).items():
        if not key.startswith("slurm-"):
            continue
        name = key.removeprefix("slurm-").replace("-", "_")
        if name not in fields:
            problems.append(f"{key}: no such setting in snakemake-executor-plugin-slurm {slurm_plugin_version()}")
            continue
        kinds = [t for t in typing.get_args(hints[name]) or (hints[name],) if t is not type(None)]
        ok = any(
            isinstance(value, bool)
            if t is bool
            else isinstance(value, (str, Path))
            if t is Path
            else isinstance(value, t)
            for t in kinds
        )
        if not ok:
            problems.append(f"{key}: {value!r} is not a {kinds}")
    assert not problems, f"{path.relative_to(REPO)}:\n" + "\n".join(problems)


def slurm_plugin_version() -> str:
    from importlib.metadata import version

    return version("snakemake-executor-plugin-slurm")


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_resource_is_read_by_snakemake_or_the_plugin_and_every_rule_exists(path: Path) -> None:
    cfg = profile(path)
    known = SNAKEMAKE_RESOURCES | plugin_resources()
    rules = workflow_rules()
    problems = [f"default-resources.{k}" for k in cfg.get("default-resources", {}) if k not in known]
    for rule, res in cfg.get("set-resources", {}).items():
        problems += [f"set-resources.{rule}: no rule {rule} in rules/*.smk"] if rule not in rules else []
        problems += [f"set-resources.{rule}.{k}" for k in res if k not in known]
    problems += [f"set-threads.{r}: no such rule" for r in cfg.get("set-threads", {}) if r not in rules]
    for rule in filter(None, (r.strip() for r in str(cfg.get("slurm-array-jobs", "")).split(","))):
        problems += [f"slurm-array-jobs: {rule}: no such rule"] if rule not in rules | {"all"} else []
    for group in cfg.get("groups", []):
        rule, _, _ = group.partition("=")
        problems += [f"groups: {group}: no such rule"] if rule not in rules else []
    assert not problems, f"{path.relative_to(REPO)}: unknown to Snakemake and to the plugin: {problems}"
    if path == PROFILES[0]:  # the production profile asks for GPUs in the plugin's current words
        for rule in GPU_RULES:
            assert cfg["set-resources"][rule].get("gpu") == 1 and "gres" not in cfg["set-resources"][rule], rule


class _Resources(dict):
    """What the plugin reads of a job's resources: ``.get(name)`` and ``.name``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclasses.dataclass
class ProfileJob:
    """A workflow job as the plugin sees it: its rule's resources and threads under the profile (attempt 1)."""

    name: str
    threads: int
    resources: _Resources


def profile_job(cfg: dict, rule: str) -> ProfileJob:
    """The job of ``rule``; resource expressions evaluated as Snakemake does, in this environment."""
    threads = cfg["set-threads"][rule]
    values = {}
    for key, value in {**cfg["default-resources"], **cfg["set-resources"].get(rule, {})}.items():
        if isinstance(value, str):
            try:
                value = eval(value, {"attempt": 1, "threads": threads})
            except (NameError, SyntaxError):
                pass  # a plain string
        values[key] = value
    return ProfileJob(rule, threads, _Resources(values))


def test_example_partition_file_routes_gpu_and_cpu_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = partitions.read_partition_file(PARTITION_FILE)  # the plugin's parser: unknown limits raise
    assert {p.name for p in parts} == {"cpu", "gpu"}
    cfg = profile(PROFILES[0])
    for var in ("RSVC_SLURM_CPU_PARTITION", "RSVC_SLURM_GPU_PARTITION", "SNAKEMAKE_SLURM_PARTITIONS"):
        monkeypatch.delenv(var, raising=False)
    # without the file: the GPU jobs keep their "gpu" default, the CPU jobs the cluster's default
    assert profile_job(cfg, "predict").resources["slurm_partition"] == "gpu"
    assert profile_job(cfg, "concepts").resources["slurm_partition"] == ""
    monkeypatch.setenv("SNAKEMAKE_SLURM_PARTITIONS", str(PARTITION_FILE))
    log = logging.getLogger("slurm-partitions")
    for rule in cfg["set-threads"]:
        job = profile_job(cfg, rule)
        # no explicit partition with the file in use: the plugin picks it
        assert job.resources["slurm_partition"] == "", (rule, job.resources["slurm_partition"])
        expected = "gpu" if rule in GPU_RULES else "cpu"
        assert partitions.get_best_partition(parts, job, log) == expected, rule
    # a site variable wins over the file
    monkeypatch.setenv("RSVC_SLURM_GPU_PARTITION", "a100")
    assert profile_job(cfg, "predict").resources["slurm_partition"] == "a100"


def test_array_chunks_stay_below_the_job_limit() -> None:
    """The plugin holds back an array until a full chunk (slurm-array-limit) or every ready job of the
    rule is among the jobs it may submit: a chunk above `jobs` could wait forever."""
    merged: dict = {}
    for path in PROFILES:  # later profiles replace whole keys, as snakemake reads them
        cfg = profile(path)
        merged.update(cfg)
        if merged.get("slurm-array-jobs"):
            limit = merged.get("slurm-array-limit", 1000)  # the plugin's default
            assert limit < merged["jobs"], (path.name, limit, merged["jobs"])
