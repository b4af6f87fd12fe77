"""upstream_api: stops and resumes give the very run of one call; checkpoints load as data only."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from MedGSLib import upstream_api as ua
from MedGSLib.api import default_config
from MedGSLib.errors import InputError

F, H, W = 5, 12, 16


def _frames():
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([np.exp(-((yy - 6) ** 2 + (xx - 4 - 2 * k) ** 2) / 8.0) for k in range(F)]).astype(np.float32)


def _cfg(iters=16):
    cfg = default_config("paper", "cpu", iterations=iters)
    cfg.model.num_points = 150
    # densify every 4 steps from step 2, reset opacity at 8: every kind of state change happens
    s = cfg.schedule
    s.densify_from, s.densify_every, s.opacity_reset_every, s.ibfr_from = 2 / iters, 4 / iters, 8 / iters, 6 / iters
    return cfg


def _params(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.params.items()}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_stops_and_resume_repeat_the_single_run(tmp_path):
    frames = _frames()
    straight = ua.make_trainer(frames, _cfg())
    ua.run(straight)
    seen = []

    def on_stop(tr, step):
        seen.append((step, tr.step, tr.model.n))
        if step == 7:
            ua.save_checkpoint(ua.checkpoint(tr), tmp_path / "chkpnt7.pth")

    paused = ua.make_trainer(frames, _cfg())
    ua.run(paused, stops=[0, 3, 7, 16, 99], on_stop=on_stop)
    assert [s[:2] for s in seen] == [(0, 0), (3, 3), (7, 7), (16, 16)]      # 99 is past the end
    assert seen[0][2] == 150 and straight.step == paused.step == 16
    _same(_params(straight), _params(paused))
    # resume from step 7 in a new trainer: the same 16-step model
    ck = ua.load_checkpoint(tmp_path / "chkpnt7.pth")
    assert ck["step"] == 7 and ck["n_frames"] == F
    resumed = ua.make_trainer(frames, _cfg(), start=ck)
    assert resumed.step == 7
    late = []
    ua.run(resumed, stops=[3, 7, 10], on_stop=lambda tr, s: late.append(s))
    assert late == [7, 10]                   # stop 3 was passed before the checkpoint was written
    _same(_params(straight), _params(resumed))


def test_seg_head_only_trains_the_label_head_alone():
    frames = _frames()
    img = ua.make_trainer(frames, _cfg(6))
    ua.run(img)
    ck = ua.checkpoint(img)
    masks = (frames > 0.5).astype(np.float32)[None]
    seg = ua.make_trainer(None, _cfg(6), masks=masks, pipeline="seg_head_only", start=ck)
    assert seg.step == 0
    before = _params(seg)
    # the label head starts as the image head (upstream's init_seg_head_from_img)
    assert torch.equal(before["seg_color"], before["color"]) and torch.equal(before["seg_opacity"], before["opacity"])
    ua.run(seg)
    after = _params(seg)
    for k in before:
        assert torch.equal(before[k], after[k]) == (k not in ("seg_color", "seg_opacity")), k
    imgs, used = ua.render_checkpoint(ua.checkpoint(seg), 2, head="seg", device="cpu")
    assert used == "seg" and imgs.shape == (2 * F, H, W) and imgs.dtype == np.float32
    only_img, used = ua.render_checkpoint(ck, 1, head="seg", device="cpu", size=(6, 8))
    assert used == "image" and only_img.shape == (F, 6, 8)       # no label head: the image head, as upstream
    with pytest.raises(InputError, match="trained on frames"):
        ua.make_trainer(frames[:, :10], _cfg(6), start=ck)


class _Boom:
    """Unpickling this runs code: what a malicious checkpoint would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoints_load_as_data_only(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "chkpnt1.pth"
    torch.save({"format": ua.CHECKPOINT_FORMAT, "model": _Boom(str(marker))}, bad)
    with pytest.raises(InputError, match="cannot be loaded as MedGS data"):
        ua.load_checkpoint(bad)
    assert not marker.exists()
    (tmp_path / "chkpnt2.pth").write_bytes(pickle.dumps({"a": 1}, protocol=2) + b"junk")
    with pytest.raises(InputError, match="chkpnt2.pth"):
        ua.load_checkpoint(tmp_path / "chkpnt2.pth")
    torch.save(({"xyz": torch.zeros(2, 3)}, 30000), tmp_path / "chkpnt3.pth")       # upstream's (capture(), it)
    with pytest.raises(InputError, match="upstream MedGS checkpoint"):
        ua.load_checkpoint(tmp_path / "chkpnt3.pth")
    with pytest.raises(InputError, match="does not exist"):
        ua.load_checkpoint(tmp_path / "absent.pth")
    # our own, with its generator state and optimiser moments, loads with weights_only=True
    tr = ua.make_trainer(_frames(), _cfg(3))
    ua.run(tr)
    path = ua.save_checkpoint(ua.checkpoint(tr, source_shape=[F, H, W]), tmp_path / "chkpnt3.pth")
    ck = ua.load_checkpoint(path)
    assert ck["step"] == 3 and ck["source_shape"] == [F, H, W] and isinstance(ck["generator"], torch.Tensor)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chkpnt1.pth", "chkpnt2.pth", "chkpnt3.pth"]
