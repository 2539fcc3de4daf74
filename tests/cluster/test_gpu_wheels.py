"""benchmarks/gpu_wheels.py: the wheels the GPU machine lacks (docs/gpu.md), without network.

The plan is computed from this environment's metadata (the project's venv, at the pins of
constraints.txt) for the device's CPython 3.12; the folder checks run on real files (.whl/ itself
where `make gpu-wheels` made it)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_wheels as gw  # noqa: E402


@pytest.fixture(scope="module")
def plan():
    pins, device = gw.read_pins(), gw.read_device()
    carried, on_device, warnings = gw.closure(gw.roots(), gw.installed_requires(pins), device)
    return pins, device, carried, on_device, warnings


def test_every_package_the_workflow_imports_is_on_the_device_or_carried(plan):
    pins, device, carried, on_device, _ = plan
    imported = gw.workflow_distributions()
    # the modules that matter on the device are found in the code that imports them
    assert {"snakemake", "celer", "torch", "timm", "h5py", "pyyaml", "jsonschema"} <= set(imported)
    for dist in set(imported) | set(gw.requirement_roots()):
        assert (dist in device) != (dist in carried), dist  # one of the two, never both
    assert {"snakemake", "celer", "snakemake-interface-common", "pulp"} <= set(carried)
    assert {"torch", "timm", "h5py", "scikit-learn", "pandas", "seaborn", "numpy"} <= on_device
    assert not set(carried) & set(device)  # no second copy of what the device has
    assert all(carried[name] == pins[name] for name in carried)  # one version each: the pin
    assert not set(carried) & gw.DEV_ONLY


def test_the_walk_follows_markers_and_extras_and_stops_at_the_device():
    metadata = {
        "app": ("1.0", ["lib[fast]", "old; python_version < '3.12'", "doc; extra == 'docs'", "torch>=99"]),
        "lib": ("2.0", ["speed; extra == 'fast'", "slow; extra == 'slow'", "numpy"]),
        "speed": ("3.0", []),
    }
    device = {"torch": "2.11.0", "numpy": None}
    carried, on_device, warnings = gw.closure(["app"], lambda n: metadata[n], device)
    assert carried == {"app": "1.0", "lib": "2.0", "speed": "3.0"}
    assert on_device == {"torch", "numpy"}
    assert warnings == ["app 1.0 asks for torch>=99; the device has torch 2.11.0"]
    metadata["app"] = ("1.0", ["lib>=3"])
    with pytest.raises(gw.WheelError, match="asks for lib>=3, but constraints.txt pins lib==2.0"):
        gw.closure(["app"], lambda n: metadata[n], device)


def test_the_size_check_counts_the_working_tree_and_fails_with_the_fix(tmp_path):
    whl = tmp_path / "big-1.0-py3-none-any.whl"
    with open(whl, "wb") as f:
        f.truncate(40 * 2**20)
    wheels = {"big": whl}
    total, msg = gw.size_report(wheels, 10 * 2**20)
    assert total == 50 * 2**20 and "50.0 MiB of the 64 MiB" in msg
    with pytest.raises(gw.WheelError, match=r"70.0 MiB of the 64 MiB.*over the limit.*device_packages.txt"):
        gw.size_report(wheels, 30 * 2**20)
    assert gw.working_tree_bytes() < 8 * 2**20  # the checkout itself leaves the room for the wheels


def test_one_version_of_each_and_only_wheels_the_device_can_take(tmp_path):
    for name in ("snakemake-9.27.1-py3-none-any.whl", "snakemake-9.27.0-py3-none-any.whl"):
        (tmp_path / name).touch()
    with pytest.raises(gw.WheelError, match="two wheels of snakemake"):
        gw.wheel_files(tmp_path)
    ok = [
        "celer-0.7.4-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "greenlet-3.5.6-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "humanfriendly-10.0-py2.py3-none-any.whl",
    ]
    wrong = [
        "celer-0.7.4-cp311-cp311-manylinux_2_17_x86_64.whl",  # another Python
        "celer-0.7.4-cp312-cp312-manylinux_2_39_x86_64.whl",  # newer glibc than GLIBC_MAX
        "celer-0.7.4-cp312-cp312-manylinux_2_17_aarch64.whl",
        "celer-0.7.4-cp312-cp312-macosx_11_0_arm64.whl",
    ]
    assert all(gw.tag_ok(Path(n)) for n in ok)
    assert not any(gw.tag_ok(Path(n)) for n in wrong)


@pytest.mark.skipif(not any(gw.WHEELS.glob("*.whl")), reason="no .whl/ here: `make gpu-wheels` makes it (network)")
def test_the_carried_folder_passes_and_a_broken_copy_is_caught(plan, tmp_path):
    _, _, carried, _, _ = plan
    lines = gw.check()
    assert lines[-1].endswith("MiB one device call carries")
    assert {n for n in gw.wheel_files()} == set(carried)  # the folder is the plan, from its own metadata
    copy = tmp_path / "whl"
    shutil.copytree(gw.WHEELS, copy)
    next(copy.glob("celer-*.whl")).unlink()
    with pytest.raises(gw.WheelError, match="has no wheel of celer: run make gpu-wheels"):
        gw.check(copy)
    shutil.copy(next(gw.WHEELS.glob("celer-*.whl")), copy)
    shutil.copy(copy / next(copy.glob("yte-*.whl")).name, copy / "h5py-3.16.0-py3-none-any.whl")
    with pytest.raises(gw.WheelError, match="the device has h5py already"):
        gw.check(copy)


def test_unmet_names_what_an_installed_folder_needs_and_this_interpreter_lacks(tmp_path):
    info = tmp_path / "carried-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: carried\nVersion: 1.0\n"
        "Requires-Dist: pytest\nRequires-Dist: numpy>=99\nRequires-Dist: no-such-package-rsvc\n"
        "Requires-Dist: sphinx; extra == 'docs'\nRequires-Dist: pytest<1; python_version < '3'\n"
    )
    import numpy

    assert gw.unmet(tmp_path) == [
        "carried 1.0 needs no-such-package-rsvc: not installed",
        f"carried 1.0 needs numpy>=99, found {numpy.__version__}",
    ]
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: carried\nVersion: 1.0\nRequires-Dist: pytest\n")
    assert gw.unmet(tmp_path) == []
