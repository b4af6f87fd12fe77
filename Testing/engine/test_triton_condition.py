"""Fused Triton conditioning against the torch code of FoldedGaussians.condition: every output and
the gradient of every raw parameter, on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1).

The fused path is reached through model.condition itself (its CUDA-only switch is forced on), so the
hook is what is tested. The reference is the torch code run in float64: the float32 torch code is
itself up to 1.5e-5 (of the largest gradient) away from it on the rotation gradient, so comparing two
float32 results would measure operation order. The fused float32 results must lie within 1e-5 of
each output's or gradient's largest magnitude of the float64 ones; radii (integers, from the same
float32 values) must equal the float32 torch code's.
"""
from __future__ import annotations


import pytest

from triton_interpreter import needs_triton as _needs_triton  # first: sets TRITON_INTERPRET

torch = pytest.importorskip("torch")

from MedGSLib.model import FoldedGaussians

needs_triton = _needs_triton("fused conditioning")

RTOL = 1e-5
OUTPUTS = ("means2d", "conics", "opacities", "colors")


def model(seed, n, degree, n_labels, sigma=0.08):
    """Random Gaussians whose temporal extent spans a few frames, so a Gaussian is hit by several
    pairs; colours straddle the clamp at 0 (SH_C0 c + 0.5 < 0 for c < -1.77)."""
    g = torch.Generator().manual_seed(seed)
    params = {
        "xyz": (torch.rand(n, 2, generator=g) - 0.5) * 0.6,
        "scaling": -4.0 + torch.randn(n, 2, generator=g),
        "rotation": torch.randn(n, 1, generator=g) * 2,
        "m": torch.randn(n, 1, generator=g) * 1.5,
        "sigma": torch.log(sigma * (0.5 + torch.rand(n, 1, generator=g))),
        "w": torch.randn(n, 2 * degree, generator=g) * 0.5,
        "color": torch.randn(n, 1, generator=g) * 2,
        "opacity": torch.randn(n, 1, generator=g) * 2,
        "seg_color": torch.randn(n, n_labels, generator=g) * 2,
        "seg_opacity": torch.randn(n, 1, generator=g) * 2,
    }
    return FoldedGaussians({k: v.requires_grad_(True) for k, v in params.items()}, degree)


def run(fg, times, head, channels, fused, block, monkeypatch, seed=3):
    """Outputs of condition and the gradients of all parameters from a random weighted sum."""
    from MedGSLib import model as model_module
    from MedGSLib.render import triton_condition
    monkeypatch.setattr(model_module, "fused_condition_usable", lambda x: fused)
    monkeypatch.setattr(triton_condition, "BLOCK", block)
    for v in fg.params.values():
        v.grad = None
    sp = fg.condition(times, 37, 53, head, channels=channels)
    g = torch.Generator().manual_seed(seed)
    outs = [getattr(sp, k) for k in OUTPUTS]
    loss = sum((x * (torch.rand(x.shape, generator=g) - 0.3)).sum() for x in outs)
    loss.backward()
    grads = {k: v.grad.clone() for k, v in fg.params.items() if v.grad is not None}
    return sp, grads


def assert_close_scaled(name, ref, got):
    assert ref.shape == got.shape, name
    if ref.numel() == 0:
        return
    scale = float(ref.abs().max())
    err = float((ref - got).abs().max())
    assert err <= RTOL * scale, f"{name}: max |diff| {err:.3g} vs scale {scale:.3g}"


def compare(fg, times, head, channels, block, monkeypatch):
    ref32, _ = run(fg, times, head, channels, False, block, monkeypatch)
    fg64 = FoldedGaussians({k: v.detach().double().requires_grad_(v.requires_grad) for k, v in fg.params.items()},
                           fg.poly_degree)
    ref, gref = run(fg64, times.double(), head, channels, False, block, monkeypatch)
    got, ggot = run(fg, times, head, channels, True, block, monkeypatch)
    for k in OUTPUTS:
        assert getattr(got, k).dtype == torch.float32
        assert_close_scaled(k, getattr(ref, k).detach(), getattr(got, k).detach().double())
    assert got.radii.dtype == torch.int32 and torch.equal(got.radii, ref32.radii)
    assert torch.equal(got.frame_ids, ref.frame_ids) and torch.equal(got.gauss_ids, ref.gauss_ids)
    assert sorted(gref) == sorted(ggot)
    for k in gref:
        assert_close_scaled(k, gref[k], ggot[k].double())
    return ref, gref


@needs_triton
@pytest.mark.parametrize("degree,head,channels,block", [
    (1, "image", None, 16),             # C = 1
    (7, "image", None, 64),
    (7, "seg", [4, 0, 2, 1, 3], 16),    # C = 5 (not a power of two), channels reordered
    (1, "seg", None, 32),
])
def test_fused_matches_torch(degree, head, channels, block, monkeypatch):
    fg = model(degree * 10 + (channels is not None), 120, degree, 5)
    times = torch.arange(12, dtype=torch.float32) / 12
    ref, grads = compare(fg, times, head, channels, block, monkeypatch)
    P = ref.means2d.shape[0]
    hits = torch.bincount(ref.gauss_ids, minlength=fg.n)
    assert P % block != 0 and P > 2 * block         # a partial last block, several programs
    assert int(hits.max()) >= 3                      # atomics: one Gaussian, several pairs
    assert float((ref.colors == 0).float().mean()) > 0.05       # the clamp at 0 is exercised
    assert all(float(g.abs().max()) > 0 for g in grads.values())   # no comparison of zeros


@needs_triton
def test_no_active_pairs(monkeypatch):
    # every Gaussian sits near t = 0 with a tiny sigma; frames near 1 see none of them
    fg = model(5, 30, 7, 2, sigma=1e-3)
    with torch.no_grad():
        fg.params["m"].fill_(-8.0)
    times = torch.tensor([0.7, 0.9])
    assert fg.active_pairs(times)[0].numel() == 0
    ref, grads = compare(fg, times, "image", None, 16, monkeypatch)
    assert ref.means2d.shape == (0, 2) and ref.colors.shape == (0, 1)
    assert all(float(g.abs().max()) == 0 for g in grads.values())


@needs_triton
def test_frozen_geometry_gives_means2d_no_grad(monkeypatch):
    # seg_head_only freezes geometry: train.py reads means2d.requires_grad to skip densification stats
    fg = model(8, 40, 3, 2)
    for k in ("xyz", "scaling", "rotation", "m", "sigma", "w", "color", "opacity"):
        fg.params[k].requires_grad_(False)
    times = torch.arange(6, dtype=torch.float32) / 6
    from MedGSLib import model as model_module
    for fused in (False, True):
        monkeypatch.setattr(model_module, "fused_condition_usable", lambda x, f=fused: f)
        sp = fg.condition(times, 20, 24, "seg")
        assert not sp.means2d.requires_grad and not sp.conics.requires_grad
        assert sp.opacities.requires_grad and sp.colors.requires_grad
        (sp.opacities.sum() + sp.colors.sum()).backward()
    compare(fg, times, "seg", None, 16, monkeypatch)


def test_switch_is_off_on_cpu_and_by_environment(monkeypatch):
    from MedGSLib import model as model_module
    from MedGSLib.render import triton_renderer
    assert not model_module.fused_condition_usable(torch.zeros(1))
    monkeypatch.setattr(triton_renderer, "triton_status", lambda: (True, "ok"))
    cuda_like = type("T", (), {"device": torch.device("cuda")})()
    assert model_module.fused_condition_usable(cuda_like)
    monkeypatch.setattr(triton_renderer, "triton_status", lambda: (False, "no CUDA device"))
    assert not model_module.fused_condition_usable(cuda_like)
    monkeypatch.setattr(triton_renderer, "triton_status", lambda: (True, "ok"))
    monkeypatch.setenv("MEDGS_FUSED_CONDITION", "0")
    assert not model_module.fused_condition_usable(cuda_like)


@needs_triton
def test_gpu_check_script_runs_on_the_interpreter(monkeypatch, capsys):
    # the lead runs it on the GPU: its comparisons and exit code are checked here first
    from pathlib import Path

    from MedGSLib import model as model_module
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "GPU"))
    # --smoke swaps the CUDA-only switch: restore it after the test
    monkeypatch.setattr(model_module, "fused_condition_usable", model_module.fused_condition_usable)
    import check_condition
    assert check_condition.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert out.count("radii: 0 of") == 2 and out.rstrip().endswith("OK")
