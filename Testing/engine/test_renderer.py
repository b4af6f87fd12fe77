"""TorchRenderer against closed forms and a dense float64 per-pixel reference (gsplat.md Appendix A)."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from MedGSLib.model import Splats  # noqa: E402
from MedGSLib.render.torch_renderer import ALPHA_MAX, TorchRenderer, tile_ranges  # noqa: E402

H, W = 13, 21          # non-square, not a multiple of any tile size


def make_splats(means, conics, opac, colors, frame_ids=None, n_frames=1, h=H, w=W, grad=False):
    """Hand-made packed splats; radii cover the whole image so that tile culling never cuts a footprint."""
    t = lambda x: torch.tensor(x, dtype=torch.float32, requires_grad=grad)  # noqa: E731
    means, conics, opac, colors = t(means), t(conics), t(opac), t(colors)
    p = means.shape[0]
    fids = torch.zeros(p, dtype=torch.long) if frame_ids is None else torch.tensor(frame_ids, dtype=torch.long)
    radii = torch.full((p, 2), 1000, dtype=torch.int32)
    return Splats(means, conics, opac, colors, radii, fids, torch.arange(p), n_frames, h, w)


def reference(means, conics, opac, colors, frame_ids, n_frames, h, w):
    """Dense float64 compositing: every pixel walks the splats in packed order (gsplat's kernel)."""
    means, conics, opac, colors = (x.double() for x in (means, conics, opac, colors))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5,
                            torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij")
    C = colors.shape[1]
    imgs, alphas = [], []
    for f in range(n_frames):
        T = torch.ones(h, w, dtype=torch.float64)
        out = torch.zeros(h, w, C, dtype=torch.float64)
        done = torch.zeros(h, w, dtype=torch.bool)
        for i in range(means.shape[0]):
            if int(frame_ids[i]) != f:
                continue
            dx, dy = means[i, 0] - xs, means[i, 1] - ys
            a, b, c = conics[i]
            power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            alpha = torch.clamp_max(opac[i] * torch.exp(-power), ALPHA_MAX)
            use = (power >= 0) & (alpha >= 1.0 / 255.0) & ~done
            nxt = T * (1 - alpha)
            stop = use & (nxt <= 1e-4)
            done = done | stop
            use = use & ~stop
            out = out + torch.where(use[..., None], colors[i] * (alpha * T)[..., None], torch.zeros_like(out))
            T = torch.where(use, nxt, T)
        imgs.append(out)
        alphas.append(1 - T)
    return torch.stack(imgs), torch.stack(alphas)[..., None]


def random_scene(seed, n=9, n_frames=2, C=3, h=H, w=W):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    # random SPD covariances of 1.5..4 px std -> conics
    s = 1.5 + 2.5 * torch.rand(n, 2, generator=g)
    th = torch.rand(n, generator=g) * math.pi
    c, sn = torch.cos(th), torch.sin(th)
    cov_a = c * c * s[:, 0] ** 2 + sn * sn * s[:, 1] ** 2
    cov_c = sn * sn * s[:, 0] ** 2 + c * c * s[:, 1] ** 2
    cov_b = (s[:, 0] ** 2 - s[:, 1] ** 2) * c * sn
    det = cov_a * cov_c - cov_b ** 2
    conics = torch.stack([cov_c / det, -cov_b / det, cov_a / det], 1)
    opac = 0.2 + 0.7 * torch.rand(n, generator=g)
    colors = torch.rand(n, C, generator=g)
    fids = torch.sort(torch.randint(0, n_frames, (n,), generator=g)).values
    return means, conics, opac, colors, fids


def test_single_gaussian_matches_analytic_footprint():
    mx, my, a, b, c, o = 7.3, 5.1, 0.21, 0.05, 0.4, 0.8
    sp = make_splats([[mx, my]], [[a, b, c]], [o], [[0.6, 0.25]])
    out = TorchRenderer(tile_size=4).render(sp)
    assert out.images.shape == (1, H, W, 2) and out.alphas.shape == (1, H, W, 1)
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    dx, dy = mx - xs, my - ys
    alpha = o * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
    alpha = torch.where(alpha >= 1 / 255, alpha, torch.zeros_like(alpha))
    assert (alpha == 0).any() and (alpha > 0.5).any()      # the 1/255 cut is exercised
    torch.testing.assert_close(out.alphas[0, ..., 0], alpha, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.images[0, ..., 0], 0.6 * alpha, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.images[0, ..., 1], 0.25 * alpha, atol=1e-6, rtol=1e-5)
    # the centre pixel of a splat centred on it has alpha = o exactly
    sp2 = make_splats([[4.5, 2.5]], [[1.0, 0.0, 1.0]], [0.7], [[1.0]])
    assert float(TorchRenderer(tile_size=4).render(sp2).alphas[0, 2, 4, 0]) == pytest.approx(0.7, abs=1e-6)


def test_two_overlapping_splats_composite_front_to_back():
    # wide, flat footprints: per pixel alpha is close to the opacity, both cover the whole image
    sp = make_splats([[10.5, 6.5], [10.5, 6.5]], [[1e-3, 0, 1e-3], [1e-3, 0, 1e-3]], [0.6, 0.5],
                     [[1.0, 0.0], [0.0, 1.0]])
    out = TorchRenderer(tile_size=8).render(sp)
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    e = torch.exp(-0.5 * 1e-3 * ((10.5 - xs) ** 2 + (6.5 - ys) ** 2))
    a1, a2 = 0.6 * e, 0.5 * e
    torch.testing.assert_close(out.images[0, ..., 0], a1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.images[0, ..., 1], a2 * (1 - a1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.alphas[0, ..., 0], 1 - (1 - a1) * (1 - a2), atol=1e-6, rtol=1e-5)
    # order matters: swapping the rows swaps which colour is in front
    sp_sw = make_splats([[10.5, 6.5], [10.5, 6.5]], [[1e-3, 0, 1e-3], [1e-3, 0, 1e-3]], [0.5, 0.6],
                        [[0.0, 1.0], [1.0, 0.0]])
    out_sw = TorchRenderer(tile_size=8).render(sp_sw)
    torch.testing.assert_close(out_sw.images[0, ..., 1], a2, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out_sw.images[0, ..., 0], a1 * (1 - a2), atol=1e-6, rtol=1e-5)


def test_transmittance_early_stop():
    # opacity 0.95 everywhere: after k splats T = 0.05^k; the 4th would bring T to 6.25e-6 <= 1e-4 -> stop
    n = 7
    sp = make_splats([[10.5, 6.5]] * n, [[0.0, 0.0, 0.0]] * n, [0.95] * n,
                     [[1.0, 0.0, 0.0]] * 3 + [[0.0, 1.0, 0.0]] + [[0.0, 0.0, 1.0]] * 3)
    out = TorchRenderer(tile_size=8).render(sp)
    # three splats contribute: colour 0.95 (1 + 0.05 + 0.0025) = 0.999875, alpha = 1 - 1.25e-4
    torch.testing.assert_close(out.images[..., 0], torch.full((1, H, W), 0.999875), atol=1e-6, rtol=0)
    assert float(out.images[..., 1:].abs().max()) == 0.0
    torch.testing.assert_close(out.alphas, torch.full((1, H, W, 1), 1 - 1.25e-4), atol=1e-6, rtol=0)


def test_alpha_clamp():
    sp = make_splats([[10.5, 6.5]], [[0.0, 0.0, 0.0]], [1.0], [[1.0]])
    out = TorchRenderer().render(sp)
    torch.testing.assert_close(out.alphas, torch.full((1, H, W, 1), ALPHA_MAX), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_dense_float64_reference(seed):
    means, conics, opac, colors, fids = random_scene(seed)
    ref_img, ref_alpha = reference(means, conics, opac, colors, fids, 2, H, W)
    sp = Splats(means, conics, opac, colors, torch.full((means.shape[0], 2), 1000, dtype=torch.int32),
                fids, torch.arange(means.shape[0]), 2, H, W)
    out = TorchRenderer(tile_size=4).render(sp)
    torch.testing.assert_close(out.images.double(), ref_img, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(out.alphas.double(), ref_alpha, atol=2e-6, rtol=1e-5)


def test_gradients_match_float64_reference():
    means, conics, opac, colors, fids = random_scene(3, n=8)
    wts = torch.rand(2, H, W, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    wa = torch.rand(2, H, W, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def grads(fn, dtype):
        leaves = [x.detach().to(dtype).requires_grad_(True) for x in (means, conics, opac, colors)]
        img, alpha = fn(*leaves)
        loss = (img.double() * wts).sum() + (alpha.double() * wa).sum()
        loss.backward()
        return [x.grad.double() for x in leaves]

    def ours(m, q, o, c):
        sp = Splats(m, q, o, c, torch.full((m.shape[0], 2), 1000, dtype=torch.int32), fids,
                    torch.arange(m.shape[0]), 2, H, W)
        out = TorchRenderer(tile_size=4).render(sp)
        return out.images, out.alphas

    g_ref = grads(lambda m, q, o, c: reference(m, q, o, c, fids, 2, H, W), torch.float64)
    g_our = grads(ours, torch.float32)
    # float32 renderer vs float64 reference: 1e-4 relative to each gradient's scale
    for name, a, b in zip(("means2d", "conics", "opacities", "colors"), g_our, g_ref):
        scale = float(b.abs().max())
        assert scale > 0, name
        assert float((a - b).abs().max()) <= 1e-4 * scale + 1e-6, name


def test_tile_size_and_chunking_do_not_change_results_or_gradients():
    means, conics, opac, colors, fids = random_scene(7, n=12, n_frames=2, C=2, h=30, w=37)

    def run(renderer):
        leaves = [x.detach().clone().requires_grad_(True) for x in (means, conics, opac, colors)]
        sp = Splats(*leaves, torch.full((means.shape[0], 2), 1000, dtype=torch.int32), fids,
                    torch.arange(means.shape[0]), 2, 30, 37)
        out = renderer.render(sp)
        (out.images.sum() + (out.alphas ** 2).sum()).backward()
        return out.images.detach(), out.alphas.detach(), [x.grad for x in leaves]

    base_img, base_a, base_g = run(TorchRenderer(tile_size=16))
    for r in (TorchRenderer(tile_size=4), TorchRenderer(tile_size=8),
              TorchRenderer(tile_size=4, max_elements=500),     # one tile (or so) per chunk
              TorchRenderer(tile_size=8, max_elements=3000)):
        img, a, g = run(r)
        torch.testing.assert_close(img, base_img, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a, base_a, atol=1e-6, rtol=1e-5)
        for x, y in zip(g, base_g):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_chunking_really_splits():
    # sanity for the test above: a tiny budget gives several chunks of whole tiles
    means, conics, opac, colors, fids = random_scene(7, n=12, n_frames=2, C=2, h=30, w=37)
    sp = Splats(means, conics, opac.requires_grad_(True), colors,
                torch.full((12, 2), 1000, dtype=torch.int32), fids, torch.arange(12), 2, 30, 37)
    assert TorchRenderer(tile_size=4, max_elements=500).render(sp).meta["chunks"] > 1
    assert TorchRenderer(tile_size=4).render(sp).meta["chunks"] == 1


def test_frames_are_separate_and_background():
    # splat 0 in frame 0, splat 1 in frame 2; frame 1 is empty
    sp = make_splats([[5.5, 5.5], [15.5, 8.5]], [[0.2, 0, 0.2], [0.2, 0, 0.2]], [0.9, 0.9],
                     [[1.0], [0.5]], frame_ids=[0, 2], n_frames=3)
    out = TorchRenderer(tile_size=4).render(sp)
    assert out.images.shape == (3, H, W, 1)
    assert float(out.images[1].abs().max()) == 0.0 and float(out.alphas[1].max()) == 0.0
    assert float(out.images[0, 5, 5, 0]) == pytest.approx(0.9, abs=1e-6)
    assert float(out.images[2, 8, 15, 0]) == pytest.approx(0.45, abs=1e-6)
    assert float(out.alphas[0, 8, 15, 0]) < 1e-3 and float(out.alphas[2, 5, 5, 0]) < 1e-3
    bg = torch.tensor([0.25])
    out_bg = TorchRenderer(tile_size=4).render(sp, background=bg)
    torch.testing.assert_close(out_bg.images, out.images + (1 - out.alphas) * 0.25, atol=1e-6, rtol=0)
    assert torch.allclose(out_bg.images[1], torch.full((H, W, 1), 0.25))
    torch.testing.assert_close(out_bg.alphas, out.alphas)


def test_empty_and_culled_splats():
    # zero radii: culled, nothing drawn, zero intersections
    sp = make_splats([[5.5, 5.5]], [[0.2, 0, 0.2]], [0.9], [[1.0]])
    sp.radii = torch.zeros(1, 2, dtype=torch.int32)
    out = TorchRenderer().render(sp)
    assert out.n_isects == 0 and float(out.images.abs().max()) == 0.0 and float(out.alphas.max()) == 0.0


def footprint_radii(conics, opac):
    """The radii model.condition gives: gsplat's opacity-aware extent of the 2D covariance."""
    a, b, c = conics.unbind(1)
    det = a * c - b * b
    ext = torch.sqrt(2 * torch.log((opac * 255).clamp_min(1.0))).clamp_max(3.33)
    return torch.stack([torch.ceil(ext * torch.sqrt(c / det)), torch.ceil(ext * torch.sqrt(a / det))], 1).to(torch.int32)


@pytest.mark.parametrize("tile_size", [4, 8])
def test_tile_culling_with_real_radii_loses_nothing_and_skips_tiles(tile_size):
    """Radii as the model computes them (a few px, not 1000): each splat meets only the tiles
    under its footprint, and the image still equals the dense reference (outside its radius
    a splat's alpha is below 1/255, where the kernel skips it anyway)."""
    means, conics, opac, colors, fids = random_scene(3, n=12, h=26, w=42)
    radii = footprint_radii(conics, opac)
    assert int(radii.max()) < 15
    sp = Splats(means, conics, opac, colors, radii, fids, torch.arange(12), 2, 26, 42)
    out = TorchRenderer(tile_size=tile_size).render(sp)
    ref_img, ref_alpha = reference(means, conics, opac, colors, fids, 2, 26, 42)
    torch.testing.assert_close(out.images.double(), ref_img, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(out.alphas.double(), ref_alpha, atol=2e-6, rtol=1e-5)
    tiles = math.ceil(42 / tile_size) * math.ceil(26 / tile_size)
    n_isects = int(out.n_isects)
    assert n_isects == len(TorchRenderer(tile_size=tile_size).intersections(sp)[0])
    assert n_isects < 12 * tiles // 2         # culling really cut most (splat, tile) pairs


def test_too_small_radii_cut_the_footprint_at_the_tile_edge():
    """A 3 px std splat with radius 1 at (10.5, 6.5), 4 px tiles: only tile columns 2 and rows 1
    are touched, so pixels two tiles away stay empty although the dense footprint reaches them."""
    s2 = 9.0
    sp = make_splats([[10.5, 6.5]], [[1 / s2, 0.0, 1 / s2]], [0.9], [[1.0]], h=16, w=24)
    sp.radii = torch.tensor([[1, 1]], dtype=torch.int32)
    out = TorchRenderer(tile_size=4).render(sp)
    x0, x1, y0, y1, _ = (int(t[0]) for t in tile_ranges(sp.means2d, sp.radii, 4, 6, 4))
    assert (x0, x1, y0, y1) == (2, 3, 1, 2)
    img = out.images[0, ..., 0]
    assert float(img[4:8, 8:12].min()) > 0.3            # its own tile: drawn
    assert float(img[:, 12:].abs().max()) == 0.0 and float(img[8:, :].abs().max()) == 0.0
    ref, _ = reference(sp.means2d, sp.conics, sp.opacities, sp.colors, sp.frame_ids, 1, 16, 24)
    assert float(ref[0, 6, 13, 0]) > 0.3                # ...where the uncut footprint is bright
