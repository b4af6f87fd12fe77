"""Metrics of the held-out-slice protocol against hand-computed values on tiny arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest

from MedGSLib.errors import InputError
from MedGSLib.evaluation import metrics


def _heldout(mask):
    return np.asarray(mask, dtype=bool)


# ----------------------------------------------------------------------------- PSNR / SSIM

def test_psnr_pooled_known_value_and_kept_slices_ignored():
    truth = np.zeros((3, 12, 12))
    pred = np.zeros((3, 12, 12))
    pred[1] = 0.1                     # held-out slice: MSE 0.01 -> 20 dB
    pred[0] = 1.0                     # kept slice: wrong, never scored
    assert metrics.psnr_pooled(pred, truth, _heldout([0, 1, 0])) == pytest.approx(20.0, abs=1e-9)


def test_psnr_pooled_versus_per_slice():
    truth = np.zeros((3, 12, 12))
    pred = np.zeros((3, 12, 12))
    pred[1] = 0.1                     # MSE 1e-2 -> 20 dB
    pred[2] = 0.01                    # MSE 1e-4 -> 40 dB
    held = _heldout([0, 1, 1])
    # Pooled: one MSE over both slices = (1e-2 + 1e-4) / 2.
    assert metrics.psnr_pooled(pred, truth, held) == pytest.approx(10 * math.log10(1 / 0.00505), abs=1e-9)
    per = metrics.psnr_per_slice(pred, truth, held)
    np.testing.assert_allclose(per, [20.0, 40.0], atol=1e-9)


def test_intensity_scores_map_with_reference_range_and_clip():
    truth = np.full((3, 16, 16), 0.0)
    truth[:, 0, 0] = -1000.0          # reference range [-1000, 1000] -> [0, 1]
    truth[:, 0, 1] = 1000.0
    pred = truth.copy()
    pred[1, 2:, :] += 200.0           # 0.1 in [0, 1] units on 14 of 16 rows
    s = metrics.intensity_scores(pred, truth, _heldout([0, 1, 0]))
    mse = 0.01 * (14 * 16) / (16 * 16)
    assert s["psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)
    assert s["psnr_slice_mean"] == pytest.approx(s["psnr"], abs=1e-9)   # one held-out slice
    assert s["psnr_slice_std"] == 0.0
    # A prediction far above the reference maximum is clipped to 1 before scoring.
    wild = truth.copy()
    wild[1] = 1e9
    clipped = truth.copy()
    clipped[1] = 1000.0
    assert metrics.intensity_scores(wild, truth, _heldout([0, 1, 0]))["psnr"] == pytest.approx(
        metrics.intensity_scores(clipped, truth, _heldout([0, 1, 0]))["psnr"])


def test_exact_slices_are_counted_not_averaged():
    truth = np.zeros((3, 12, 12))
    pred = np.zeros((3, 12, 12))
    pred[2] = 0.1
    truth[:, 0, 0] = 1.0
    pred[:, 0, 0] = 1.0
    s = metrics.intensity_scores(pred, truth, _heldout([0, 1, 1]))
    assert s["psnr_exact_slices"] == 1
    assert math.isfinite(s["psnr_slice_mean"])


def test_ssim_constant_slices_closed_form():
    # Constant images: sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2.
    a, b = 0.5, 0.25
    truth = np.full((2, 16, 16), a)
    pred = np.full((2, 16, 16), b)
    s = metrics.ssim_per_slice(pred, truth, _heldout([0, 1]))
    expected = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)
    assert s[0] == pytest.approx(expected, abs=1e-9)
    assert metrics.ssim_per_slice(truth, truth, _heldout([0, 1]))[0] == pytest.approx(1.0)


def test_ssim_rejects_tiny_slices_and_no_heldout():
    with pytest.raises(InputError):
        metrics.ssim_per_slice(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), _heldout([0, 1]))
    with pytest.raises(InputError):
        metrics.psnr_pooled(np.zeros((2, 12, 12)), np.zeros((2, 12, 12)), _heldout([0, 0]))


# ----------------------------------------------------------------------------- Dice / surfaces

def test_dice_of_two_known_masks_pooled_over_heldout_slices():
    truth = np.zeros((3, 4, 4), bool)
    pred = np.zeros((3, 4, 4), bool)
    truth[1, 0, :] = True             # 4 voxels
    pred[1, 0, 1:] = True             # 3 voxels, all inside truth
    pred[2, 3, :3] = True             # 3 voxels on another held-out slice, truth empty there
    pred[0] = True                    # kept slice: ignored
    # pooled: 2 * 3 / (4 + 6) = 0.6
    assert metrics.dice_pooled(pred, truth, _heldout([0, 1, 1])) == pytest.approx(0.6)
    assert math.isnan(metrics.dice_pooled(np.zeros_like(pred), np.zeros_like(truth), _heldout([0, 1, 1])))


def test_surface_is_six_neighbour_boundary():
    m = np.zeros((5, 5, 5), bool)
    m[1:4, 1:4, 1:4] = True
    s = metrics.surface(m)
    assert s.sum() == 26 and not s[2, 2, 2]
    # Touching the array border counts as a boundary.
    assert metrics.surface(np.ones((3, 3, 3), bool)).sum() == 26


def test_single_voxel_distance_uses_anisotropic_spacing():
    spacing = (2.0, 0.5, 0.25)        # (slice, row, col) mm
    a = np.zeros((4, 6, 6), bool)
    b = np.zeros((4, 6, 6), bool)
    a[1, 1, 1] = True
    b[2, 3, 4] = True                 # offset (1, 2, 3) voxels
    d = math.sqrt(2.0**2 + 1.0**2 + 0.75**2)
    s = metrics.surface_scores(a, b, _heldout([0, 1, 1, 0]), spacing)
    assert s["hd95"] == pytest.approx(d) and s["assd"] == pytest.approx(d)


def _sphere(shape, spacing, centre_mm, radius_mm):
    zz, yy, xx = np.meshgrid(*[np.arange(n) * sp for n, sp in zip(shape, spacing)], indexing="ij")
    return (zz - centre_mm[0]) ** 2 + (yy - centre_mm[1]) ** 2 + (xx - centre_mm[2]) ** 2 <= radius_mm**2


def test_concentric_spheres_hd95_and_assd_equal_radius_gap():
    spacing = (1.5, 0.5, 0.5)
    shape = (40, 60, 60)
    c = (30.0, 15.0, 15.0)
    inner, outer = _sphere(shape, spacing, c, 8.0), _sphere(shape, spacing, c, 11.0)
    held = np.ones(shape[0], bool)
    s = metrics.surface_scores(inner, outer, held, spacing)
    # Every surface point of one sphere is 3 mm from the other's; voxelisation moves each
    # surface by at most half a voxel diagonal along z (0.75 mm).
    assert s["hd95"] == pytest.approx(3.0, abs=0.75)
    assert s["assd"] == pytest.approx(3.0, abs=0.5)


def test_shifted_spheres_hd95_in_mm_on_anisotropic_grid():
    spacing = (2.0, 0.5, 0.5)         # thick slices
    shape = (30, 70, 70)
    r, d = 12.0, 6.0                  # shift 6 mm = 3 slices along z
    a = _sphere(shape, spacing, (25.0, 17.5, 17.5), r)
    b = _sphere(shape, spacing, (25.0 + d, 17.5, 17.5), r)
    held = np.ones(shape[0], bool)
    s = metrics.surface_scores(a, b, held, spacing)
    # Continuous answer: a surface point at polar cosine c (uniform on [-1, 1] by area) is
    # |sqrt(r^2 + d^2 - 2 r d c) - r| from the other sphere; HD95 is its 95th percentile.
    c = np.linspace(-1, 1, 200001)
    expected = float(np.percentile(np.abs(np.sqrt(r * r + d * d - 2 * r * d * c) - r), 95))
    assert expected == pytest.approx(5.70, abs=0.01)
    assert s["hd95"] == pytest.approx(expected, abs=1.0)
    expected_assd = float(np.mean(np.abs(np.sqrt(r * r + d * d - 2 * r * d * c) - r)))
    assert s["assd"] == pytest.approx(expected_assd, abs=0.5)
    # The same shift in voxels along a 0.5 mm axis is 4x shorter in mm.
    b_x = _sphere(shape, spacing, (25.0, 17.5, 17.5 + d / 4), r)
    s_x = metrics.surface_scores(a, b_x, held, spacing)
    assert s_x["hd95"] < s["hd95"] / 2.5


def test_surface_distances_start_only_on_heldout_slices():
    spacing = (1.0, 1.0, 1.0)
    truth = np.zeros((5, 8, 8), bool)
    pred = np.zeros((5, 8, 8), bool)
    truth[:, 2:5, 2:5] = True
    pred[:, 2:5, 2:5] = True
    pred[0, 2:5, 6] = True            # an error on a kept slice (0) only
    held = _heldout([0, 1, 0, 1, 0])
    s = metrics.surface_scores(pred, truth, held, spacing)
    assert s["hd95"] == 0.0 and s["assd"] == 0.0


def test_label_scores_per_label_and_mean():
    spacing = (1.0, 1.0, 1.0)
    truth = np.zeros((3, 6, 6), np.uint8)
    truth[1, 0:2, 0:2] = 1            # 4 voxels
    truth[1, 4:6, 4:6] = 2            # 4 voxels
    pred = truth.copy()
    pred[1, 4:6, 4:6] = 0             # label 2 missed entirely on the held-out slice
    pred[1, 4, 4] = 2                 # ... but 1 voxel kept: Dice = 2 / 5
    held = _heldout([0, 1, 0])
    s = metrics.label_scores(pred, truth, held, spacing, values=[1, 2, 3])
    assert s["per_label"][1]["dice"] == pytest.approx(1.0)
    assert s["per_label"][2]["dice"] == pytest.approx(0.4)
    assert math.isnan(s["per_label"][3]["dice"])          # absent in both: not scored
    assert s["labels_scored"] == 2
    assert s["dice"] == pytest.approx(0.7)
    assert s["per_label"][1]["hd95"] == 0.0


def test_missing_structure_scores_the_grid_diagonal():
    spacing = (2.0, 1.0, 1.0)
    truth = np.zeros((3, 6, 6), np.uint8)
    truth[1, 2:4, 2:4] = 1            # only on the held-out slice
    pred = np.zeros_like(truth)
    s = metrics.label_scores(pred, truth, _heldout([0, 1, 0]), spacing)
    diag = math.sqrt(6.0**2 + 6.0**2 + 6.0**2)
    assert s["dice"] == 0.0
    assert s["hd95"] == pytest.approx(diag) and s["assd"] == pytest.approx(diag)
