"""bench_batch_gpus.py --tiny on the CPU: the 1-GPU and 2-GPU runs of the 8-case cohort through the
real `medgs batch` command, with fake GPU ids (CUDA_VISIBLE_DEVICES=0,1; the CPU build of torch
ignores it), one spawn worker per id. Same seed, so the outputs must be equal bit for bit."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "Benchmarks" / "bench_batch_gpus.py"
COHORT = [f"ct_crop_{c}" for c in "abcd"] + [f"ct_crop_{c}_half" for c in "abcd"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_batch_gpus", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_cohort_on_one_and_two_fake_gpus(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("fake GPU ids are for a machine without CUDA (on a GPU the outputs may differ)")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    bench = _bench()
    out = tmp_path / "b"
    assert bench.main([str(out), "--tiny"]) == 0
    doc = json.loads((out / "bench_batch_gpus.json").read_text())
    assert set(bench.KEYS) <= set(doc)
    assert doc["fake_gpus"] is True and doc["gpus_visible"] == ["0", "1"] and doc["gpu_counts"] == [1, 2]
    assert doc["cases"] == 8 and doc["cohort"] == COHORT
    one, two = doc["runs"]
    assert (one["gpus"], one["cuda_visible_devices"], one["batch_gpus"]) == (1, "0", ["0"])
    assert (two["gpus"], two["cuda_visible_devices"], two["batch_gpus"]) == (2, "0,1", ["0", "1"])
    for run in (one, two):
        assert run["exit"] == 0 and run["done"] == 8
        assert run["cases_per_minute"] == pytest.approx(60 * 8 / run["wall_s"], abs=1e-3)
        assert run["efficiency"] == pytest.approx(run["speedup"] / run["gpus"], abs=1e-3)
        for w in run["workers"].values():
            assert (w["cuda_device"], w["cuda_uuid"]) == (None, None)        # the CPU: no device seen
    assert one["speedup"] == 1.0
    assert list(one["workers"]) == ["gpu 0"] and sorted(one["workers"]["gpu 0"]["cases"]) == sorted(COHORT)
    assert list(two["workers"]) == ["gpu 0", "gpu 1"]
    assert sorted(two["workers"]["gpu 0"]["cases"] + two["workers"]["gpu 1"]["cases"]) == sorted(COHORT)
    assert doc["identical"] is True and doc["max_abs_difference"] == 0.0
    for row in doc["per_case"]:
        diff = row["gpus2"]["difference_from_1_gpu"]
        assert diff["files"] == ["labels.nii.gz", "volume.nii.gz"] and diff["max_abs"] == 0.0
        assert row["gpus1"]["status"] == row["gpus2"]["status"] == "done"


def test_half_crop_keeps_the_geometry(tmp_path):
    """The half crop is the central half of every slice of the real volume: same voxels, the
    origin moved to the crop's first voxel (spacing and direction unchanged)."""
    import numpy as np

    from MedGSLib.io import read_volume
    bench = _bench()
    ex = bench.ROOT / "Resources" / "Examples"
    img, lab = ex / "ct_abdomen3mm_image.nii.gz", ex / "ct_abdomen3mm_labels.nii.gz"
    name, ip, lp = bench.half_crop(img, lab, tmp_path, "ct_half")
    src, got = read_volume(img), read_volume(ip)
    nz, ny, nx = src.array.shape
    assert name == "ct_half" and got.array.shape == (nz, ny // 2, nx // 2)
    np.testing.assert_array_equal(got.array, src.array[:, ny // 4:ny // 4 + ny // 2, nx // 4:nx // 4 + nx // 2])
    assert got.geometry.spacing == pytest.approx(src.geometry.spacing)
    assert got.geometry.direction == pytest.approx(src.geometry.direction)
    np.testing.assert_allclose(got.geometry.index_to_physical(np.zeros(3)),
                               src.geometry.index_to_physical(np.array([nx // 4, ny // 4, 0], float)), atol=1e-4)
    assert read_volume(lp, "labels").array.shape == got.array.shape
