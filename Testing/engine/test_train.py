"""Trainer: determinism, checkpoint resume, cancel, seg_head_only freezing, and a real-data check."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from MedGSLib.api import default_config, interpolate_array  # noqa: E402
from MedGSLib.errors import CancelledError  # noqa: E402
from MedGSLib.model import GEOMETRY_KEYS, IMAGE_KEYS  # noqa: E402
from MedGSLib.train import Trainer  # noqa: E402


def synthetic_frames(F=6, H=24, W=28):
    """A bright disc that moves and grows from frame to frame."""
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for k in range(F):
        cy, cx, r = H / 2, 8 + 2 * k, 4 + 0.5 * k
        out.append(np.clip(1.2 - np.hypot(yy - cy, xx - cx) / r, 0, 1) * 0.8 + 0.1)
    return torch.from_numpy(np.stack(out).astype(np.float32))


def tiny_config(iterations, seed=0, points=600):
    cfg = default_config("fast", "cpu", iterations=iterations, seed=seed)
    cfg.model.num_points = points
    cfg.schedule.frames_per_step = 3
    return cfg


def params_of(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.params.items()}


@pytest.fixture
def deterministic():
    """Bitwise CPU determinism needs torch's deterministic kernels: the multi-threaded CPU
    accumulation in the backward of p[gi] (index_put with accumulate) otherwise differs in the
    last bits from run to run (seen on 2 threads: w differs by ~5e-10 after one step)."""
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(prev)


def test_same_seed_same_parameters_different_seed_differs(deterministic):
    fr = synthetic_frames()
    a = params_of(_trained(Trainer(fr, tiny_config(8, seed=3))))
    b = params_of(_trained(Trainer(fr, tiny_config(8, seed=3))))
    c = params_of(_trained(Trainer(fr, tiny_config(8, seed=4))))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].shape != c[k].shape or not torch.equal(a[k], c[k]) for k in a)


def _trained(tr):
    tr.train()
    return tr


def test_checkpoint_resume_equals_straight_run(deterministic):
    fr = synthetic_frames()
    full = Trainer(fr, tiny_config(16))
    full.train()
    first = Trainer(fr, tiny_config(16), cancel=lambda: first.step >= 8)
    with pytest.raises(CancelledError):
        first.train()
    assert first.step == 8
    ck = first.checkpoint()
    ck = torch.load(_roundtrip(ck), weights_only=False)     # through bytes, as a file would
    second = Trainer(fr, tiny_config(16))
    second.load_checkpoint(ck)
    assert second.step == 8
    second.train()
    assert second.step == 16
    pf, ps = params_of(full), params_of(second)
    assert pf.keys() == ps.keys()
    for k in pf:
        assert pf[k].shape == ps[k].shape, k
        assert torch.equal(ps[k], pf[k]), k


def _roundtrip(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_cancel_flag_raises_before_any_step():
    fr = synthetic_frames()
    tr = Trainer(fr, tiny_config(10), cancel=lambda: True)
    with pytest.raises(CancelledError):
        tr.train()
    assert tr.step == 0


def test_progress_events():
    events = []
    tr = Trainer(synthetic_frames(), tiny_config(5), progress=events.append)
    res = tr.train()
    prog = [e for e in events if e.get("event") == "progress"]
    assert [e["iteration"] for e in prog] == [1, 2, 3, 4, 5] and all(e["total"] == 5 for e in prog)
    assert res.info["iterations_run"] == 5 and res.info["gaussians"] == tr.model.n


def test_seg_head_only_freezes_geometry_and_image_head():
    fr = synthetic_frames()
    base = Trainer(fr, tiny_config(6))
    model = base.train().model
    masks = (fr > 0.5).float()[None]
    tr = Trainer(None, tiny_config(6), masks=masks, pipeline="seg_head_only", model=model)
    before = params_of(tr)
    tr.train()
    after = params_of(tr)
    for k in GEOMETRY_KEYS + IMAGE_KEYS:
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["seg_color"], after["seg_color"])


@pytest.fixture(scope="module")
def ct_crop(shared_data):
    import SimpleITK as sitk
    path = shared_data / "ct_abdomen3mm_image.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} missing")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)    # [z, y, x], 3 mm slices
    z0 = (arr.shape[0] - 23) // 2
    y0, x0 = arr.shape[1] // 2 - 20, arr.shape[2] // 2 - 24
    crop = arr[z0:z0 + 23, y0:y0 + 40, x0:x0 + 48]
    return np.clip((crop + 200.0) / 500.0, 0, 1).astype(np.float32)           # soft-tissue window


def _psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


# A 40-step CPU run (seconds) alone sits 2.16 dB below linear on this crop (20.74 vs 22.90 dB);
# with the self-check (selfcheck.py) the delivered mix of model and the in-between image
# (flow.image_between) is 23.31 dB (23.23 with the two-slice image blend before the four-slice
# cubic and the inverse-RMS confidence). The bar is linear plus a stated margin, plus the seeded
# value itself: a change that costs 0.1 dB fails here.
LINEAR_MARGIN_DB = -0.15
PINNED_PSNR_DB = 23.309


def test_short_training_against_linear_on_held_out_slices(ct_crop, capsys):
    full = ct_crop                                    # 23 slices; keep 0, 2, ..., 22 -> 12 frames
    kept = full[::2]
    cfg = default_config("fast", "cpu", iterations=40, seed=0)
    cfg.model.num_points = 1500
    res = interpolate_array(kept, 2, config=cfg)
    assert res.image.shape == full.shape
    np.testing.assert_array_equal(res.image[::2], kept)        # known slices pasted back exactly
    held = np.arange(1, full.shape[0], 2)
    linear = 0.5 * (kept[:-1] + kept[1:])                      # held-out slice k is midway
    p_model, p_lin = _psnr(res.image[held], full[held]), _psnr(linear, full[held])
    with capsys.disabled():
        print(f"\n[held-out PSNR] model {p_model:.2f} dB vs linear {p_lin:.2f} dB "
              f"({res.info['iterations_run']} it, {res.info['gaussians']} Gaussians)")
    assert p_lin == pytest.approx(22.898, abs=1e-3)
    assert p_model > p_lin - LINEAR_MARGIN_DB
    assert p_model == pytest.approx(PINNED_PSNR_DB, abs=0.02)


def test_a_choice_without_model_voxels_is_not_rendered(ct_crop, monkeypatch):
    """Delivering the in-between image: the model is not rendered, and the volume is the
    in-between image between the kept slices (flow.image_between on the trainer's fields) and
    the kept slices on them."""
    import MedGSLib.slice_grid as sg
    from MedGSLib import flow
    kept = ct_crop[::2]
    cfg = default_config("fast", "cpu", iterations=40, seed=0)
    cfg.model.num_points = 1500
    cfg.schedule.deliver = "blend"
    heads = []
    real = sg.render_positions
    monkeypatch.setattr(sg, "render_positions", lambda *a, **k: heads.append(a[6]) or real(*a, **k))
    captured = {}
    real_fields = flow.PairFields.consecutive
    monkeypatch.setattr(flow.PairFields, "consecutive",
                        lambda self: captured.setdefault("d", real_fields(self)))
    res = interpolate_array(kept, 2, config=cfg)
    assert heads == [] and res.info["self_check"]["choice"] == "blend"
    np.testing.assert_array_equal(res.image[::2], kept)
    fr = torch.from_numpy(kept)
    n = kept.shape[0]
    want = flow.image_between(fr, flow.consecutive_quads(n), flow.consecutive_fields(captured["d"]),
                              torch.full((n - 1,), 0.5))
    np.testing.assert_allclose(res.image[1::2], want.numpy(), atol=1e-6)


def test_label_channels_per_step_prefer_present_labels():
    frames = synthetic_frames()
    masks = torch.zeros(12, 6, 24, 28)
    masks[3, 2, 5:9, 5:9] = 1                # label 3 only on frame 2
    masks[7, 4, 10:14, 10:14] = 1            # label 7 only on frame 4
    cfg = tiny_config(1)
    cfg.loss.seg_channels = 4
    tr = Trainer(frames, cfg, masks=masks, pipeline="joint")
    ch = tr._pick_channels([2, 4]).tolist()
    assert len(ch) == 4 and {3, 7} <= set(ch)
    cfg.loss.seg_channels = 16               # more than there are: every channel
    tr = Trainer(frames, cfg, masks=masks, pipeline="joint")
    assert tr._pick_channels([0]).tolist() == list(range(12))


def test_label_head_starts_from_the_masks_under_each_gaussian():
    from MedGSLib.model import SH_C0, focal
    frames = synthetic_frames()
    masks = torch.zeros(2, 6, 24, 28)
    masks[0, :, :, :14] = 1                  # label 0 on the left half of every frame
    masks[1, :, :, 14:] = 1
    tr = Trainer(frames, tiny_config(1), masks=masks, pipeline="joint")
    p = tr.model.params
    color = SH_C0 * p["seg_color"] + 0.5
    col = 28 / 2 + focal(28) * p["xyz"][:, 0]
    left, right = col < 13, col > 15
    assert left.any() and right.any()
    assert torch.all(color[left, 0] > 0.99) and torch.all(color[left, 1] < 0.02)
    assert torch.all(color[right, 1] > 0.99) and torch.all(color[right, 0] < 0.02)


def test_flow_targets_train_image_and_sparse_label_heads():
    """Flow IBFR on: the image pairs and the annotated label pairs (0, 3), (3, 5) get fields,
    the label heads are trained between annotated frames, and the run finishes."""
    frames = synthetic_frames()
    masks = (frames > 0.5).float()[None] * 0
    masks[0, [0, 3, 5]] = (frames[[0, 3, 5]] > 0.5).float()
    cfg = tiny_config(8)
    cfg.schedule.ibfr_from = 0.0
    assert cfg.loss.ibfr_target == "flow"
    tr = Trainer(frames, cfg, masks=masks, mask_frames=[0, 3, 5], pipeline="joint")
    assert tr.flow.consecutive().shape == (5, 2, 24, 28)
    assert tr._seg_pairs() == [(0, 3), (3, 5)] and tr.flow.stack(tr._seg_pairs()).shape == (2, 2, 24, 28)
    before = tr.model.params["seg_color"].detach().clone()
    tr.train()
    assert not torch.equal(before, tr.model.params["seg_color"][: before.shape[0]])


def test_in_between_images_read_training_frames_only(monkeypatch):
    """Frame 3 held out of 8: the image IBFR pairs read the training frames on either side (the
    pair across 3 reads 1, 2, 4, 5; the ends repeat their frame), and the self-check's blend
    candidate reads 0, 2, 4, 6 (evenly spaced at twice the gap); never frame 3."""
    from MedGSLib.flow import four_slices
    tr = Trainer(synthetic_frames(F=8), tiny_config(1), holdout=[3])
    assert four_slices(tr._image_pairs(), tr._prev, tr._next) == [
        (0, 0, 1, 2), (0, 1, 2, 4), (1, 2, 4, 5), (2, 4, 5, 6), (4, 5, 6, 7), (5, 6, 7, 7)]
    read = []
    orig = Trainer._image_between

    def record(self, quads, alphas):
        read.extend(quads)
        return orig(self, quads, alphas)
    monkeypatch.setattr(Trainer, "_image_between", record)
    tr._fold_in(1, 1)
    # then the interior evidence (selfcheck.interior_quads): the odd frames 1, 3, 5 from their
    # even neighbours; no model is scored there, so it may read any frame
    assert read == [(0, 2, 4, 6), (0, 0, 2, 4), (0, 2, 4, 6), (2, 4, 6, 6)]


def test_unknown_ibfr_target_is_one_clear_error():
    from MedGSLib.errors import InputError
    cfg = tiny_config(1)
    cfg.loss.ibfr_target = "optical"
    with pytest.raises(InputError, match="IBFR target"):
        Trainer(synthetic_frames(), cfg)


def test_unknown_deliver_choice_is_one_clear_error():
    from MedGSLib.errors import InputError
    cfg = tiny_config(1)
    cfg.schedule.deliver = "cubic"
    with pytest.raises(InputError, match="unknown deliver choice 'cubic'"):
        Trainer(synthetic_frames(F=8), cfg)
    cfg.schedule.deliver, cfg.schedule.self_check = "linear", False
    with pytest.raises(InputError, match="it needs schedule.self_check=True"):
        Trainer(synthetic_frames(F=8), cfg)
