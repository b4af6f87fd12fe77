"""Classical label baselines, synthetic shapes with known answers and one real case.

The contour baseline runs ITK in a child process; one worker is shared by this module so that
ITK's ~10 s import is paid once.
"""
from __future__ import annotations

import numpy as np
import pytest

from MedGSLib.errors import InputError
from MedGSLib.evaluation import baselines_labels as bl
from MedGSLib.evaluation import metrics, protocol
from MedGSLib.evaluation.contour_worker import ContourWorker

SPACING = (2.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def worker():
    w = ContourWorker().start()
    yield w
    w.close()
    # The child leaves cleanly (an ITK teardown abort at exit would show as -6 here).
    assert w.returncode == 0


def _call(name, kept, k, spacing, values=None, worker=None):
    extra = {"worker": worker} if name == "contour" else {}
    return bl.LABEL_BASELINES[name](kept, k, spacing, values, **extra)


def _disk(size, radius, cy, cx):
    yy, xx = np.mgrid[0:size, 0:size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _random_labels(seed=0, n=5, size=32):
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size), np.uint8)
    for z in range(n):
        if z == 2:
            continue                  # an empty kept slice
        for v in (1, 2, 7):
            cy, cx = rng.integers(6, size - 6, 2)
            out[z][_disk(size, int(rng.integers(2, 6)), cy, cx)] = v
    return out


@pytest.mark.parametrize("name", sorted(bl.LABEL_BASELINES))
@pytest.mark.parametrize("k", [2, 3])
def test_kept_slices_come_back_unchanged(name, k, worker):
    kept = _random_labels(k)
    full = _call(name, kept, k, SPACING, worker=worker)
    assert full.shape == ((kept.shape[0] - 1) * k + 1,) + kept.shape[1:]
    assert full.dtype == kept.dtype
    np.testing.assert_array_equal(full[::k], kept)
    assert set(np.unique(full)) <= {0, 1, 2, 7}


def test_nearest_and_value_selection():
    kept = np.zeros((2, 4, 4), np.int16)
    kept[0, 0, 0], kept[1, 1, 1], kept[1, 2, 2] = 3, 5, 3
    out = bl.nearest(kept, 2)
    np.testing.assert_array_equal(out[1], kept[0])          # halfway: the earlier slice
    only5 = bl.nearest(kept, 2, values=[5])
    assert set(np.unique(only5)) == {0, 5}


def _growing_disk(k, r0=4, r1=12, size=48):
    kept = np.zeros((2, size, size), np.uint8)
    kept[0][_disk(size, r0, 24, 24)] = 1
    kept[1][_disk(size, r1, 24, 24)] = 1
    return kept


def test_linear_label_midpoint_is_the_intersection():
    # Halfway, a pixel inside only the larger disk has probability exactly 0.5: background wins.
    kept = _growing_disk(2)
    mid = bl.linear(kept, 2)[1]
    np.testing.assert_array_equal(mid, kept[0])


@pytest.mark.parametrize("name", ["shape-linear", "shape-cubic"])
def test_shape_based_midpoint_has_the_mean_radius(name):
    # Signed distances interpolate radii: halfway between r = 4 and r = 12 is r = 8
    # (clip = k * dz = 2 * 5 mm exceeds the 8 mm radius gap, so nothing is clipped away).
    kept = _growing_disk(2)
    mid = _call(name, kept, 2, (5.0, 1.0, 1.0))[1]
    area = int(mid.sum())
    ref = int(_disk(48, 8, 24, 24).sum())
    assert abs(area - ref) <= 0.06 * ref
    assert np.all(mid[kept[0] == 1] == 1)       # contains the small disk


def test_signed_distance_sign_clip_and_spacing():
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    sd = bl.signed_distance(m, (1.0, 2.0), clip=5.0)
    assert sd[4, 4] > 0 and (sd[~m] < 0).all()
    assert sd[4, 6] == pytest.approx(-4.0)        # 2 columns of 2 mm
    assert sd[0, 0] == pytest.approx(-5.0)        # clipped
    assert bl.signed_distance(np.zeros((3, 3), bool), (1, 1), 2.0).max() == -2.0


def test_contour_fills_between_and_respects_empty_kept_slices(worker):
    kept = _growing_disk(2)
    out = bl.contour(kept, 2, (2.0, 1.0, 1.0), worker=worker)
    mid = out[1]
    assert kept[0].sum() < mid.sum() < kept[1].sum()
    assert np.all(mid[kept[0] == 1] == 1)
    # An empty kept slice in the middle is annotated (the structure ends there): it stays
    # empty, and the slices next to it are not filled as if it were unknown.
    three = np.zeros((3, 48, 48), np.uint8)
    three[0][_disk(48, 10, 24, 24)] = 1
    three[2][_disk(48, 10, 24, 24)] = 1
    out = bl.contour(three, 2, (2.0, 1.0, 1.0), worker=worker)
    assert out[2].sum() == 0
    assert out[1].sum() < three[0].sum()


def test_contour_reports_bad_input(worker):
    with pytest.raises(InputError):
        bl.contour(np.zeros((1, 8, 8), np.uint8), 2, worker=worker)


# ----------------------------------------------------------------------------- a real case

PINNED_REAL_CT = {
    ("nearest", 2): (0.78117, 3.0327), ("linear", 2): (0.74651, 3.1194), ("shape-linear", 2): (0.78105, 3.1194),
    ("shape-cubic", 2): (0.84896, 3.0), ("contour", 2): (0.79637, 3.0016),
    ("nearest", 3): (0.77809, 3.3008), ("linear", 3): (0.77809, 3.3008), ("shape-linear", 3): (0.79611, 3.767),
    ("shape-cubic", 3): (0.81846, 3.552), ("contour", 3): (0.74425, 3.8869),
    ("nearest", 4): (0.72619, 4.7127), ("linear", 4): (0.71113, 4.8434), ("shape-linear", 4): (0.71959, 4.9442),
    ("shape-cubic", 4): (0.75133, 4.6894), ("contour", 4): (0.72474, 4.82),
}


def test_label_baselines_on_a_real_ct(shared_data, worker):
    from MedGSLib.io import read_volume

    lab = read_volume(shared_data / "ct_abdomen3mm_labels.nii.gz", kind="labels")
    ks = (2, 3, 4)
    plan = protocol.SlicePlan.build(lab.shape[0], ks)
    truth = lab.array[: plan.n_use]
    spacing = (lab.geometry.spacing[2], lab.geometry.spacing[1], lab.geometry.spacing[0])
    values = [v for v in np.unique(truth) if v != 0]
    for k in ks:
        held = protocol.heldout_mask(plan.n_use, k)
        dice = {}
        for name in bl.LABEL_BASELINES:
            pred = _call(name, truth[plan.kept(k)], k, spacing, worker=worker)
            s = metrics.label_scores(pred, truth, held, spacing, values)
            dice[name] = s["dice"]
            # deterministic methods: pinned (dice, hd95 mm) on this 3 mm case with thin ribs
            assert (s["dice"], s["hd95"]) == pytest.approx(PINNED_REAL_CT[(name, k)], abs=1e-4), (name, k)
        assert dice["shape-cubic"] >= dice["nearest"], (k, dice)
