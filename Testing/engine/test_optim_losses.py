"""optim.py (Adam with row surgery) and losses.py (every loss term), each against a direct computation."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from MedGSLib import losses  # noqa: E402
from MedGSLib.optim import ParamOptimizer  # noqa: E402


def two_tensors():
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(4, 2, generator=g), "b": torch.randn(4, 1, generator=g)}


def adam_step(opt, params, seed):
    g = torch.Generator().manual_seed(seed)
    opt.zero_grad()
    sum((v * torch.randn(v.shape, generator=g)).sum() for v in params.values()).backward()
    opt.step()


# ------------------------------------------------------------------------------- optim
def test_row_surgery_matches_adam_on_the_surviving_rows():
    """keep_rows then a step == the same step of an Adam that only ever had those rows."""
    p1, p2 = two_tensors(), two_tensors()
    full = ParamOptimizer(p1, {"a": 0.1, "b": 0.2})
    adam_step(full, p1, 1)
    keep = torch.tensor([True, False, True, True])
    full.keep_rows(keep)
    # reference: the same first step on the kept rows only (Adam is elementwise)
    ref_params = {k: v[keep].detach().clone() for k, v in p2.items()}
    ref = ParamOptimizer(ref_params, {"a": 0.1, "b": 0.2})
    g = torch.Generator().manual_seed(1)
    grads = {k: torch.randn(v.shape, generator=g)[keep] for k, v in p2.items()}
    ref.zero_grad()
    sum((ref_params[k] * grads[k]).sum() for k in ref_params).backward()
    ref.step()
    for k in p1:
        assert torch.equal(p1[k], ref_params[k])
        for m in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(full.opt.state[p1[k]][m], ref.opt.state[ref_params[k]][m])


def test_append_rows_start_with_zero_moments_and_reset_tensor_zeroes_them():
    params = two_tensors()
    opt = ParamOptimizer(params, {"a": 0.1, "b": 0.2}, trainable={"a"})
    adam_step(opt, params, 2)
    before = opt.opt.state[params["a"]]["exp_avg"].clone()
    opt.append_rows({"a": torch.ones(2, 2), "b": torch.zeros(2, 1)})
    st = opt.opt.state[params["a"]]
    assert params["a"].shape == (6, 2) and torch.equal(params["a"][4:], torch.ones(2, 2))
    assert torch.equal(st["exp_avg"][:4], before) and not st["exp_avg"][4:].any() and not st["exp_avg_sq"][4:].any()
    assert params["a"].requires_grad and not params["b"].requires_grad and params["b"].shape == (6, 1)
    assert opt.opt.param_groups[0]["params"][0] is params["a"]      # Adam steps the new tensor
    opt.reset_tensor("a", torch.zeros(6, 2))
    assert not opt.opt.state[params["a"]]["exp_avg"].any() and int(opt.opt.state[params["a"]]["step"]) == 1
    opt.set_lr("a", 0.5)
    assert opt.opt.param_groups[0]["lr"] == 0.5


def test_state_dict_round_trip():
    params = two_tensors()
    opt = ParamOptimizer(params, {"a": 0.1, "b": 0.2})
    adam_step(opt, params, 3)
    other = {k: v.detach().clone() for k, v in params.items()}
    opt2 = ParamOptimizer(other, {"a": 0.1, "b": 0.2})
    opt2.load_state_dict(opt.state_dict())
    adam_step(opt, params, 4)
    adam_step(opt2, other, 4)
    assert all(torch.equal(params[k], other[k]) for k in params)


# ------------------------------------------------------------------------------- losses
def test_ssim_matches_skimage_on_the_interior():
    """Same Gaussian window (11, sigma 1.5), constants and sample covariance: away from the
    zero-padded border (5 px) the SSIM maps agree to float32 rounding."""
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((40, 36)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    _, ref_map = metrics.structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                               use_sample_covariance=False, full=True)
    ta, tb = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
    ours = losses.ssim_map(ta, tb)[0, 0].numpy()
    inner = (slice(5, -5), slice(5, -5))
    np.testing.assert_allclose(ours[inner], ref_map[inner], atol=2e-5)
    assert float(losses.ssim(ta, tb)) == pytest.approx(float(ours.mean()), abs=1e-6)
    assert abs(float(ours[0, 0]) - float(ref_map[0, 0])) > 1e-3     # the border does differ (zero padding)


def test_l1_psnr_soft_dice_bce_by_hand():
    a = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    b = torch.tensor([[0.5, 0.5], [0.0, 0.25]])
    assert float(losses.l1(a, b)) == pytest.approx(0.375)
    assert losses.psnr(a, b) == pytest.approx(-10 * math.log10((0.25 + 1.0) / 4))
    assert losses.psnr(a, a) == 99.0
    pred = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]], [[[0.0, 0.0], [1.0, 1.0]]]]).permute(1, 0, 2, 3)   # [1, 2, 2, 2]
    tgt = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [1.0, 0.0]]]]).permute(1, 0, 2, 3)
    # channel 0: inter 1.5, sums 2 + 2 -> (3 + 1) / (4 + 1); channel 1: inter 1, sums 2 + 1 -> 3 / 4
    assert float(losses.soft_dice(pred, tgt)) == pytest.approx(1 - (0.8 + 0.75) / 2)
    p = torch.tensor([0.9, 0.2, 1.0])
    t = torch.tensor([1.0, 0.0, 1.0])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(1 - 1e-4)) / 3    # 1.0 is clamped to 1 - 1e-4
    assert float(losses.bce(p, t)) == pytest.approx(expected, rel=1e-6)


def test_sigma_range_penalty_by_hand():
    s = torch.tensor([0.05, 0.1, 0.5, 1.5, 3.0])
    # below 0.2: (0.15 + 0.1) / 2; above 1: (0.5 + 2.0) / 2
    assert float(losses.sigma_range_penalty(s, 0.2, 1.0)) == pytest.approx(0.125 + 1.25)
    assert float(losses.sigma_range_penalty(torch.tensor([0.5]), 0.2, 1.0)) == 0.0
