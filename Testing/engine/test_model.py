"""FoldedGaussians: conditioning math, delta culling, polynomial shift and initialisation."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from MedGSLib.model import (DELTA_CULL, EPS2D, SH_C0, TAN_HALF_FOV, FoldedGaussians, focal,  # noqa: E402
                            frame_times)


def _logit(p):
    return math.log(p / (1 - p))


def one_gaussian(x, z, sx, sz, theta, m, sigma, w=None, D=1, opacity=0.8, color=0.3):
    w = [0.0] * (2 * D) if w is None else w
    p = {"xyz": torch.tensor([[x, z]]), "scaling": torch.tensor([[math.log(sx), math.log(sz)]]),
         "rotation": torch.tensor([[_logit(theta / (2 * math.pi))]]), "m": torch.tensor([[_logit(m)]]),
         "sigma": torch.tensor([[math.log(sigma)]]), "w": torch.tensor([w]),
         "color": torch.tensor([[(color - 0.5) / SH_C0]]), "opacity": torch.tensor([[_logit(opacity)]])}
    return FoldedGaussians({k: v.float() for k, v in p.items()}, D)


def test_focal_and_frame_times():
    assert focal(144) == pytest.approx(144 / 0.72)
    assert TAN_HALF_FOV == 0.36
    torch.testing.assert_close(frame_times(4), torch.tensor([0.0, 0.25, 0.5, 0.75]))


def test_condition_mean_and_covariance_at_its_own_time():
    H, W = 30, 50
    fx = W / 0.72
    x, z, sx, sz, theta, m = 0.1, -0.05, 0.02, 0.007, 0.7, 0.4
    g = one_gaussian(x, z, sx, sz, theta, m, sigma=0.2, w=[0.5, -0.3], opacity=0.8, color=0.3)
    sp = g.condition(torch.tensor([m]), H, W)
    assert sp.means2d.shape == (1, 2) and sp.frame_ids.tolist() == [0] and sp.gauss_ids.tolist() == [0]
    # w is ignored at t = m (every power of m - t is 0) and delta = 1
    torch.testing.assert_close(sp.means2d[0], torch.tensor([W / 2 + fx * x, H / 2 - fx * z]), atol=1e-4, rtol=0)
    c, s = math.cos(theta), math.sin(theta)
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = fx ** 2 * R @ torch.diag(torch.tensor([sx ** 2, sz ** 2], dtype=torch.float64)) @ R.T
    cov = cov + EPS2D * torch.eye(2, dtype=torch.float64)
    a, b, cc = sp.conics[0].double()
    got = torch.linalg.inv(torch.tensor([[a, b], [b, cc]]))
    torch.testing.assert_close(got, cov, rtol=1e-4, atol=1e-4)
    assert float(sp.opacities[0]) == pytest.approx(0.8, abs=1e-6)
    assert float(sp.colors[0, 0]) == pytest.approx(0.3, abs=1e-6)
    # radius: the opacity-aware extent sqrt(2 ln(255 o)) times the std along each pixel axis
    ext = math.sqrt(2 * math.log(255 * 0.8))
    assert sp.radii[0].tolist() == [math.ceil(ext * math.sqrt(cov[0, 0])), math.ceil(ext * math.sqrt(cov[1, 1]))]


def test_delta_shrinks_scale_away_from_m():
    H, W = 20, 20
    fx = W / 0.72
    sigma, m, t = 0.1, 0.5, 0.6
    g = one_gaussian(0.0, 0.0, 0.02, 0.02, 0.3, m, sigma)
    sp = g.condition(torch.tensor([t]), H, W)
    delta = math.exp(-(m - t) ** 2 / (2 * sigma ** 2))
    var = fx ** 2 * (0.02 * delta) ** 2 + EPS2D
    assert float(sp.conics[0, 0]) == pytest.approx(1 / var, rel=1e-4)
    assert float(sp.conics[0, 2]) == pytest.approx(1 / var, rel=1e-4)


def test_delta_culling():
    sigma, m = 0.1, 0.5
    d_cut = sigma * math.sqrt(2 * math.log(1 / DELTA_CULL))      # delta = 0.1 exactly here
    g = one_gaussian(0.0, 0.0, 0.02, 0.02, 0.3, m, sigma)
    times = torch.tensor([m, m + 0.95 * d_cut, m - 0.95 * d_cut, m + 1.05 * d_cut, m - 1.05 * d_cut, m + 0.5])
    fi, gi = g.active_pairs(times)
    assert fi.tolist() == [0, 1, 2] and gi.tolist() == [0, 0, 0]
    sp = g.condition(times, 16, 16)
    assert sp.frame_ids.tolist() == [0, 1, 2] and sp.n_frames == 6


def test_polynomial_shift_degree_two():
    H, W = 40, 60
    fx = W / 0.72
    w = [0.3, -0.2, 1.5, 0.8]          # [D, 2]: w1 = (0.3, -0.2), w2 = (1.5, 0.8)
    m, t = 0.6, 0.45
    g = one_gaussian(0.05, 0.02, 0.01, 0.01, 0.3, m, sigma=0.5, w=w, D=2)
    sp = g.condition(torch.tensor([t]), H, W)
    d = m - t
    x = 0.05 + 0.3 * d + 1.5 * d * d
    z = 0.02 - 0.2 * d + 0.8 * d * d
    torch.testing.assert_close(sp.means2d[0], torch.tensor([W / 2 + fx * x, H / 2 - fx * z]), atol=1e-4, rtol=0)


def test_condition_orders_rows_frame_major_and_seg_head():
    gen = torch.Generator().manual_seed(0)
    g = FoldedGaussians.init_random(50, 20, 30, 3, 0.1, gen)
    for k in ("m", "sigma"):
        g.params[k] = torch.zeros_like(g.params[k]) + (0.0 if k == "m" else math.log(10.0))   # wide: all active
    times = torch.tensor([0.1, 0.5, 0.9])
    sp = g.condition(times, 20, 30)
    assert sp.frame_ids.tolist() == [0] * 50 + [1] * 50 + [2] * 50
    assert sp.gauss_ids.tolist() == list(range(50)) * 3
    g.add_seg_head(2)
    sp2 = g.condition(times, 20, 30, head="seg")
    assert sp2.colors.shape == (150, 2)
    # label colours start just above 0 (not at 0, where clamp_min(., 0) would kill their gradient)
    torch.testing.assert_close(sp2.colors, torch.full((150, 2), 0.01))
    g.params["seg_color"].requires_grad_(True)
    g.condition(times, 20, 30, head="seg").colors.sum().backward()
    assert float(g.params["seg_color"].grad.abs().min()) > 0
    torch.testing.assert_close(sp2.opacities, sp.opacities)           # seg opacity copies the image head
    with pytest.raises(ValueError):
        g.condition(times, 20, 30, head="nope")


def test_init_random_shapes_and_ranges():
    H, W, n, D = 30, 60, 400, 3
    g = FoldedGaussians.init_random(n, H, W, D, 0.1, torch.Generator().manual_seed(1))
    p = g.params
    shapes = {"xyz": (n, 2), "scaling": (n, 2), "rotation": (n, 1), "m": (n, 1), "sigma": (n, 1),
              "w": (n, 2 * D), "color": (n, 1), "opacity": (n, 1)}
    assert {k: tuple(v.shape) for k, v in p.items()} == shapes
    assert all(v.dtype == torch.float32 for v in p.values())
    assert float(p["xyz"][:, 0].abs().max()) <= 0.36 and float(p["xyz"][:, 0].abs().max()) > 0.3
    assert float(p["xyz"][:, 1].abs().max()) <= 0.36 * H / W + 1e-6
    assert float(p["w"].abs().max()) <= 1.0
    assert float(p["color"].min()) >= 0 and float(p["color"].max()) <= 1 / 255
    torch.testing.assert_close(torch.sigmoid(p["opacity"]), torch.full((n, 1), 0.1))
    s = torch.exp(p["sigma"])
    assert float(s.min()) >= 0.0099 and float(s.max()) <= 1.0
    torch.testing.assert_close(p["scaling"][:, 0], p["scaling"][:, 1])
    # scale ~ nearest-neighbour distance: n points on a 0.72 x 0.36 rectangle are ~0.025 apart
    med = float(torch.exp(p["scaling"][:, 0]).median())
    assert 0.005 < med < 0.05
    # same generator seed -> same init
    g2 = FoldedGaussians.init_random(n, H, W, D, 0.1, torch.Generator().manual_seed(1))
    assert all(torch.equal(p[k], g2.params[k]) for k in p)


def test_init_pixels_shapes_and_ranges():
    F, H, W = 4, 24, 32
    frames = torch.zeros(F, H, W)
    frames[:, 6:18, 8:24] = 0.8                       # a bright box
    g = FoldedGaussians.init_pixels(frames, 600, 2, 0.5, torch.Generator().manual_seed(0))
    p = g.params
    assert g.n == 600 and p["w"].shape == (600, 4) and float(p["w"].abs().max()) == 0.0
    fx = W / 0.72
    u = W / 2 + fx * p["xyz"][:, 0]
    v = H / 2 - fx * p["xyz"][:, 1]
    assert float(u.min()) >= -0.01 and float(u.max()) <= W + 0.01
    assert float(v.min()) >= -0.01 and float(v.max()) <= H + 0.01
    t = torch.sigmoid(p["m"][:, 0])
    k = torch.round(t * F)
    torch.testing.assert_close(t, k / F, atol=2e-4, rtol=0)         # each starts on its frame's t = k/F
    assert set(k.long().tolist()) <= set(range(F))
    torch.testing.assert_close(torch.exp(p["sigma"]), torch.full((600, 1), 1 / F))
    val = SH_C0 * p["color"] + 0.5
    assert float(val.min()) >= -1e-6 and float(val.max()) <= 1 + 1e-6
    # colour equals the sampled pixel's value: 0 or 0.8 only
    near = torch.minimum((val - 0.0).abs(), (val - 0.8).abs())
    assert float(near.max()) < 1e-5
    torch.testing.assert_close(torch.sigmoid(p["opacity"]), torch.full((600, 1), 0.5))
    # default count: F H W / 6
    g0 = FoldedGaussians.init_pixels(frames, 0, 2, 0.5, torch.Generator().manual_seed(0))
    assert g0.n == F * H * W // 6


def test_state_dict_roundtrip():
    g = FoldedGaussians.init_random(20, 10, 10, 2, 0.1, torch.Generator().manual_seed(0))
    g2 = FoldedGaussians.from_state_dict(g.state_dict())
    assert g2.poly_degree == 2 and all(torch.equal(g.params[k], g2.params[k]) for k in g.params)
