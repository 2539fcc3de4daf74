"""Interruption: the tiny reliability run killed with SIGKILL during training, while an activation file
is written and during compare, each time resumed; every output must equal the uninterrupted run's
(determinism and clean resume at once)."""

from __future__ import annotations

import pytest
from reliability_runs import (
    _assert_outputs_intact,
    compare_runs,
    run_interrupted,
)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("interrupted")
    return workdir, run_interrupted(workdir)


@pytest.mark.workflow
@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(reference, interrupted):
    """Determinism and clean resume in one comparison: a second run from scratch, killed three
    times and resumed, produces byte-identical tables, figures and checkpoints and identical HDF5
    datasets and attributes. Temporary files of the killed jobs are hidden, never outputs."""
    ref_dir, _, _ = reference
    int_dir, stale = interrupted
    diffs, counts = compare_runs(ref_dir / "results", int_dir / "results")
    assert not diffs, "\n".join(diffs[:30])
    assert counts.get(".h5", 0) >= 20 and counts.get(".csv", 0) >= 3 and counts.get(".png", 0) >= 10, counts
    assert stale["activations being written"], "the second kill must hit a half-written activation file"
    for p in (int_dir / "results").rglob("*.tmp"):
        assert p.name.startswith("."), p  # hidden: no glob of outputs picks it up
    _assert_outputs_intact(int_dir / "results")
