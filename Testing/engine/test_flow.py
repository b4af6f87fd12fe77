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


def test_a_pairs_field_does_not_depend_on_what_else_is_fitted_with_it():
    # the loss is a sum of per-pair means: a pair's gradient, and so Adam's step, is the one it
    # gets alone (a mean over the batch scaled it by 1 / pairs, and Adam's epsilon then moved it)
    frames = torch.from_numpy(np.stack([disc(20), disc(23), disc(27), disc(31, 20.0), disc(30, 27.0)]))
    pairs = [(0, 1), (1, 2), (2, 3), (3, 4)]
    alone = flow.estimate(frames, pairs=pairs[:1])
    together = flow.estimate(frames, pairs=pairs)
    assert float((alone[0] - together[0]).abs().max()) < 1e-5


def _between(frames, fields, alpha, quads=None, cubic=True):
    """flow.image_between on frames [F, H, W] with the fields of each pair (i, i+1) given as a list."""
    frames = torch.as_tensor(np.stack(frames))
    d = torch.stack([torch.as_tensor(f) for f in fields])
    quads = quads or flow.consecutive_quads(frames.shape[0])
    return flow.image_between(frames, quads, flow.consecutive_fields(d), torch.full((len(quads),), alpha),
                              cubic=cubic)


def shift(dx, h=48, w=64):
    """A constant field of dx pixels along x."""
    d = np.zeros((2, h, w), np.float32)
    d[0] = dx
    return d


def test_image_between_moves_what_the_fields_explain():
    """A disc moving 8, 6 then 4 px per slice (slowing down) and the exact field of each gap:
    all four slices carried along the chained fields land on the disc at its in-between place,
    and the two-slice blend (cubic=False) gets it too."""
    frames = [disc(cx) for cx in (16.0, 24.0, 30.0, 34.0)]
    fields = [shift(8.0), shift(6.0), shift(4.0)]
    quad = [(0, 1, 2, 3)]
    truth = torch.from_numpy(disc(27.0))
    torch.testing.assert_close(_between(frames, fields, 0.5, quad)[0], truth, atol=1e-5, rtol=0)
    torch.testing.assert_close(_between(frames, fields, 0.5, quad, cubic=False)[0], truth, atol=1e-5, rtol=0)


def test_image_between_leaves_a_static_structure_alone_under_a_wrong_field():
    """The same disc on every slice and fields that (wrongly) move it 5 px: the unwarped pair
    agrees exactly, so the in-between image is the disc where it is; the pure motion blend
    would have moved it."""
    a = disc(30.0)
    out = _between([a] * 4, [shift(5.0)] * 3, 0.5)
    torch.testing.assert_close(out, torch.from_numpy(a)[None].expand(3, -1, -1), atol=0, rtol=0)
    a4 = torch.from_numpy(a)[None, None]
    half = torch.full((1,), 0.5)
    assert float((flow.blend(a4, a4.clone(), torch.from_numpy(shift(5.0))[None], half) - a4).abs().max()) \
        == pytest.approx(0.5)   # edges halved


def _constant_frames(values, h=8, w=8):
    return [np.full((h, w), v, np.float32) for v in values]


def test_the_cubic_follows_a_quadratic_ramp_along_z_where_linear_cannot():
    """Intensity (z + 1)^2 on slices z = 0..4, no motion: between slices 1 and 2 the cubic
    through slices 0..3 gives 2.5^2 = 6.25 exactly, linear 6.5. In the first gap (no slice
    before) the tangent is the pair's secant: 2.375, nearer the truth 2.25 than linear's 2.5."""
    frames = _constant_frames([1.0, 4.0, 9.0, 16.0, 25.0])
    zero = [np.zeros((2, 8, 8), np.float32)] * 4
    out = _between(frames, zero, 0.5)[:, 0, 0]
    torch.testing.assert_close(out, torch.tensor([2.375, 6.25, 12.25, 20.375]), atol=1e-5, rtol=0)
    lin = _between(frames, zero, 0.5, cubic=False)[:, 0, 0]
    torch.testing.assert_close(lin, torch.tensor([2.5, 6.5, 12.5, 20.5]), atol=1e-5, rtol=0)


def test_the_cubic_is_exact_for_a_quadratic_on_unequal_gaps():
    """A held-out frame's pair spans two gaps between neighbours one gap away (slices 1, 2, 4,
    5): the three-point tangents still reproduce (z + 1)^2, here 16 at z = 3."""
    frames = _constant_frames([(z + 1.0) ** 2 for z in range(6)])
    frames = torch.as_tensor(np.stack(frames))
    out = flow.image_between(frames, [(1, 2, 4, 5)], lambda pairs: torch.zeros(len(pairs), 2, 8, 8),
                             torch.full((1,), 0.5))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(16.0), atol=1e-5, rtol=0)


def test_the_cubic_does_not_overshoot_a_structure_that_appears():
    """Slices 0, 0, 0, 1 (a structure appears on the fourth): an unlimited Catmull-Rom cubic
    dips to -0.0625 half-way between the second and third slices; the limited tangents
    (the secants on either side of each node do not both rise) keep it at 0."""
    frames = _constant_frames([0.0, 0.0, 0.0, 1.0])
    out = _between(frames, [np.zeros((2, 8, 8), np.float32)] * 3, 0.5, [(0, 1, 2, 3)])
    torch.testing.assert_close(out, torch.zeros(1, 8, 8), atol=0, rtol=0)


def test_interpolate_with_two_frames_is_the_two_slice_blend():
    """No frame on either side of the only pair: the cubic is the line through the pair."""
    frames = torch.from_numpy(np.stack([disc(24), disc(32)]))
    d = flow.estimate(frames)
    quads = flow.consecutive_quads(2)
    for a in (0.25, 0.5):
        al = torch.full((1,), a)
        torch.testing.assert_close(flow.image_between(frames, quads, flow.consecutive_fields(d), al),
                                   flow.image_between(frames, quads, flow.consecutive_fields(d), al, cubic=False),
                                   atol=1e-6, rtol=0)


def test_pair_fields_of_a_frame_with_itself_are_zero_and_never_fitted():
    """A two-frame stack: the pair's neighbours are the pair's own frames (`four_slices`), whose
    field is zero; only the real pair is fitted."""
    from MedGSLib.config import FlowConfig
    frames = torch.from_numpy(np.stack([disc(24), disc(32)]))
    pf = flow.PairFields(frames, FlowConfig(levels=2, iterations=5))
    got = pf.stack([(0, 0), (0, 1), (1, 1)])
    assert list(pf._fields) == [(0, 1)]
    assert torch.count_nonzero(got[0]) == 0 and torch.count_nonzero(got[2]) == 0
    torch.testing.assert_close(got[1], pf._fields[(0, 1)], atol=0, rtol=0)
    quads = flow.four_slices([(0, 1)], {1: 0}, {0: 1})
    assert quads == [(0, 0, 1, 1)]
    al = torch.full((1,), 0.5)
    torch.testing.assert_close(flow.image_between(frames, quads, pf.stack, al),
                               flow.image_between(frames, quads, pf.stack, al, cubic=False), atol=1e-6, rtol=0)


def test_confidence_weights_by_the_inverse_rms_residuals():
    """An edge at x = 20 on one slice and x = 28 on the next, a field of 4 px (half the motion)
    and alpha 0.25. At x = 25 the unwarped pair differs over all of the 5 px window (r_fade =
    1) and the warped one over 2 of its 5 columns (r_motion = 0.4); the motion guess there is
    1, the cross-fade 0.75. Motion weight 1 / (1 + sqrt(0.4)) gives 0.75 + 0.25 * 0.6126 =
    0.9031 (inverse mean squares would give 1 / 1.4, 0.9286)."""
    xx = np.arange(48)[None].repeat(16, 0)
    frames = torch.from_numpy(np.stack([(xx >= 20), (xx >= 28)]).astype(np.float32))
    quads = flow.consecutive_quads(2)
    out = flow.image_between(frames, quads, flow.consecutive_fields(torch.from_numpy(shift(4.0, 16, 48))[None]),
                             torch.full((1,), 0.25))
    torch.testing.assert_close(out[0, 8, 25], torch.tensor(0.75 + 0.25 / (1 + 0.4 ** 0.5)), atol=1e-6, rtol=0)
