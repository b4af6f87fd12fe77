"""Self-validation (selfcheck.py): the split, the choice, and that training never sees the held-out frames."""
import numpy as np
import pytest

from MedGSLib import selfcheck


def test_pick_validation_spreads_interior_frames():
    assert selfcheck.pick_validation(4) == []
    assert selfcheck.pick_validation(5) == [2]
    assert selfcheck.pick_validation(25) == [6, 12, 18]
    # sparse annotation: only frames without labels are held out
    assert selfcheck.pick_validation(25, list(range(0, 25, 3))) == [7, 13, 19]


def test_choose_scores_every_candidate():
    truth = np.full((2, 4, 4), 0.5, np.float32)
    model = truth + 0.1          # model off by 0.1, blend off by -0.1: their mean is exact
    blend = truth - 0.1
    linear = truth + 0.2
    rec = selfcheck.choose(model, blend, linear, truth)
    assert rec["choice"] == "model_0.5" and rec["model_weight"] == 0.5
    assert rec["psnr"]["model_1"] == pytest.approx(20.0)
    assert rec["psnr"]["linear"] == pytest.approx(-10 * np.log10(0.04))
    assert rec["model_gain_db"] == pytest.approx(20.0 + 10 * np.log10(0.04))
    worse = selfcheck.choose(truth + 0.3, None, linear, truth)
    assert worse["choice"] == "linear" and worse["model_weight"] is None and worse["gain_db"] == 0.0


def test_deliver_linear_and_mix():
    frames = np.stack([np.zeros((2, 2)), np.ones((2, 2))]).astype(np.float32)
    pos = np.array([0.0, 0.25, 0.5, 1.0])
    img = np.full((4, 2, 2), 9.0, np.float32)
    out = selfcheck.deliver(img.copy(), pos, frames, {"model_weight": None})
    np.testing.assert_allclose(out[:, 0, 0], [9.0, 0.25, 0.5, 9.0])
    import torch
    zero = torch.zeros(1, 2, 2, 2)       # no motion: the blend is the cross-fade
    out = selfcheck.deliver(img.copy(), pos, frames, {"model_weight": 0.5}, zero)
    np.testing.assert_allclose(out[:, 0, 0], [9.0, 0.5 * 9 + 0.5 * 0.25, 0.5 * 9 + 0.5 * 0.5, 9.0], rtol=1e-6)


def test_training_never_sees_held_out_frames(monkeypatch):
    """Two runs that differ only in the held-out frame's content have identical models when
    the held-out frame is folded in, and differ in what the self-check measured."""
    import torch
    from MedGSLib.config import preset
    from MedGSLib.train import Trainer
    rng = np.random.default_rng(0)
    base = rng.random((7, 16, 16)).astype(np.float32)
    cfg = preset("fast")
    cfg.device, cfg.renderer = "cpu", "torch"
    cfg.schedule.iterations = 40
    cfg.model.num_points = 300
    cfg.model.max_gaussians = 600
    cfg.schedule.ibfr_from = 0.0         # motion-fitted in-between targets from the start: across
    assert cfg.loss.ibfr_target == "flow"  # the held-out frame, from fields that never saw it
    seen = {}
    orig = Trainer._fold_in

    def capture(self, step, iters):
        seen.setdefault("params", []).append({k: v.detach().clone() for k, v in self.model.params.items()})
        seen.setdefault("pairs_across", []).extend(p for p in self._image_pairs() if p[1] - p[0] == 2)
        return orig(self, step, iters)
    monkeypatch.setattr(Trainer, "_fold_in", capture)
    records = []
    for fill in (0.0, 1.0):
        frames = base.copy()
        frames[3] = fill
        tr = Trainer(torch.from_numpy(frames), cfg, holdout=[3])
        res = tr.train()
        records.append(res.info["self_check"])
    a, b = seen["params"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert records[0]["frames"] == [3] and records[0]["psnr"] != records[1]["psnr"]
    assert seen["pairs_across"] == [(2, 4)] * 2


def test_lanczos_across_slices():
    """Exact on the frames, exact on a ramp (symmetric normalised weights), the windowed-sinc
    weights of x = +-0.5, 1.5, 2.5 elsewhere."""
    rng = np.random.default_rng(1)
    frames = rng.random((9, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(selfcheck.lanczos_z(frames, [0, 4, 8]), frames[[0, 4, 8]])
    ramp = (np.arange(9, dtype=np.float32)[:, None, None] * 0.1 + 0.2) * np.ones((1, 3, 4), np.float32)
    np.testing.assert_allclose(selfcheck.lanczos_z(ramp, [4.5])[0], 0.65, atol=1e-6)
    x = 4.5 - np.arange(2, 8)
    w = np.sinc(x) * np.sinc(x / 3)
    np.testing.assert_allclose(selfcheck.lanczos_z(frames, [4.5])[0], np.tensordot(w / w.sum(), frames[2:8], 1),
                               atol=1e-6)
    assert w[0] == pytest.approx(0.02431, abs=1e-5) and w[2] == pytest.approx(0.60793, abs=1e-5)


def test_held_out_lanczos_never_reads_the_held_out_frame_and_can_be_delivered():
    rng = np.random.default_rng(2)
    frames = rng.random((13, 4, 5)).astype(np.float32)
    other = frames.copy()
    other[6] = 0.0
    est = selfcheck.held_out_lanczos(frames, [6])
    np.testing.assert_array_equal(est, selfcheck.held_out_lanczos(other, [6]))
    np.testing.assert_allclose(est[0], selfcheck.lanczos_z(frames[[1, 3, 5, 7, 9, 11]], [2.5])[0], atol=1e-7)
    truth = np.full_like(est, 0.5)
    rec = selfcheck.choose(truth + 0.3, None, truth + 0.2, truth, truth + 0.01)
    assert rec["choice"] == "lanczos" and rec["model_weight"] is None
    assert rec["gain_db"] == pytest.approx(10 * np.log10(0.04 / 0.0001), abs=1e-3)
    pos = np.array([0.0, 0.5, 1.0, 6.25])
    out = selfcheck.deliver(np.zeros((4, 4, 5), np.float32), pos, frames, rec)
    np.testing.assert_array_equal(out[[0, 2]], 0.0)                 # kept positions left alone
    np.testing.assert_allclose(out[[1, 3]], selfcheck.lanczos_z(frames, [0.5, 6.25]), atol=1e-7)


def test_classical_evidence_one_sided_t_bound():
    ev = selfcheck.classical_evidence([21.0, 22.0, 23.0], [20.0, 21.0, 22.0])      # +1 dB on every frame
    assert ev == {"frames": 3, "mean_db": 1.0, "lower_db": 1.0, "significant": True}
    ev = selfcheck.classical_evidence([20.5, 20.0], [20.0, 20.1])       # mean +0.2, sd 0.4243, t(1) 6.314
    assert ev["frames"] == 2 and not ev["significant"]
    assert ev["lower_db"] == pytest.approx(0.2 - 6.314 * np.sqrt(0.18) / np.sqrt(2))
    assert selfcheck.classical_evidence([21.0], [20.0])["significant"] is False     # one frame is no evidence


def test_interior_quads_every_other_frame_at_twice_the_gap():
    assert selfcheck.interior_quads(4) == []
    assert selfcheck.interior_quads(8) == [(0, 0, 2, 4), (0, 2, 4, 6), (2, 4, 6, 6)]
    assert selfcheck.interior_quads(9) == [(0, 0, 2, 4), (0, 2, 4, 6), (2, 4, 6, 8), (4, 6, 8, 8)]


def test_a_classical_method_needs_evidence_beyond_the_held_out_frames():
    truth = np.full((1, 4, 4), 0.5, np.float32)
    model, blend, linear = truth + 0.105, truth + 0.11, truth + 0.1     # linear best on the one frame
    favour_blend = {"blend": [30.0, 31.0, 29.0], "linear": [28.0, 30.5, 29.0], "lanczos": [27.0, 27.0, 27.0]}
    rec = selfcheck.choose(model, blend, linear, truth, None, favour_blend)
    # the in-between image, which the evidence is about, not the mix that measured best of MedGS's
    assert rec["psnr"]["model_1"] > rec["psnr"]["blend"]
    assert rec["measured_best"] == "linear" and rec["choice"] == "blend" and rec["model_weight"] == 0.0
    assert rec["evidence"]["method"] == "linear" and not rec["evidence"]["significant"]
    # held out: below linear; reported: the in-between image's gain over the 3 interior frames
    # ((2 + 0.5 + 0) / 3 dB) plus what the choice adds to it on the held-out frame (nothing: it is it)
    assert rec["heldout_gain_db"] == pytest.approx(20 * np.log10(0.1 / 0.11), abs=1e-5)     # float32
    assert rec["gain_db"] == pytest.approx(2.5 / 3) and rec["estimate_frames"] == 3
    favour_linear = {"blend": [28.0, 29.0, 30.0], "linear": [29.0, 30.1, 31.0]}
    rec = selfcheck.choose(model, blend, linear, truth, None, favour_linear)
    assert rec["choice"] == "linear" and rec["evidence"]["significant"]


def test_the_reported_gain_takes_the_basis_from_the_interior_frames():
    """A mix's estimate: the in-between image's mean per-frame gain over linear on the interior
    frames plus the mix's lead over the in-between image on the held-out frames; a classical
    choice's: its own interior gain (linear: 0)."""
    truth = np.full((1, 4, 4), 0.5, np.float32)
    model, blend, linear = truth + 0.05, truth + 0.1, truth + 0.2      # the model best held out
    interior = {"blend": [30.0, 31.0], "linear": [29.5, 30.0], "lanczos": [29.0, 29.0]}
    rec = selfcheck.choose(model, blend, linear, truth, None, interior)
    assert rec["choice"] == "model_1" and rec["estimate_frames"] == 2
    lead = rec["psnr"]["model_1"] - rec["psnr"]["blend"]
    assert lead == pytest.approx(20 * np.log10(2.0), abs=1e-4)
    assert rec["gain_db"] == pytest.approx(0.75 + lead)
    assert rec["heldout_gain_db"] == pytest.approx(20 * np.log10(4.0), abs=1e-4)
    lin = selfcheck.choose(model, blend, linear, truth, None, interior, deliver="linear")
    assert lin["gain_db"] == 0.0 and lin["estimate_frames"] == 2
    alone = selfcheck.choose(model, blend, linear, truth)                # no interior frames: held out only
    assert alone["gain_db"] == alone["heldout_gain_db"] and alone["estimate_frames"] == 0


def test_deliver_names_a_candidate():
    from MedGSLib.errors import InputError
    truth = np.full((1, 4, 4), 0.5, np.float32)
    model, blend, linear = truth + 0.1, truth + 0.2, truth + 0.3
    assert selfcheck.choose(model, blend, linear, truth)["choice"] == "model_1"
    rec = selfcheck.choose(model, blend, linear, truth, deliver="linear")
    assert rec["choice"] == "linear" and rec["measured_best"] == "model_1" and rec["gain_db"] == 0.0
    assert selfcheck.choose(model, blend, linear, truth, deliver="blend")["model_weight"] == 0.0
    with pytest.raises(InputError, match="lanczos"):
        selfcheck.choose(model, blend, linear, truth, deliver="lanczos")     # not computed in this run


def test_the_user_is_told_either_way():
    kept = {"choice": "model_0.5", "measured_best": "linear", "frames": [3], "model_gain_db": -0.31,
            "gain_db": -0.30, "psnr": {"linear": 20.14, "model_0.5": 19.84},
            "evidence": {"frames": 3, "mean_db": -0.44, "lower_db": -2.0, "significant": False, "method": "linear"}}
    assert selfcheck.self_check_warning(kept) == (
        "self-check: on 1 held-out kept slices linear interpolation measured 0.30 dB better than MedGS (model_0.5); "
        "over 3 kept slices at twice the gap MedGS's in-between image was +0.44 dB against it, not significantly "
        "worse, so MedGS is delivered; --set schedule.deliver=linear gives linear interpolation")
    lin = {"choice": "linear", "measured_best": "linear", "frames": [3, 9], "model_gain_db": -0.5, "gain_db": 0.0}
    assert selfcheck.self_check_warning(lin).endswith("is linear interpolation; --set schedule.deliver=model "
                                                     "gives the MedGS result")
    lan = {"choice": "lanczos", "measured_best": "lanczos", "frames": [3], "model_gain_db": -0.5,
           "gain_db": 0.12, "heldout_gain_db": 0.4}       # held out: what the slices measured
    assert " and Lanczos measured best (+0.40 dB)" in selfcheck.self_check_warning(lan)
    assert selfcheck.self_check_warning({"choice": "model_1", "measured_best": "model_1"}) == ""


def test_choose_labels_takes_the_best_medgs_labels_and_names_linear():
    truth = np.zeros((1, 4, 4), np.uint8)
    truth[0, :2, :2] = 1                                   # 4 voxels of label 1
    heads = truth.copy()
    heads[0, 0, 2] = 1                                     # one voxel too many: Dice 8/9
    between = truth.copy()                                 # the in-between labels are exact
    cands = {"model_1": heads, "model_0.5": heads, "blend": between, "linear": np.zeros_like(truth)}
    rec = selfcheck.choose_labels(cands, truth)
    assert rec["label_choice"] == "blend" and rec["label_measured_best"] == "blend"
    assert rec["dice_model"] == pytest.approx(8 / 9) and rec["dice_linear"] == 0.0
    assert rec["dice_gain"] == 1.0                        # what the user gets, against linear
    assert selfcheck.label_weight(rec) == 0.0
    # a tie goes to the heads; linear measured best is named, not delivered
    rec = selfcheck.choose_labels({"model_1": heads, "model_0.5": heads, "blend": heads, "linear": truth}, truth)
    assert rec["label_choice"] == "model_1" and rec["label_measured_best"] == "linear"
    rec["frames"] = [3, 9]
    assert selfcheck.label_warning(rec) == (
        "self-check: on 2 held-out kept slices linear label interpolation measured Dice 0.111 better than "
        "MedGS's labels (model_1); --set schedule.deliver_labels=linear gives linear label interpolation")
    assert selfcheck.self_check_warning({"choice": "model_1", "measured_best": "model_1", **rec}) == \
        selfcheck.label_warning(rec)
    asked = selfcheck.choose_labels(cands, truth, deliver="linear")
    assert asked["label_choice"] == "linear" and selfcheck.label_weight(asked) is None and asked["dice_gain"] == 0.0
    from MedGSLib.errors import InputError
    with pytest.raises(InputError, match="deliver_labels='blend' is not a candidate"):
        selfcheck.choose_labels({"model_1": heads, "linear": truth}, truth, deliver="blend")
    assert selfcheck.choose_labels(cands, np.zeros_like(truth)) == {}      # no label on the held-out frames


def _moving_disc_trainer(deliver_labels="auto"):
    """A disc moving 2 px a frame over 7 frames, labels on every frame, frame 3 held out, every
    label pair's field set to the true motion."""
    import torch
    from MedGSLib.api import default_config
    from MedGSLib.train import Trainer
    h, w = 20, 36
    yy, xx = np.mgrid[0:h, 0:w]
    disc = torch.from_numpy(np.stack([np.hypot(xx - 8 - 2 * f, yy - 10) <= 5 for f in range(7)])).float()
    cfg = default_config("fast", "cpu", iterations=1)
    cfg.schedule.deliver_labels = deliver_labels
    tr = Trainer(disc, cfg, masks=disc[None].clone(), pipeline="joint", holdout=[3])
    for a, b in tr._seg_pairs():
        tr.flow._fields[(a, b)] = torch.stack([torch.full((h, w), 2.0 * (b - a)), torch.zeros(h, w)])
    return tr, disc.numpy()


def test_in_between_labels_across_a_held_out_frame_and_their_delivery():
    """The self-check's in-between labels at the held-out frame 3 come from frames 1, 2, 4, 5
    carried by the fields: the disc of frame 3 exactly. Delivered, they replace the heads'
    probabilities between annotated frames only (or mix with them, or give way to linear)."""
    tr, disc = _moving_disc_trainer()
    assert sorted(tr.mask_frames) == [0, 1, 2, 4, 5, 6]
    mc = tr._labels_between([3.0])
    assert mc.shape == (1, 1, 20, 36)
    assert np.array_equal(mc[0, 0] >= 0.5, disc[3] > 0)
    pos = np.array([2.0, 3.0, 6.0])
    for choice, expect in (("blend", mc[0, 0]), ("model_0.5", 0.5 * 0.25 + 0.5 * mc[0, 0]),
                           ("linear", 0.5 * (disc[2] + disc[4]))):
        tr.selfcheck = {"label_choice": choice}
        probs = np.full((1, 3, 20, 36), 0.25, np.float32)
        tr.deliver_labels(probs, pos)
        np.testing.assert_allclose(probs[0, 1], expect, rtol=1e-6)
        assert (probs[0, [0, 2]] == 0.25).all()         # annotated positions are left alone
    tr.selfcheck = {"label_choice": "model_1"}
    probs = np.full((1, 3, 20, 36), 0.25, np.float32)
    assert (tr.deliver_labels(probs, pos) == 0.25).all()


def test_deliver_labels_is_checked_before_any_training():
    import torch
    from MedGSLib.api import default_config
    from MedGSLib.errors import InputError
    from MedGSLib.train import Trainer
    cfg = default_config("fast", "cpu", iterations=1)
    cfg.schedule.deliver_labels = "contour"
    with pytest.raises(InputError, match="unknown deliver_labels choice 'contour'"):
        Trainer(torch.zeros(5, 8, 8), cfg, masks=torch.zeros(1, 5, 8, 8), pipeline="joint")
    cfg.schedule.deliver_labels = "blend"
    with pytest.raises(InputError, match="deliver_labels='blend' needs a label map"):
        Trainer(torch.zeros(5, 8, 8), cfg)
    cfg.loss.seg_ibfr = 0.0
    with pytest.raises(InputError, match="needs MedGS's in-between labels"):
        Trainer(torch.zeros(5, 8, 8), cfg, masks=torch.zeros(1, 5, 8, 8), pipeline="joint")


def test_in_between_labels_asked_for_train_no_label_heads():
    """deliver_labels="blend": the image alone trains (no label head, the image's step count), the
    self-check scores the in-between labels against linear only, and every output slice between
    annotated ones carries them (the annotated ones are the user's)."""
    from MedGSLib.api import default_config, interpolate_array
    h, w = 20, 36
    yy, xx = np.mgrid[0:h, 0:w]
    disc = np.stack([np.hypot(xx - 8 - 2 * f, yy - 10) <= 5 for f in range(7)]).astype(np.float32)
    cfg = default_config("fast", "cpu", iterations=12)
    cfg.model.num_points = 300
    cfg.schedule.deliver_labels = "blend"
    res = interpolate_array(0.2 + 0.6 * disc, factor=2, masks=disc[None], config=cfg)
    assert not res.model.has_seg and res.info["label_heads"] is False
    check = res.info["self_check"]
    assert set(check["label_dice"]) == {"blend", "linear"} and check["label_choice"] == "blend"
    assert "dice_model" not in check
    on_grid = np.isclose(res.positions, np.round(res.positions))
    np.testing.assert_array_equal(res.probs[0, on_grid], disc)
    between = res.probs[0, ~on_grid]
    assert between.shape[0] == 6 and all(0 < (s >= 0.5).sum() for s in between)


def test_a_sized_schedule_too_short_for_label_heads_delivers_the_in_between_labels():
    """The CPU variant sizes 40 steps of 4 frames for 13 frames: 12.3 visits a label channel, below
    sizing.MIN_LABEL_VISITS, so no label head is trained (and the run says why); asking for the
    heads, or setting the schedule by hand, trains them."""
    import torch
    from MedGSLib import sizing
    from MedGSLib.api import default_config
    from MedGSLib.train import Trainer
    frames = torch.rand(13, 64, 64)
    masks = (frames[None] > 0.5).float()
    cfg = default_config("fast", "cpu")
    assert cfg.schedule.iterations == 0
    tr = Trainer(frames, cfg, masks=masks, pipeline="joint")
    assert tr.cfg.schedule.iterations == 40 and not tr.label_heads and not tr.model.has_seg
    visits = sizing.label_visits(13, 40, 4, 1, 8)
    assert tr.label_heads_reason.startswith(f"the schedule gives each label channel {visits:.1f} visits")
    assert tr.pipeline == "img" and tr._sd is not None
    cfg.schedule.deliver_labels = "model"
    assert Trainer(frames, cfg, masks=masks, pipeline="joint").model.n_labels == 1
    cfg.schedule.deliver_labels, cfg.schedule.iterations = "auto", 40
    assert Trainer(frames, cfg, masks=masks, pipeline="joint").model.n_labels == 1
