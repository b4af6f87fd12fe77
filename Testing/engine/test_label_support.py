"""The support rule (label_support.py) and the one decoder that applies it (labels.decode)."""
import numpy as np
import pytest

from MedGSLib import labels as lb
from MedGSLib.errors import InputError
from MedGSLib.label_support import supported


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
        supported(np.zeros((4, 4), np.uint8), [0])
