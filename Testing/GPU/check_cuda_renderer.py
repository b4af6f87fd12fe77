"""GPU check: the gsplat CUDA backend against the pure-torch renderer (run on a CUDA machine).

    python Testing/GPU/check_cuda_renderer.py

1. Random scenes (packed splats over several frames, 1 and 3 channels): images, alphas and the
   gradients of means2d, conics, opacities and colors. Tolerances: 1e-4 absolute on images
   (gsplat uses --use_fast_math __expf and float32 products for T; we use float64 log-sums),
   relative 2e-3 of the largest gradient (atomicAdd order and the fast exp).
2. A trained scene: the same model rendered by both backends at fractional t.
3. The same small case trained on both backends: training PSNR and held-out PSNR compared.
Prints PASS/FAIL per check and exits non-zero on a failure.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def random_splats(T, N, H, W, C, seed):
    import torch
    from MedGSLib.model import FoldedGaussians
    g = torch.Generator().manual_seed(seed)
    model = FoldedGaussians.init_random(N, H, W, 3, 0.5, g, "cuda")
    model.params["opacity"] = torch.randn(N, 1, generator=g).cuda()
    model.params["color"] = torch.randn(N, C, generator=g).cuda()
    model.params["scaling"] = model.params["scaling"] + 1.0
    t = torch.rand(T, generator=g).cuda()
    return model, t


def compare(model, t, H, W, rtol_grad=2e-3, atol_img=1e-4):
    import torch
    from MedGSLib.render.gsplat_renderer import GsplatRenderer
    from MedGSLib.render.torch_renderer import TorchRenderer
    outs = {}
    for name, r in (("gsplat", GsplatRenderer()), ("torch", TorchRenderer(tile_size=16))):
        for p in model.params.values():
            p.requires_grad_(True)
            p.grad = None
        sp = model.condition(t, H, W, "image")
        for x in (sp.means2d, sp.conics, sp.opacities, sp.colors):
            x.retain_grad()
        o = r.render(sp)
        w = torch.linspace(0.5, 1.5, o.images.numel(), device="cuda").view_as(o.images)
        ((o.images * w).sum() + o.alphas.sum()).backward()
        outs[name] = {"img": o.images.detach(), "alpha": o.alphas.detach(), "n_isects": o.n_isects,
                      **{k: getattr(sp, k).grad.detach() for k in ("means2d", "conics", "opacities", "colors")}}
    a, b = outs["gsplat"], outs["torch"]
    res = {"img": float((a["img"] - b["img"]).abs().max()), "alpha": float((a["alpha"] - b["alpha"]).abs().max())}
    ok = res["img"] < atol_img and res["alpha"] < atol_img
    for k in ("means2d", "conics", "opacities", "colors"):
        scale = float(b[k].abs().max()) + 1e-12
        res[k] = float((a[k] - b[k]).abs().max()) / scale
        ok = ok and res[k] < rtol_grad
    res["n_isects"] = (a["n_isects"], b["n_isects"])
    return ok, res


def main() -> int:
    import torch
    from MedGSLib.render.gsplat_renderer import gsplat_status
    t0 = time.perf_counter()
    ok, why = gsplat_status()
    print(f"device: {torch.cuda.get_device_name(0)}; gsplat: {ok} ({why}); import/build {time.perf_counter() - t0:.1f} s")
    if not ok:
        return 1
    failures = 0
    for (T, N, H, W, C, seed) in [(4, 3000, 64, 80, 1, 0), (6, 20000, 128, 96, 3, 1), (2, 500, 37, 53, 2, 2)]:
        model, t = random_splats(T, N, H, W, C, seed)
        good, res = compare(model, t, H, W)
        failures += not good
        print(f"random T={T} N={N} {H}x{W} C={C}: {'PASS' if good else 'FAIL'} max|img| {res['img']:.2e} "
              f"max|alpha| {res['alpha']:.2e} rel grad means2d {res['means2d']:.1e} conics {res['conics']:.1e} "
              f"opac {res['opacities']:.1e} colors {res['colors']:.1e} isects {res['n_isects']}")
    # trained scene + training on both backends
    from MedGSLib.api import default_config
    from MedGSLib.losses import psnr
    from MedGSLib.train import Trainer
    from MedGSLib.render.gsplat_renderer import GsplatRenderer
    from MedGSLib.render.torch_renderer import TorchRenderer
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[0:33, 0:96, 0:96].astype(np.float32)
    vol = (0.6 * np.exp(-((xx - 48 - 10 * np.sin(zz / 6)) ** 2 + (yy - 48) ** 2) / 300)
           + 0.3 * (((xx - 30) ** 2 + (yy - 60 + zz) ** 2) < 120) + 0.02 * rng.standard_normal(zz.shape))
    vol = np.clip(vol, 0, 1).astype(np.float32)
    kept = vol[::2]
    held = np.arange(1, 33, 2)
    results = {}
    for name, rend in (("gsplat", GsplatRenderer()), ("torch", TorchRenderer(tile_size=16))):
        cfg = default_config("fast", "cuda", iterations=300, seed=0)
        cfg.schedule.early_stop_db = 0
        tr = Trainer(torch.from_numpy(kept), cfg, renderer=rend, renderer_reason=name)
        t1 = time.perf_counter()
        r = tr.train()
        torch.cuda.synchronize()
        el = time.perf_counter() - t1
        from MedGSLib.slice_grid import render_positions
        dense = render_positions(r.model, np.arange(33) / 2.0, kept.shape[0], 96, 96, rend)
        results[name] = (r, psnr(torch.from_numpy(np.clip(dense[held], 0, 1)), torch.from_numpy(vol[held])), el)
        print(f"train {name}: {el:.1f} s, {r.info['gaussians']} Gaussians, train PSNR {r.info['train_psnr']:.2f}, "
              f"held-out PSNR {results[name][1]:.2f}")
    good, res = compare(results["gsplat"][0].model, torch.linspace(0, 0.95, 7, device="cuda"), 96, 96)
    failures += not good
    print(f"trained scene: {'PASS' if good else 'FAIL'} {res}")
    gap = abs(results["gsplat"][1] - results["torch"][1])
    good = gap < 0.5
    failures += not good
    print(f"held-out PSNR gsplat vs torch training: {'PASS' if good else 'FAIL'} gap {gap:.2f} dB (tolerance 0.5 dB: "
          f"different float rounding changes the random densification path)")
    print(f"{'ALL PASS' if failures == 0 else f'{failures} FAILED'}")
    return int(failures > 0)


if __name__ == "__main__":
    sys.exit(main())
