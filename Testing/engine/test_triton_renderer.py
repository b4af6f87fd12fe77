"""TritonRenderer against TorchRenderer: images, alphas and all four gradients, on CPU tensors
through Triton's interpreter (TRITON_INTERPRET=1), so no GPU is needed.

Tolerances are tighter than the ones gsplat is held to on the GPU (Testing/GPU/check_cuda_renderer.py:
1e-4 absolute on images, 2e-3 of the largest gradient): both renderers run the same float32
math here, and differ only in how T is accumulated (products vs float64 log-sums).
The renderer-selection tests at the end need no triton.
"""
from __future__ import annotations

import math

import pytest

from triton_interpreter import needs_triton as _needs_triton  # first: sets TRITON_INTERPRET

torch = pytest.importorskip("torch")

from MedGSLib.errors import DeviceError
from MedGSLib.model import Splats
from MedGSLib.render.base import select_renderer
from MedGSLib.render.torch_renderer import TorchRenderer

needs_triton = _needs_triton("Triton renderer")


def scene(seed, n, n_frames, C, h, w, max_radius=7, opac=(0.2, 0.9)):
    """Random packed splats with small, random radii (some 0): tile culling cuts footprints."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 2, generator=g) * torch.tensor([w + 4.0, h + 4.0]) - 2.0   # some off-image
    s = 1.0 + 3.0 * torch.rand(n, 2, generator=g)
    th = torch.rand(n, generator=g) * math.pi
    c, sn = torch.cos(th), torch.sin(th)
    cov_a = c * c * s[:, 0] ** 2 + sn * sn * s[:, 1] ** 2
    cov_c = sn * sn * s[:, 0] ** 2 + c * c * s[:, 1] ** 2
    cov_b = (s[:, 0] ** 2 - s[:, 1] ** 2) * c * sn
    det = cov_a * cov_c - cov_b ** 2
    conics = torch.stack([cov_c / det, -cov_b / det, cov_a / det], 1)
    opacities = opac[0] + (opac[1] - opac[0]) * torch.rand(n, generator=g)
    colors = torch.rand(n, C, generator=g) * 2 - 0.5
    radii = torch.randint(0, max_radius + 1, (n, 2), generator=g, dtype=torch.int32)
    fids = torch.sort(torch.randint(0, n_frames, (n,), generator=g)).values
    return [means, conics, opacities, colors], radii, fids


def render_with_grads(renderer, leaves, radii, fids, n_frames, h, w, background=None, seed=0):
    leaves = [x.detach().clone().requires_grad_(True) for x in leaves]
    sp = Splats(*leaves, radii, fids, torch.arange(radii.shape[0]), n_frames, h, w)
    out = renderer.render(sp, background)
    g = torch.Generator().manual_seed(seed)
    wi = torch.rand(out.images.shape, generator=g) - 0.3
    wa = torch.rand(out.alphas.shape, generator=g) - 0.3
    ((out.images * wi).sum() + (out.alphas * wa).sum()).backward()
    grads = [x.grad for x in leaves] + ([background.grad] if background is not None else [])
    return out, grads


def assert_same(ref, got, img_atol=1e-5, grad_rtol=1e-4):
    (a, ga), (b, gb) = ref, got
    assert a.n_isects == b.n_isects
    torch.testing.assert_close(b.images, a.images, atol=img_atol, rtol=0)
    torch.testing.assert_close(b.alphas, a.alphas, atol=img_atol, rtol=0)
    for name, x, y in zip(("means2d", "conics", "opacities", "colors", "background"), ga, gb):
        scale = float(x.abs().max())
        assert scale > 0, name
        err = float((x - y).abs().max())
        assert err <= grad_rtol * scale, f"{name}: max |diff| {err:.3g} vs scale {scale:.3g}"


@needs_triton
@pytest.mark.parametrize("n_frames,C,h,w,n,tile,chunk,bwd_chunk", [
    (1, 1, 19, 23, 40, 8, 4, 2),
    (3, 3, 21, 34, 60, 8, 8, 4),
    (2, 5, 17, 33, 50, 16, 16, 8),      # C not a power of two; default-sized chunks
    (4, 2, 12, 12, 30, 4, 2, 2),        # many tiny tiles
])
def test_matches_torch_renderer(n_frames, C, h, w, n, tile, chunk, bwd_chunk):
    from MedGSLib.render.triton_renderer import TritonRenderer
    leaves, radii, fids = scene(n_frames * 10 + C, n, n_frames, C, h, w)
    ref = render_with_grads(TorchRenderer(tile_size=tile), leaves, radii, fids, n_frames, h, w)
    got = render_with_grads(TritonRenderer(tile_size=tile, chunk=chunk, bwd_chunk=bwd_chunk),
                            leaves, radii, fids, n_frames, h, w)
    # the culling really cuts footprints: an uncut render differs
    uncut = TorchRenderer(tile_size=tile).render(
        Splats(*leaves, torch.full_like(radii, 100), fids, torch.arange(n), n_frames, h, w))
    assert float((uncut.images - ref[0].images).detach().abs().max()) > 1e-2
    assert_same(ref, got)


@needs_triton
def test_early_stop_across_chunks_and_background():
    # 24 opaque splats stacked on one spot with chunks of 4: every centre pixel stops inside a
    # chunk (T would drop below 1e-4 after a few splats); outer pixels run past several chunks
    from MedGSLib.render.triton_renderer import TritonRenderer
    leaves, radii, fids = scene(5, 24, 1, 2, 16, 16, max_radius=12, opac=(0.85, 1.0))
    leaves[0] = 8.0 + torch.rand(24, 2, generator=torch.Generator().manual_seed(1))
    radii = torch.full_like(radii, 12)
    bg = torch.tensor([0.3, -0.2], requires_grad=True)
    bg2 = bg.detach().clone().requires_grad_(True)
    ref = render_with_grads(TorchRenderer(tile_size=8), leaves, radii, fids, 1, 16, 16, bg)
    got = render_with_grads(TritonRenderer(tile_size=8, chunk=4, bwd_chunk=4), leaves, radii, fids,
                            1, 16, 16, bg2)
    assert float(ref[0].alphas.detach().max()) > 1 - 2e-4            # the stop rule is exercised
    assert float((ref[0].alphas.detach() > 0.99).float().mean()) > 0.2
    assert_same(ref, got)


@needs_triton
def test_clamped_alpha_and_empty_frames():
    # opacity 1 at the centre -> alpha clamped to 0.999 (no gradient through the clamp there);
    # frame 1 has no splat at all, frame 2 only a culled one
    from MedGSLib.render.triton_renderer import TritonRenderer
    t = torch.tensor
    leaves = [t([[5.5, 4.5], [11.5, 7.5], [3.0, 3.0]]), t([[0.3, 0.05, 0.2], [0.5, 0.0, 0.5], [0.5, 0.0, 0.5]]),
              t([1.0, 0.7, 0.9]), t([[1.0], [0.5], [0.2]])]
    radii = t([[6, 6], [8, 8], [0, 0]], dtype=torch.int32)
    fids = t([0, 0, 2])
    ref = render_with_grads(TorchRenderer(tile_size=4), leaves, radii, fids, 3, 9, 13)
    got = render_with_grads(TritonRenderer(tile_size=4, chunk=2, bwd_chunk=2), leaves, radii, fids, 3, 9, 13)
    assert float(got[0].alphas[0, 4, 5, 0]) == pytest.approx(0.999, abs=1e-6)
    assert float(got[0].images[1:].abs().max()) == 0.0 and got[0].n_isects == 9 + 12   # 3x3 and 4x3 tiles of 4 px
    assert float(got[1][2][2]) == 0.0                        # the culled splat gets no gradient
    assert_same(ref, got)


@needs_triton
def test_binning_equals_torch_intersections_and_no_splats():
    from MedGSLib.render.triton_renderer import TritonRenderer, bin_tiles
    leaves, radii, fids = scene(9, 70, 3, 1, 29, 31)
    sp = Splats(*leaves, radii, fids, torch.arange(70), 3, 29, 31)
    sid_ref, key_ref, tw, th = TorchRenderer(tile_size=8).intersections(sp)
    sid, offsets, tw2, th2 = bin_tiles(sp, 8)
    assert (tw, th) == (tw2, th2) and torch.equal(sid.long(), sid_ref)
    counts = torch.bincount(key_ref, minlength=3 * th * tw)
    assert torch.equal(offsets[1:].long(), torch.cumsum(counts, 0)) and int(offsets[0]) == 0
    empty = Splats(*(x[:0] for x in leaves), radii[:0], fids[:0], torch.arange(0), 2, 5, 6)
    out = TritonRenderer().render(empty, torch.tensor([0.25]))
    assert out.n_isects == 0 and out.images.shape == (2, 5, 6, 1)
    assert torch.all(out.images == 0.25) and torch.all(out.alphas == 0)


# ------------------------------------------------------------------ selection (no triton needed)

def test_cpu_and_mps_devices_use_the_torch_renderer():
    r, why = select_renderer(torch.device("cpu"))
    assert r.name == "torch" and "CPU" in why
    r, why = select_renderer(torch.device("mps"))
    assert r.name == "torch" and "Apple" in why
    for choice in ("gsplat", "triton"):
        with pytest.raises(DeviceError, match="CUDA"):
            select_renderer(torch.device("cpu"), choice)


@needs_triton
def test_status_smoke_render_passes_on_the_interpreter():
    # triton_status() runs this on the GPU before choosing triton: a wrong expectation would
    # silently send every CUDA user to the slow torch renderer
    from MedGSLib.render.triton_renderer import _smoke_test
    _smoke_test("cpu")
