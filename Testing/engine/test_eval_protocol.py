"""Slice bookkeeping of the held-out-slice protocol: crop, kept and held-out slices, axes."""
from __future__ import annotations

import numpy as np
import pytest

from MedGSLib.errors import InputError
from MedGSLib.evaluation import protocol
from MedGSLib.geometry import Geometry


@pytest.mark.parametrize(
    "n, ks, n_use",
    [
        (30, (2, 3, 4), 25),     # L = 12
        (25, (2, 3, 4), 25),     # already n = L*m + 1
        (24, (2, 3, 4), 13),
        (13, (4, 3, 2), 13),     # order of K does not matter
        (31, (2,), 31),          # odd length, k = 2: nothing cropped
        (30, (2,), 29),          # even length, k = 2: the last slice goes
        (30, (3,), 28),
        (30, (2, 4), 29),        # L = 4
        (20, (2, 3), 19),        # L = 6
        (143, (2, 3, 4), 133),
    ],
)
def test_usable_length(n, ks, n_use):
    assert protocol.usable_length(n, ks) == n_use
    plan = protocol.SlicePlan.build(n, ks)
    assert plan.n_use == n_use
    for k in plan.ks:
        kept = plan.kept(k)
        held = plan.heldout(k)
        # Every factor keeps the first and last slice, so nothing is extrapolated.
        assert kept[0] == 0 and kept[-1] == n_use - 1
        assert np.all(np.diff(kept) == k)
        # Kept and held-out slices partition the grid; held-out means index % k != 0.
        assert sorted(np.concatenate([kept, held]).tolist()) == list(range(n_use))
        assert np.all(held % k != 0)
        np.testing.assert_array_equal(protocol.heldout_mask(n_use, k), np.arange(n_use) % k != 0)


def test_explicit_slices_for_k3():
    np.testing.assert_array_equal(protocol.kept_indices(13, 3), [0, 3, 6, 9, 12])
    np.testing.assert_array_equal(protocol.heldout_indices(13, 3), [1, 2, 4, 5, 7, 8, 10, 11])


def test_too_short_and_bad_factors():
    with pytest.raises(InputError, match="too few"):
        protocol.usable_length(12, (2, 3, 4))        # needs lcm + 1 = 13
    for bad in ((), (1, 2), (2.5,), ("x",)):
        with pytest.raises(InputError):
            protocol.parse_factors(bad)
    assert protocol.parse_factors([4, 2, 2, 3]) == (2, 3, 4)
    with pytest.raises(InputError):
        protocol.kept_indices(14, 3)                  # 14 slices do not end on a kept slice
    with pytest.raises(InputError):
        protocol.SlicePlan.build(25, (2, 3)).kept(4)


@pytest.mark.parametrize(
    "spacing, axis, expected",
    [
        ((1.0, 1.0, 3.0), "auto", 2),
        ((3.0, 1.0, 1.0), "auto", 0),
        ((1.0, 5.0, 1.0), "auto", 1),
        ((1.0, 1.0, 1.0), "auto", 2),      # ties -> k
        ((2.0, 1.0, 2.0), "auto", 2),
        ((1.0, 1.0, 3.0), 0, 0),
    ],
)
def test_choose_slice_axis(spacing, axis, expected):
    assert protocol.choose_slice_axis(Geometry(spacing), axis) == expected


def test_slice_first_array_and_spacing():
    a = np.arange(4 * 5 * 6).reshape(4, 5, 6)      # (Z, Y, X)
    g = Geometry((0.5, 0.7, 3.0))                   # (x, y, z)
    # Image axis 2 (k) is numpy axis 0: unchanged.
    assert protocol.slice_first(a, 2).shape == (4, 5, 6)
    assert protocol.slice_first_spacing(g, 2) == (3.0, 0.7, 0.5)
    # Image axis 0 (i = x) is numpy axis 2: slices along x, the rest keep their order.
    moved = protocol.slice_first(a, 0)
    assert moved.shape == (6, 4, 5)
    np.testing.assert_array_equal(moved[3], a[:, :, 3])
    assert protocol.slice_first_spacing(g, 0) == (0.5, 3.0, 0.7)
    moved = protocol.slice_first(a, 1)
    np.testing.assert_array_equal(moved[2], a[:, 2, :])
    assert protocol.slice_first_spacing(g, 1) == (0.7, 3.0, 0.5)
