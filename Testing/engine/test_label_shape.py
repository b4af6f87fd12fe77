"""Shape targets of the label heads and the support rule (label_shape.py, labels.decode)."""
import numpy as np
import pytest

from MedGSLib import labels as lb
from MedGSLib.errors import InputError
from MedGSLib.label_shape import ramp_targets, ramp_tau, supported


def test_ramp_values_across_a_straight_edge():
    m = np.zeros((1, 1, 1, 12), np.float32)
    m[..., 6:] = 1.0                       # inside from column 6 on
    r = ramp_targets(m, tau=2.0)[0, 0, 0]
    # signed distances -5.5 .. -0.5 | +0.5 .. +5.5, clipped at +-2, mapped to [0, 1]
    np.testing.assert_allclose(r, [0, 0, 0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1, 1, 1])


def test_ramp_decodes_back_to_the_mask_and_skips_unlisted_frames():
    rng = np.random.default_rng(3)
    lab = np.zeros((3, 20, 20), np.int16)
    lab[0, 3:9, 4:15] = 2
    lab[0, 10:16, 6:12] = 5
    lab[2, 5:7, 5:7] = 5
    lab[1] = rng.integers(0, 2, (20, 20)) * 2   # frame 1 is not converted: stays one-hot
    masks = lb.one_hot(lab, [2, 5])
    r = ramp_targets(masks, tau=3.0, frames=[0, 2])
    for f in (0, 2):
        np.testing.assert_array_equal(lb.decode(r[:, f], [2, 5]), lab[f])
    np.testing.assert_array_equal(r[:, 1], masks[:, 1])
    assert r.min() == 0.0 and r.max() == 1.0


def test_ramp_tau_is_the_annotated_gap_in_pixels():
    assert ramp_tau(2.5, None) == 2.5                  # dense: one kept gap
    assert ramp_tau(2.5, [0, 4, 8, 12]) == 10.0        # annotated every 4th frame
    assert ramp_tau(0.2, None) == 1.0                  # never narrower than a pixel


def test_support_rule_removes_only_unsupported_pieces():
    lab = np.zeros((7, 10, 10), np.uint8)
    lab[0:4, 1:3, 1:3] = 1          # touches annotated slice 0: kept
    lab[2:5, 6:8, 6:8] = 1          # label 1 between slices, on no annotated slice: removed
    lab[5:7, 6:8, 1:3] = 3          # reaches slice 6 where it is annotated: kept
    lab[3, 8, 8] = 3                # a lone voxel of 3 off the support: removed
    keep = supported(lab, [0, 6])
    out = np.where(keep, lab, 0)
    assert (out == 1).sum() == 4 * 4 and (out[2:5, 6:8, 6:8] == 0).all()
    assert (out == 3).sum() == 2 * 4
    # diagonal contact counts (26-connectivity): a piece shifted by one pixel per slice is supported
    diag = np.zeros((3, 6, 6), np.uint8)
    diag[0, 1, 1] = diag[1, 2, 2] = diag[2, 3, 3] = 4
    assert supported(diag, [0]).all()


def test_decode_with_support_and_errors():
    probs = np.zeros((1, 5, 4, 4), np.float32)
    probs[0, 0, :2, :2] = 0.9
    probs[0, 2:4, 2:, 2:] = 0.8      # a blob between the support slices 0 and 4
    np.testing.assert_array_equal(lb.decode(probs, [7], support=[0, 4])[2:4], 0)
    assert (lb.decode(probs, [7])[2:4] == 7).sum() == 8
    with pytest.raises(InputError):
        supported(np.zeros((3, 4, 4), np.uint8), [5])
    with pytest.raises(InputError):
        ramp_targets(np.zeros((2, 4, 4)), 1.0)
