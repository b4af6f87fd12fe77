"""`medgs run` / `medgs train` / `medgs render` end to end on tiny volumes (exit codes, geometry, files)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
sitk = pytest.importorskip("SimpleITK")

from MedGSLib.cli import main  # noqa: E402

SPACING = (0.8, 0.9, 3.0)                    # x, y, z: z (the largest) is the slice axis
ORIGIN = (-12.5, 30.0, 7.25)


def _oblique_direction():
    a = np.deg2rad(20.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    b = np.deg2rad(10.0)
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rz @ rx).ravel())


def write_volume(path, n_slices=5, dtype=np.int16, nan=False):
    zz, yy, xx = np.mgrid[0:n_slices, 0:24, 0:28]
    arr = (400 * np.exp(-((yy - 12) ** 2 + (xx - 10 - zz) ** 2) / 30.0) - 100).astype(dtype)
    if nan:
        arr = arr.astype(np.float32)
        arr[1, 2, 3] = np.nan
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing(SPACING)
    im.SetOrigin(ORIGIN)
    im.SetDirection(_oblique_direction())
    sitk.WriteImage(im, str(path))
    return arr


def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# plumbing, not quality: a few hundred Gaussians on these ~3,400-voxel volumes (--set stays last)
FAST = ["--iterations", "6", "--device", "cpu", "--seed", "0", "-q", "--max-gaussians", "400",
        "--set", "model.num_points=200"]


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
def test_run_keeps_geometry_and_halves_spacing(tmp_path, capsys, ext):
    src = tmp_path / f"in{ext}"
    arr = write_volume(src)
    out = tmp_path / "out"
    code, _, err = run_cli(["run", str(src), "-o", str(out), "--factor", "2"] + FAST, capsys)
    assert code == 0, err
    vol = out / f"volume{ext}"
    im = sitk.ReadImage(str(vol))
    assert im.GetSize() == (28, 24, (5 - 1) * 2 + 1)
    np.testing.assert_allclose(im.GetSpacing(), (0.8, 0.9, 1.5), atol=1e-5)
    np.testing.assert_allclose(im.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(im.GetDirection(), _oblique_direction(), atol=1e-5)
    # same physical extent: last slice centre coincides with the input's
    src_im = sitk.ReadImage(str(src))
    np.testing.assert_allclose(im.TransformIndexToPhysicalPoint((0, 0, 8)),
                               src_im.TransformIndexToPhysicalPoint((0, 0, 4)), atol=1e-4)
    out_arr = sitk.GetArrayFromImage(im)
    assert np.issubdtype(out_arr.dtype, np.integer)            # dtype family kept
    np.testing.assert_array_equal(out_arr[::2], arr)           # kept slices pasted back exactly
    rec = json.loads((out / "run.json").read_text())
    assert rec["outputs"]["volume"] == str(vol)
    assert rec["result"]["iterations_run"] >= 1


def test_keep_every_restores_full_grid(tmp_path, capsys):
    src = tmp_path / "in.nrrd"
    arr = write_volume(src, n_slices=9)
    out = tmp_path / "out"
    code, _, err = run_cli(["run", str(src), "-o", str(out), "--keep-every", "2"] + FAST, capsys)
    assert code == 0, err
    im = sitk.ReadImage(str(out / "volume.nrrd"))
    assert im.GetSize() == (28, 24, 9)
    np.testing.assert_allclose(im.GetSpacing(), SPACING, atol=1e-5)
    np.testing.assert_allclose(im.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(im)[::2], arr[::2])
    rec = json.loads((out / "run.json").read_text())
    assert rec["result"]["kept_slices"] == [0, 2, 4, 6, 8]


def _assert_one_line_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medgs run: error:"), err


def test_error_2d_image(tmp_path, capsys):
    src = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 30), np.int16)), str(src))
    _assert_one_line_error(*run_cli(["run", str(src), "-o", str(tmp_path / "o"), "--factor", "2"] + FAST,
                                    capsys)[::2])


def test_error_nan_voxels(tmp_path, capsys):
    src = tmp_path / "nan.nrrd"
    write_volume(src, nan=True)
    code, _, err = run_cli(["run", str(src), "-o", str(tmp_path / "o"), "--factor", "2"] + FAST, capsys)
    _assert_one_line_error(code, err)
    assert "nan" in err.lower() or "finite" in err.lower()


def test_error_existing_output_untouched(tmp_path, capsys):
    src = tmp_path / "in.nii.gz"
    write_volume(src)
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "volume.nii.gz"
    existing.write_bytes(b"precious bytes")
    code, _, err = run_cli(["run", str(src), "-o", str(out), "--factor", "2"] + FAST, capsys)
    _assert_one_line_error(code, err)
    assert existing.read_bytes() == b"precious bytes"
    assert not (out / "run.json").exists()


def test_error_cuda_without_gpu(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    src = tmp_path / "in.nrrd"
    write_volume(src)
    argv = ["run", str(src), "-o", str(tmp_path / "o"), "--factor", "2", "--iterations", "5", "--device", "cuda", "-q"]
    code, _, err = run_cli(argv, capsys)
    _assert_one_line_error(code, err)
    assert "cuda" in err.lower()


def test_error_missing_file(tmp_path, capsys):
    code, _, err = run_cli(["run", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "o"), "--factor", "2"]
                           + FAST, capsys)
    _assert_one_line_error(code, err)


def test_error_too_few_slices_after_keep_every(tmp_path, capsys):
    src = tmp_path / "in.nrrd"
    write_volume(src, n_slices=3)
    code, _, err = run_cli(["run", str(src), "-o", str(tmp_path / "o"), "--keep-every", "3"] + FAST, capsys)
    _assert_one_line_error(code, err)


def test_upstream_train_and_render(tmp_path, capsys):
    from MedGSLib.frames import write_png_frames
    F = 4
    yy, xx = np.mgrid[0:24, 0:32]
    frames = np.stack([np.exp(-((yy - 12) ** 2 + (xx - 8 - 4 * k) ** 2) / 20.0) for k in range(F)]).astype(np.float32)
    root = write_png_frames(frames, tmp_path / "data")
    out = tmp_path / "model"
    code, _, err = run_cli(["train", "-s", str(root), "-m", str(out), "--iterations", "10", "--preset", "fast",
                            "--device", "cpu", "--num_pts", "400", "--quiet"], capsys)
    assert code == 0, err
    assert (out / "chkpnt10.pth").exists()
    code, _, err = run_cli(["render", "-m", str(out), "--interp", "2", "--device", "cpu"], capsys)
    assert code == 0, err
    files = sorted(p.name for p in (out / "render_img").glob("*.png"))
    assert files == [f"{k:05d}_{i}.png" for k in range(F) for i in range(2)]
    from PIL import Image
    im = np.asarray(Image.open(out / "render_img" / "00000_0.png"))
    assert im.shape[:2] == (24, 32)


def test_set_options_reach_the_trainer_and_bad_ones_fail_cleanly(tmp_path, capsys):
    src = tmp_path / "in.nii.gz"
    write_volume(src)
    out = tmp_path / "out"
    code, _, err = run_cli(["run", str(src), "-o", str(out), "--factor", "2", "--device", "cpu", "-q",
                            "--set", "schedule.iterations=4", "loss.ibfr_target=linear", "model.num_points=200"],
                           capsys)
    assert code == 0, err
    rec = json.loads((out / "run.json").read_text())
    assert rec["result"]["iterations_run"] == 4
    # run.json says how the config was reached: preset, CPU variant, each --set, and why
    assert rec["config"]["preset"] == "fast+cpu+overrides"
    whats = [a["what"] for a in rec["config"]["adjustments"]]
    assert whats[-3:] == ["schedule.iterations = 4 (was 0)", "loss.ibfr_target = 'linear' (was 'flow')",
                          "model.num_points = 200 (was 0)"]
    assert {a["why"] for a in rec["config"]["adjustments"][-3:]} == {"--set"}
    bad = tmp_path / "bad"
    code, _, err = run_cli(["run", str(src), "-o", str(bad), "--factor", "2", "--device", "cpu", "-q",
                            "--set", "loss.ibfr_weight=1"], capsys)
    _assert_one_line_error(code, err)
    assert "unknown option 'loss.ibfr_weight'" in err
    assert not bad.exists()
