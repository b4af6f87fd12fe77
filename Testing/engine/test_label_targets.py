"""label_targets: motion-compensated shape interpolation of the label heads' in-between targets."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from MedGSLib import label_targets as lt  # noqa: E402

H, W = 48, 64


def disc(cx, cy, r):
    yy, xx = np.mgrid[0:H, 0:W]
    return (np.hypot(xx - cx, yy - cy) <= r).astype(np.float32)


def sd_of(*masks, clip):
    """[P = 1, C = len(masks), H, W] signed distances of single-frame masks."""
    m = torch.from_numpy(np.stack(masks))[:, None]              # [C, A = 1, H, W]
    return lt.signed_distances(m, clip).transpose(0, 1).float()


def centre_and_extent(mask):
    """Centroid (x, y) and the widths along x and y of a mask [H, W]."""
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_two_discs_without_motion_meet_half_way():
    """Zero field, discs 6 px apart: at alpha 0.5 the shape is centred half-way, 2R wide along the
    shift and sqrt(R^2 - 3^2)*2 across (the zero level of the mean distance is that ellipse)."""
    a, b = disc(26, 24, 10), disc(32, 24, 10)
    sd = sd_of(a, b, clip=16)
    out = lt.shape_between(sd[:, :1], sd[:, 1:], torch.zeros(1, 2, H, W), torch.tensor([0.5]))[0, 0].numpy()
    cx, cy, wx, wy = centre_and_extent(out)
    assert (cx, cy) == (pytest.approx(29.0, abs=1e-6), pytest.approx(24.0, abs=1e-6))
    # pixel centres covered: 2R + 1 along the shift, 2 floor(sqrt(R^2 - 9)) + 1 across
    assert (wx, wy) == (21, 2 * math.floor(math.sqrt(100 - 9)) + 1)
    # the mask cross-fade's 0.5 level is instead the union of the two discs: 6 px wider
    from MedGSLib.flow import blend
    fade = blend(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None],
                 torch.zeros(1, 2, H, W), torch.tensor([0.5]))[0, 0].numpy() >= 0.5
    assert centre_and_extent(fade)[2] == 27


def test_translated_disc_with_its_true_field_moves_by_alpha_shift():
    """B is A moved 8 px along x; the half-way field is then 8 px everywhere and the target at
    alpha is the disc moved by 8 alpha, of the same size."""
    a, b = disc(24, 24, 9), disc(32, 24, 9)
    sd = sd_of(a, b, clip=lt.CLIP_PX)
    d = torch.zeros(1, 2, H, W)
    d[:, 0] = 8.0
    for alpha in (0.25, 0.5, 0.75):
        out = lt.shape_between(sd[:, :1], sd[:, 1:], d, torch.tensor([alpha]))[0, 0].numpy()
        cx, cy, wx, wy = centre_and_extent(out)
        assert cx == pytest.approx(24 + 8 * alpha, abs=0.05)
        assert cy == pytest.approx(24.0, abs=1e-6)
        assert (wx, wy) == (pytest.approx(19, abs=1), 19)


def test_a_label_absent_on_one_side_shrinks_to_nothing():
    """sd = -clip on the empty side: at alpha the mask keeps the part deeper than
    clip alpha / (1 - alpha), and is empty from alpha 0.5 on (no half-strength cross-fade)."""
    clip = 6.0
    a = disc(32, 24, 10)
    sd = sd_of(a, np.zeros_like(a), clip=clip)
    zero = torch.zeros(1, 2, H, W)
    radius = []
    for alpha in (0.0, 0.25, 0.5, 0.75):
        out = lt.shape_between(sd[:, :1], sd[:, 1:], zero, torch.tensor([alpha]))[0, 0].numpy()
        radius.append(math.sqrt(out.sum() / math.pi))
    assert radius[0] == pytest.approx(10, abs=0.5)
    assert radius[1] == pytest.approx(10 - clip * 0.25 / 0.75, abs=0.6)
    assert radius[2:] == [0.0, 0.0]


def test_soft_band_ramps_over_the_blended_distance():
    """band 4: p = 0.5 + s / 4 clamped; across the left edge of a disc (x = 22 first inside) the
    distances are -2, -1, 1, sqrt(2) (the nearest background of x = 23 is diagonal)."""
    a = disc(32, 24, 10)
    sd = sd_of(a, a, clip=lt.CLIP_PX)
    out = lt.shape_between(sd[:, :1], sd[:, 1:], torch.zeros(1, 2, H, W), torch.tensor([0.3]), band=4.0)[0, 0]
    assert out[24, 20:24].tolist() == pytest.approx([0.0, 0.25, 0.75, 0.5 + math.sqrt(2) / 4], abs=1e-3)
    assert out[24, 32].item() == 1.0


def test_signed_distances_in_boxes_equal_the_whole_frame_rule():
    rng = np.random.default_rng(3)
    m = np.zeros((2, 3, H, W), dtype=np.float32)
    m[0, 0] = disc(12, 12, 5)
    m[0, 2] = disc(16, 14, 4)                                  # label 0 absent on frame 1
    m[1, :, 30:40, 40:60] = rng.random((3, 10, 20)) > 0.3
    got = lt.signed_distances(torch.from_numpy(m), 3.0)
    assert got.dtype == torch.float16 and got.shape == m.shape
    for c in range(2):
        for f in range(3):
            want = lt.signed_distance(m[c, f] > 0.5, (1.0, 1.0), 3.0).astype(np.float16)
            assert np.array_equal(got[c, f].numpy(), want)


def test_cubic_reproduces_a_linearly_growing_disc_and_a_translation():
    """Concentric discs of radius 6, 8, 10, 12 with zero fields: Catmull-Rom is exact on a linear
    profile, so between the inner two at alpha 0.5 the radius is 9. Four discs 4 px apart with
    their true 4 px fields: the target at alpha 0.25 between the inner two is moved by 1 px."""
    masks = [disc(32, 24, r) for r in (6, 8, 10, 12)]
    sd = sd_of(*masks, clip=16)[0][:, None, None]                 # [4, P = 1, C = 1, H, W]
    zero = torch.zeros(1, 2, H, W)
    out = lt.shape_between_cubic(sd, zero, zero, zero, torch.tensor([0.5]))[0, 0].numpy()
    assert math.sqrt(out.sum() / math.pi) == pytest.approx(9.0, abs=0.5)
    masks = [disc(20 + 4 * i, 24, 7) for i in range(4)]
    sd = sd_of(*masks, clip=lt.CLIP_PX)[0][:, None, None]
    d = torch.zeros(1, 2, H, W)
    d[:, 0] = 4.0
    out = lt.shape_between_cubic(sd, d, d, d, torch.tensor([0.25]))[0, 0].numpy()
    cx, cy, wx, wy = centre_and_extent(out)
    assert (cx, cy) == (pytest.approx(25.0, abs=0.05), pytest.approx(24.0, abs=1e-6))
    assert (wx, wy) == (pytest.approx(15, abs=1), 15)


def test_trainer_targets_on_a_sparse_annotation_follow_the_chained_fields():
    """Labels on frames 0, 3, 6 of a disc moving 2 px a frame, the pairs' fields set to the true
    motion (6 px), alpha 1/3: every target variant is the disc moved by 2 px (exactly: a whole
    pixel), for the cubic one with the outer frames carried by their own pair's field."""
    from MedGSLib.api import default_config
    from MedGSLib.train import Trainer
    h, w = 24, 40
    yy, xx = np.mgrid[0:h, 0:w]
    frames = torch.from_numpy(np.stack([np.hypot(xx - 10 - 2 * f, yy - 12) <= 6 for f in range(7)])).float()
    masks = torch.zeros(1, 7, h, w)
    masks[0, [0, 3, 6]] = frames[[0, 3, 6]]
    for target in ("shape-cubic", "shape", "blend"):
        cfg = default_config("fast", "cpu", iterations=1)
        cfg.loss.seg_ibfr_target = target
        cfg.loss.ibfr_alpha = (1 / 3, 1 / 3)
        tr = Trainer(frames, cfg, masks=masks, mask_frames=[0, 3, 6], pipeline="joint")
        for pair in ((0, 3), (3, 6)):
            tr.flow._fields[pair] = torch.stack([torch.full((h, w), 6.0), torch.zeros(h, w)])
        t, targets = tr._seg_between(2)
        out = targets(torch.arange(1))[:, 0].numpy()
        times = tr.times.tolist()
        centres = []
        for tj, m in zip(t.tolist(), out):
            a = 0 if tj < times[3] else 3
            assert (tj - times[a]) / (times[a + 3] - times[a]) == pytest.approx(1 / 3)
            assert np.array_equal(m >= 0.5, frames[a + 1].numpy() > 0), target
            centres.append(a)
        assert sorted(centres) == [0, 3]


def test_an_unknown_label_target_is_one_clear_error():
    from MedGSLib.api import default_config
    from MedGSLib.errors import InputError
    from MedGSLib.train import Trainer
    cfg = default_config("fast", "cpu", iterations=1)
    cfg.loss.seg_ibfr_target = "contour"
    with pytest.raises(InputError, match="label in-between target 'contour'"):
        Trainer(torch.zeros(3, 8, 8), cfg, masks=torch.zeros(1, 3, 8, 8), pipeline="joint")


def test_a_sparse_annotation_trains_with_the_cubic_target():
    """Labels on frames 0, 3, 5 only, the cubic target: the label head learns and the run finishes."""
    from MedGSLib.api import default_config
    from MedGSLib.train import Trainer
    yy, xx = np.mgrid[0:24, 0:28]
    frames = torch.from_numpy(np.stack([np.hypot(xx - 8 - 2 * f, yy - 12) <= 4 + 0.5 * f
                                        for f in range(6)]).astype(np.float32))
    masks = torch.zeros(1, 6, 24, 28)
    masks[0, [0, 3, 5]] = frames[[0, 3, 5]]
    cfg = default_config("fast", "cpu", iterations=8)
    cfg.model.num_points = 600
    cfg.schedule.ibfr_from = 0.0
    cfg.loss.seg_ibfr_target = "shape-cubic"
    tr = Trainer(frames, cfg, masks=masks, mask_frames=[0, 3, 5], pipeline="joint")
    assert tr._sd.shape == (1, 3, 24, 28) and tr._sd_row.tolist() == [0, -1, -1, 1, -1, 2]
    before = tr.model.params["seg_color"].detach().clone()
    tr.train()
    assert not torch.equal(before, tr.model.params["seg_color"][: before.shape[0]])


def test_annotated_quads_repeat_the_end_frames():
    (i0, ia, ib, i3), gaps = lt.annotated_quads([0, 2, 5, 9], [0, 1, 2])
    assert (i0, ia, ib, i3) == ([0, 0, 2], [0, 2, 5], [2, 5, 9], [5, 9, 9])
    assert gaps == [[2, 2, 3], [2, 3, 4], [3, 4, 4]]


def test_cubic_between_a_widening_band_is_the_band_of_the_middle_width():
    """A vertical band of half-widths 2, 4, 6, 8 px on four frames, no motion: the signed distances
    grow linearly, the spline reproduces them, and half-way between frames 1 and 2 lies the band
    of half-width 5."""
    h, w = 8, 40
    xx = np.arange(w)[None, :].repeat(h, 0)

    def band(half):
        return (np.abs(xx - 20) <= half).astype(np.float32)
    sd = torch.stack([torch.from_numpy(lt.signed_distance(band(r) > 0, (1.0, 1.0), lt.CLIP_PX))
                      for r in (2, 4, 6, 8)])[:, None]                  # [A, C=1, H, W]
    zero = lambda pairs: torch.zeros(len(pairs), 2, h, w)                # noqa: E731
    out = lt.cubic_between(lambda fr: sd[list(fr)], zero, [0, 1, 2, 3], [1], torch.tensor([0.5]))
    assert np.array_equal(out[0, 0].numpy() > 0, band(5) > 0)


def test_clipped_distances_equal_the_distance_transform_rule():
    """The GPU path of `signed_distances` (direct search) gives `signed_distance`'s values exactly:
    random blobs touching the frame's edges, an empty and a full frame, clips 4 and 2.5."""
    rng = np.random.default_rng(3)
    from scipy.ndimage import binary_opening
    masks = np.stack([binary_opening(rng.random((23, 31)) < 0.55) for _ in range(4)]
                     + [np.zeros((23, 31), bool), np.ones((23, 31), bool)])
    for clip in (4.0, 2.5):
        want = np.stack([lt.signed_distance(m, (1.0, 1.0), clip) for m in masks])
        got = lt.clipped_distances(torch.from_numpy(masks), clip).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
