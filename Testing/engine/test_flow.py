"""flow.py: the motion-compensated in-between targets (CPU)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from MedGSLib import flow  # noqa: E402


def disc(cx, cy=24.0, r=7.0, h=48, w=64):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(r + 0.5 - np.hypot(xx - cx, yy - cy), 0, 1).astype(np.float32)


def test_blend_returns_the_end_frames_at_alpha_0_and_1():
    a = torch.rand(2, 1, 16, 20)
    b = torch.rand(2, 1, 16, 20)
    d = torch.randn(2, 2, 16, 20)
    torch.testing.assert_close(flow.blend(a, b, d, torch.zeros(2)), a)
    torch.testing.assert_close(flow.blend(a, b, d, torch.ones(2)), b)


def test_warp_by_whole_pixels_shifts_the_image():
    img = torch.from_numpy(disc(30))[None, None]
    d = torch.zeros(1, 2, 48, 64)
    d[:, 0] = 4.0                                  # sample 4 px to the right
    shifted = flow.warp(img, d)[0, 0]
    torch.testing.assert_close(shifted[:, :-4], img[0, 0, :, 4:])


def test_a_moving_disc_is_moved_not_cross_faded():
    """A disc 8 px further right on the next slice: the flow blend puts one disc half-way, where
    the linear blend shows two half-bright discs."""
    frames = torch.from_numpy(np.stack([disc(24), disc(32)]))
    d = flow.estimate(frames)
    assert d.shape == (1, 2, 48, 64)
    inside = torch.from_numpy(disc(28) > 0.5)
    assert abs(float(d[0, 0][inside].mean()) - 8.0) < 1.5     # x displacement A -> B
    assert abs(float(d[0, 1][inside].mean())) < 1.0           # no vertical motion
    mid = flow.interpolate(frames, 2, d)
    truth = torch.from_numpy(disc(28))
    err_flow = float((mid[1] - truth).abs().mean())
    err_linear = float((0.5 * (frames[0] + frames[1]) - truth).abs().mean())
    assert err_flow < 0.5 * err_linear
    torch.testing.assert_close(mid[0], frames[0])            # kept frames are kept
    torch.testing.assert_close(mid[2], frames[1])


def test_estimate_on_given_pairs():
    frames = torch.from_numpy(np.stack([disc(20), disc(26), disc(32)]))
    d = flow.estimate(frames, pairs=[(0, 2)])
    inside = torch.from_numpy(disc(26) > 0.5)
    assert abs(float(d[0, 0][inside].mean()) - 12.0) < 2.0


def test_image_blend_moves_what_the_field_explains():
    """The right field for a disc 8 px further right: the warped pair agrees exactly, so the
    image blend is the motion blend (one disc half-way)."""
    a, b = (torch.from_numpy(disc(cx))[None, None] for cx in (28.0, 36.0))
    d = torch.zeros(1, 2, 48, 64)
    d[:, 0] = 8.0
    half = torch.full((1,), 0.5)
    torch.testing.assert_close(flow.image_blend(a, b, d, half), flow.blend(a, b, d, half), atol=1e-5, rtol=0)
    torch.testing.assert_close(flow.image_blend(a, b, d, half)[0, 0], torch.from_numpy(disc(32.0)),
                               atol=1e-5, rtol=0)


def test_image_blend_leaves_a_static_structure_alone_under_a_wrong_field():
    """The same disc on both slices and a field that (wrongly) moves it 5 px: the unwarped pair
    agrees exactly, so the image blend is the cross-fade, i.e. the disc where it is; the pure
    motion blend would have moved it."""
    a = torch.from_numpy(disc(30.0))[None, None]
    d = torch.zeros(1, 2, 48, 64)
    d[:, 0] = 5.0
    half = torch.full((1,), 0.5)
    torch.testing.assert_close(flow.image_blend(a, a.clone(), d, half), a, atol=0, rtol=0)
    assert float((flow.blend(a, a.clone(), d, half) - a).abs().max()) == pytest.approx(0.5)   # edges halved
