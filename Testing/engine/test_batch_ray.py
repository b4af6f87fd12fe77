"""`medgs batch --executor ray` end to end on the CPU: a local Ray instance, one task per case.

Ray is in the `test` extra, so CI has it: there (CI=1) a missing Ray fails this test instead of
skipping it. Ray 2.60 has no in-process local mode; the instance is started with one CPU.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")

from test_batch import FAST, cohort, example  # noqa: E402,F401 - the fixtures of the CPU cohort


def _ray():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed: the test extra installs it (pip install -e '.[test]')")
        pytest.skip("Ray is not installed (pip install 'medgs[batch]')")
    return ray


def test_ray_executor_runs_a_tiny_cohort(cohort, tmp_path):  # noqa: F811
    _ray()
    from MedGSLib.batch import manifest, runner
    from MedGSLib.io import read_volume
    cases = [c for c in manifest.discover(cohort) if c.name in ("broken", "upper", "spine")]
    out = tmp_path / "ray"
    doc = runner.run_batch(cases, out, FAST, executor="ray", report=lambda line: None,
                           ray_init={"num_cpus": 1, "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}})
    by = {c["name"]: c for c in doc["cases"]}
    assert {n: c["status"] for n, c in by.items()} == {"broken": "failed", "spine": "done", "upper": "done"}
    assert by["broken"]["reason"].startswith("broken_image.nii.gz is damaged or truncated")
    assert by["upper"]["worker"].startswith("ray ") and doc["executor"] == "ray"
    assert json.loads((out / "batch.json").read_text())["summary"]["done"] == 2
    # same seed, same volume as this process gives
    ref = runner.run_batch([c for c in cases if c.name == "upper"], tmp_path / "local", FAST, executor="local",
                           report=lambda line: None)
    assert ref["cases"][0]["status"] == "done"
    np.testing.assert_array_equal(read_volume(out / "upper" / "volume.nii.gz").array,
                                  read_volume(tmp_path / "local" / "upper" / "volume.nii.gz").array)
