"""Classical intensity baselines: kept slices unchanged, exact where they must be, sane where not."""
from __future__ import annotations

import numpy as np
import pytest

from MedGSLib.errors import InputError
from MedGSLib.evaluation import baselines_intensity as bi
from MedGSLib.evaluation import metrics, protocol

SPACING = (2.5, 0.8, 0.8)


@pytest.mark.parametrize("name", sorted(bi.INTENSITY_BASELINES))
@pytest.mark.parametrize("k", [2, 3, 4])
def test_kept_slices_come_back_unchanged(name, k):
    rng = np.random.default_rng(k)
    kept = rng.normal(100.0, 30.0, size=(5, 24, 20)).astype(np.float32)
    full = bi.INTENSITY_BASELINES[name](kept, k, SPACING)
    assert full.shape == (4 * k + 1, 24, 20)
    assert full.dtype == np.float32
    np.testing.assert_array_equal(full[::k], kept)
    assert np.all(np.isfinite(full))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_linear_is_exact_on_data_linear_along_slices(k):
    rng = np.random.default_rng(0)
    a = rng.uniform(-500, 500, size=(1, 16, 16))
    b = rng.uniform(-20, 20, size=(1, 16, 16))
    z = np.arange(4 * k + 1, dtype=np.float64)[:, None, None]
    truth = (a + b * z).astype(np.float32)
    out = bi.linear(truth[::k], k)
    np.testing.assert_allclose(out, truth, rtol=0, atol=1e-3)


def test_nearest_takes_the_nearest_kept_slice_ties_to_the_earlier():
    kept = np.arange(3, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    out = bi.nearest(kept, 4)
    # full slices 0..8 with kept at 0, 4, 8: 0 0 0(tie) 1 1 1 1(tie) 2 2
    np.testing.assert_array_equal(out[:, 0, 0], [0, 0, 0, 1, 1, 1, 1, 2, 2])


def test_bspline_beats_linear_on_a_smooth_profile():
    z = np.arange(25, dtype=np.float64)
    profile = np.sin(z * 0.35)
    truth = (profile[:, None, None] * np.ones((1, 16, 16))).astype(np.float32)
    k = 3
    held = protocol.heldout_mask(25, k)
    lin = metrics.psnr_pooled(np.clip((bi.linear(truth[::k], k) + 1) / 2, 0, 1), (truth + 1) / 2, held)
    spl = metrics.psnr_pooled(np.clip((bi.bspline(truth[::k], k, (1.0, 1.0, 1.0)) + 1) / 2, 0, 1),
                              (truth + 1) / 2, held)
    assert spl > lin + 1.5      # measured: +3.0 dB


def _blob_sequence(n, shift_per_slice, size=64, sigma=4.0):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = []
    for z in range(n):
        cx = 16.0 + shift_per_slice * z
        frames.append(1000.0 * np.exp(-((xx - cx) ** 2 + (yy - 32.0) ** 2) / (2 * sigma**2)))
    return np.stack(frames).astype(np.float32)


def test_optical_flow_follows_motion_that_linear_blurs():
    # A blob moving 2 px per slice: kept slices (k = 2) are 4 px apart. Motion-compensated
    # interpolation puts the blob in between; linear cross-fades two half-bright blobs.
    truth = _blob_sequence(9, 2.0)
    k = 2
    held = protocol.heldout_mask(9, k)
    rng = metrics.unit_range(truth)
    flow = metrics.intensity_scores(bi.optical_flow(truth[::k], k), truth, held, rng)["psnr"]
    lin = metrics.intensity_scores(bi.linear(truth[::k], k), truth, held, rng)["psnr"]
    assert flow > lin + 20.0    # measured: 105 dB against 39 dB
    # The blob's peak lands within a pixel of the true position.
    mid = bi.optical_flow(truth[::k], k)[1]
    assert abs(int(np.argmax(mid.max(axis=0))) - 18) <= 1


def test_eight_bit_copies_clip_to_the_given_range():
    a = np.array([[-10.0, 0.0, 50.0, 100.0, 1e6]], np.float32)
    np.testing.assert_array_equal(bi.eight_bit(a, 0.0, 100.0), [[0, 0, 128, 255, 255]])


def test_bad_input_is_rejected():
    with pytest.raises(InputError):
        bi.linear(np.zeros((1, 4, 4)), 2)
    with pytest.raises(InputError):
        bi.linear(np.zeros((4, 4)), 2)
