"""GPU check: the gsplat and Triton renderers against the pure-torch renderer, and their speed.

    python Testing/GPU/check_cuda_renderer.py                 # everything (~5 min on an H200)
    python Testing/GPU/check_cuda_renderer.py --only random   # sections: random trained speed sweep

1. random: random scenes (packed splats over several frames, 1, 2 and 3 channels): images, alphas
   and the gradients of means2d, conics, opacities and colors, each backend (gsplat, triton)
   against torch. Tolerances: 1e-4 absolute on images (gsplat uses --use_fast_math __expf and
   float32 products for T; we use float64 log-sums), relative 2e-3 of the largest gradient
   (atomicAdd order and the fast exp).
2. trained: a small case trained on gsplat and triton (torch too with --torch-train, ~150 s):
   held-out PSNR compared, and the trained gsplat model rendered by every backend.
3. speed: the 256 x 256 x 128 case (bench_speed's ct_aorta resampled, every 2nd slice kept; a
   synthetic volume if .dev/data is missing): full `fast` training with gsplat and triton
   (seconds, held-out PSNR), then with one trained model the steady training step (ms/step) and
   the renderer's forward+backward alone for torch, triton and gsplat.
4. sweep: Triton block settings (tile, chunk, backward chunk, warps) timed on that scene.
Every backend and section runs in its own try block: a failure prints FAIL and the rest goes on.
Exits non-zero when a check failed.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
FAILURES: list[str] = []
DEV = "cuda"      # --smoke: "cpu" with TRITON_INTERPRET=1, tiny sizes (checks this script without a GPU)
SMOKE = False


def sync():
    import torch
    if DEV == "cuda":
        torch.cuda.synchronize()


def fail(what: str, err: BaseException | None = None):
    FAILURES.append(what)
    print(f"FAIL {what}" + (f": {type(err).__name__}: {err}" if err is not None else ""), flush=True)
    if err is not None:
        traceback.print_exc(limit=4)


def backends(names=("gsplat", "triton", "torch")):
    """{name: renderer} for the backends that work here; says why for the others."""
    from MedGSLib.render.gsplat_renderer import GsplatRenderer, gsplat_status
    from MedGSLib.render.torch_renderer import TorchRenderer
    from MedGSLib.render.triton_renderer import TritonRenderer, triton_status
    out = {}
    for name in names:
        t0 = time.perf_counter()
        if name == "torch":
            out[name] = TorchRenderer(tile_size=16)
            continue
        if SMOKE:
            ok, why = name == "triton", "smoke run on the CPU interpreter"
        else:
            ok, why = gsplat_status() if name == "gsplat" else triton_status()
        print(f"{name}: {'available' if ok else 'UNAVAILABLE'} ({why}); first use {time.perf_counter() - t0:.1f} s",
              flush=True)
        if ok:
            out[name] = GsplatRenderer() if name == "gsplat" else TritonRenderer()
    return out


def random_splats(T, N, H, W, C, seed):
    import torch

    from MedGSLib.model import FoldedGaussians
    g = torch.Generator().manual_seed(seed)
    model = FoldedGaussians.init_random(N, H, W, 3, 0.5, g, DEV)
    model.params["opacity"] = torch.randn(N, 1, generator=g).to(DEV)
    model.params["color"] = torch.randn(N, C, generator=g).to(DEV)
    model.params["scaling"] = model.params["scaling"] + 1.0
    t = torch.rand(T, generator=g).to(DEV)
    return model, t


def render_grads(model, t, H, W, renderer):
    import torch
    for p in model.params.values():
        p.requires_grad_(True)
        p.grad = None
    sp = model.condition(t, H, W, "image")
    for x in (sp.means2d, sp.conics, sp.opacities, sp.colors):
        x.retain_grad()
    o = renderer.render(sp)
    w = torch.linspace(0.5, 1.5, o.images.numel(), device=DEV).view_as(o.images)
    ((o.images * w).sum() + o.alphas.sum()).backward()
    return {"img": o.images.detach(), "alpha": o.alphas.detach(), "n_isects": o.n_isects,
            **{k: getattr(sp, k).grad.detach() for k in ("means2d", "conics", "opacities", "colors")}}


def compare(a, b, rtol_grad=2e-3, atol_img=1e-4):
    """(ok, errors) of outputs `a` against the torch outputs `b`."""
    res = {"img": float((a["img"] - b["img"]).abs().max()), "alpha": float((a["alpha"] - b["alpha"]).abs().max())}
    ok = res["img"] < atol_img and res["alpha"] < atol_img and a["n_isects"] == b["n_isects"]
    for k in ("means2d", "conics", "opacities", "colors"):
        res[k] = float((a[k] - b[k]).abs().max()) / (float(b[k].abs().max()) + 1e-12)
        ok = ok and res[k] < rtol_grad
    return ok, res


def fmt(res):
    return (f"max|img| {res['img']:.2e} max|alpha| {res['alpha']:.2e} rel grad means2d {res['means2d']:.1e} "
            f"conics {res['conics']:.1e} opac {res['opacities']:.1e} colors {res['colors']:.1e}")


def check_model(label, model, t, H, W, rends):
    ref = render_grads(model, t, H, W, rends["torch"])
    for name, r in rends.items():
        if name == "torch":
            continue
        try:
            good, res = compare(render_grads(model, t, H, W, r), ref)
            print(f"{label} {name} vs torch: {'PASS' if good else 'FAIL'} {fmt(res)} isects {ref['n_isects']}",
                  flush=True)
            if not good:
                FAILURES.append(f"{label} {name}")
        except Exception as err:  # noqa: BLE001 - report and go on with the next backend
            fail(f"{label} {name}", err)


def section_random(rends):
    cases = [(4, 3000, 64, 80, 1, 0), (6, 20000, 128, 96, 3, 1), (2, 500, 37, 53, 2, 2), (16, 60000, 256, 256, 1, 3),
             (3, 8000, 96, 96, 7, 4)]
    for (T, N, H, W, C, seed) in ([(2, 60, 20, 24, 3, 0)] if SMOKE else cases):
        model, t = random_splats(T, N, H, W, C, seed)
        check_model(f"random T={T} N={N} {H}x{W} C={C}", model, t, H, W, rends)


def train_one(frames, cfg, renderer, name):
    import torch

    from MedGSLib.train import Trainer
    tr = Trainer(torch.from_numpy(frames), cfg, renderer=renderer, renderer_reason=name)
    sync()
    t1 = time.perf_counter()
    r = tr.train()
    sync()
    return r, time.perf_counter() - t1


def held_psnr(model, vol, keep, renderer):
    import torch

    from MedGSLib.slice_grid import render_positions
    from MedGSLib.losses import psnr
    n = vol.shape[0]
    n_kept = len(range(0, n, keep))
    dense = render_positions(model, np.arange(n) / keep, n_kept, vol.shape[1], vol.shape[2], renderer)
    held = np.array([i for i in range(n) if i % keep])
    return psnr(torch.from_numpy(np.clip(dense[held], 0, 1)), torch.from_numpy(vol[held]))


def section_trained(rends, torch_train):
    import torch

    from MedGSLib.api import default_config
    rng = np.random.default_rng(0)
    side = 24 if SMOKE else 96
    zz, yy, xx = np.mgrid[0:9 if SMOKE else 33, 0:side, 0:side].astype(np.float32)
    vol = (0.6 * np.exp(-((xx - 48 - 10 * np.sin(zz / 6)) ** 2 + (yy - 48) ** 2) / 300)
           + 0.3 * (((xx - 30) ** 2 + (yy - 60 + zz) ** 2) < 120) + 0.02 * rng.standard_normal(zz.shape))
    vol = np.clip(vol, 0, 1).astype(np.float32)
    kept = vol[::2]
    results = {}
    for name, rend in rends.items():
        if name == "torch" and not torch_train:
            continue
        try:
            cfg = default_config("fast", DEV, iterations=3 if SMOKE else 300, seed=0)
            cfg.schedule.early_stop_db = 0
            if SMOKE:
                cfg.model.num_points = 60
            r, el = train_one(kept, cfg, rend, name)
            results[name] = (r, held_psnr(r.model, vol, 2, rend))
            print(f"train {name} ({side}x{side}x{kept.shape[0]}, {r.info['iterations_run']} it): {el:.1f} s, {r.info['gaussians']} Gaussians, "
                  f"train PSNR {r.info['train_psnr']:.2f}, held-out PSNR {results[name][1]:.2f}", flush=True)
        except Exception as err:  # noqa: BLE001
            fail(f"train {name}", err)
    base = "gsplat" if "gsplat" in results else next(iter(results), None)
    for name in results:
        if name != base:
            gap = abs(results[base][1] - results[name][1])
            good = gap < 0.5
            print(f"held-out PSNR {base} vs {name} training: {'PASS' if good else 'FAIL'} gap {gap:.2f} dB "
                  f"(tolerance 0.5 dB: float rounding changes the random densification path)", flush=True)
            if not good:
                FAILURES.append(f"training gap {name}")
    if base is not None:
        check_model("trained scene", results[base][0].model, torch.linspace(0, 0.95, 7, device=DEV), side, side,
                    rends)


def load_256(case, size, keep):
    """(normalised volume [Z, Y, X] in [0, 1], source): the bench_speed case, else a synthetic one."""
    sys.path.insert(0, str(ROOT / "Testing" / "Benchmarks"))
    try:
        from bench_speed import find_case, resize

        from MedGSLib.io import read_volume
        ref = resize(read_volume(find_case(case)).array, size)
        src = f"{case} resampled to {size}"
    except (SystemExit, Exception) as err:  # noqa: BLE001 - data missing on this box: synthetic stand-in
        print(f"case {case} unavailable ({err}); using a synthetic {size} volume", flush=True)
        z, y, x = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in size], indexing="ij")
        ref = (0.5 + 0.3 * np.sin(6 * x + 2 * z) * np.cos(5 * y) + 0.2 * (x * x + y * y < 0.3 + 0.1 * z))
        src = f"synthetic {size}"
    n = (ref.shape[0] - 1) // keep * keep + 1
    ref = ref[:n].astype(np.float32)
    lo, hi = float(ref.min()), float(ref.max())
    return (ref - lo) / max(hi - lo, 1e-12), src


def cuda_ms(fn, reps):
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps * 1e3


def section_speed(rends, args, sweep):
    import torch

    from MedGSLib.api import default_config
    from MedGSLib.model import FoldedGaussians
    from MedGSLib.train import Trainer
    vol, src = load_256(args.case, args.size, args.keep)
    kept = np.ascontiguousarray(vol[::args.keep])
    print(f"speed case: {src}, {kept.shape[0]} kept slices of {vol.shape[0]}", flush=True)
    trained = {}
    for name in ("gsplat", "triton"):
        if name not in rends:
            continue
        try:
            cfg = default_config("fast", DEV, seed=0, iterations=3 if SMOKE else None)
            if SMOKE:
                cfg.model.num_points = 60
            r, el = train_one(kept, cfg, rends[name], name)
            p = held_psnr(r.model, vol, args.keep, rends[name])
            trained[name] = r.model
            print(f"full train {name}: {el:.2f} s for {r.info['iterations_run']} iterations "
                  f"({el / max(1, r.info['iterations_run']) * 1e3:.1f} ms/it), {r.info['gaussians']} Gaussians, "
                  f"{r.info['n_isects_per_step']:.0f} isects/step, {r.info['pair_throughput']:.2e} pairs/s, "
                  f"held-out PSNR {p:.2f} dB", flush=True)
        except Exception as err:  # noqa: BLE001
            fail(f"full train {name}", err)
    if not trained:
        print("speed: no trained model (neither gsplat nor triton trained); steps not timed", flush=True)
        return
    model = trained.get("gsplat", trained.get("triton"))
    cfg = default_config("fast", DEV, seed=0)
    for name in ("torch", "triton", "gsplat"):
        if name not in rends:
            continue
        try:
            m = FoldedGaussians({k: v.detach().clone() for k, v in model.params.items()}, model.poly_degree)
            tr = Trainer(torch.from_numpy(kept), cfg, model=m, renderer=rends[name], renderer_reason=name)

            def step(tr=tr):
                frames, pairs = tr._pick_frames()
                loss, _, sfs = tr._loss_terms(frames, pairs, True, False)
                tr.opt.zero_grad()
                loss.backward()
                tr.opt.step()
                return sfs
            reps = 2 if SMOKE else 5 if name == "torch" else 30
            ms = cuda_ms(step, reps)
            frames, _ = tr._pick_frames()
            t = tr.times[torch.as_tensor(frames, device=DEV)]
            sp = m.condition(t, tr.H, tr.W, "image", m.active_pairs(t))
            leaves = [x.detach().requires_grad_(True) for x in (sp.means2d, sp.conics, sp.opacities, sp.colors)]
            sp_leaf = type(sp)(*leaves, sp.radii, sp.frame_ids, sp.gauss_ids, sp.n_frames, sp.height, sp.width)

            def fb(r=rends[name], s=sp_leaf):
                o = r.render(s)
                (o.images.sum() + o.alphas.sum()).backward()
            fb_ms = cuda_ms(fb, reps)
            n_isects = rends[name].render(sp_leaf).n_isects
            print(f"steady step {name}: {ms:.2f} ms/step (model {m.n} Gaussians, {len(frames)} frames/step); "
                  f"render fwd+bwd alone {fb_ms:.2f} ms for {n_isects} isects "
                  f"({n_isects * rends[name].tile_size ** 2 / (fb_ms * 1e-3):.2e} pairs/s)", flush=True)
            if sweep and name == "triton":
                section_sweep(sp_leaf, rends["torch"])
        except Exception as err:  # noqa: BLE001
            fail(f"steady step {name}", err)


def section_sweep(sp, torch_renderer):
    """Triton block settings on one training step's splats (each checked against torch once)."""
    import torch

    from MedGSLib.render.triton_renderer import TritonRenderer
    for ts, k, kb, nw in [(16, 16, 8, 8), (16, 8, 8, 8), (16, 16, 4, 8), (16, 32, 8, 8), (16, 8, 4, 4),
                          (8, 16, 8, 2), (8, 8, 4, 2), (8, 16, 8, 4), (8, 32, 16, 4)]:
        try:
            r = TritonRenderer(tile_size=ts, chunk=k, bwd_chunk=kb, num_warps=nw)

            def fwd(r=r):
                with torch.no_grad():
                    r.render(sp)

            def fb(r=r):
                o = r.render(sp)
                (o.images.sum() + o.alphas.sum()).backward()
            f_ms, fb_ms = cuda_ms(fwd, 1 if SMOKE else 20), cuda_ms(fb, 1 if SMOKE else 20)
            img = r.render(sp).images.detach()
            err = float((img - torch_renderer.render(sp).images.detach()).abs().max())
            print(f"sweep triton tile {ts} chunk {k} bwd_chunk {kb} warps {nw}: fwd {f_ms:.2f} ms, "
                  f"fwd+bwd {fb_ms:.2f} ms, max|img - torch| {err:.1e}", flush=True)
        except Exception as err:  # noqa: BLE001
            fail(f"sweep {ts}/{k}/{kb}/{nw}", err)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=["random", "trained", "speed", "sweep"])
    ap.add_argument("--torch-train", action="store_true", help="also train the small case on torch (~150 s)")
    ap.add_argument("--case", default="ct_aorta")
    ap.add_argument("--size", type=int, nargs=3, default=[128, 256, 256], help="Z Y X")
    ap.add_argument("--keep", type=int, default=2)
    ap.add_argument("--smoke", action="store_true",
                    help="no GPU: tiny sizes on the CPU, triton interpreted (set TRITON_INTERPRET=1; checks the script)")
    args = ap.parse_args()
    import torch
    global DEV, SMOKE
    if args.smoke:
        DEV, SMOKE = "cpu", True
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("no CUDA device: this check runs on a GPU machine")
        return 1
    try:
        import triton
        tv = triton.__version__
    except ImportError:
        tv = "not installed"
    print(f"device: {torch.cuda.get_device_name(0) if DEV == 'cuda' else 'CPU (smoke)'}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
          f"triton {tv}", flush=True)
    rends = backends()
    sections = {"random": lambda: section_random(rends),
                "trained": lambda: section_trained(rends, args.torch_train),
                "speed": lambda: section_speed(rends, args, "sweep" in args.only)}
    if "sweep" in args.only and "speed" not in args.only:
        print("sweep runs inside the speed section: add 'speed'", flush=True)
    for name in args.only:
        if name in sections:
            t0 = time.perf_counter()
            print(f"--- {name}", flush=True)
            try:
                sections[name]()
            except Exception as err:  # noqa: BLE001
                fail(f"section {name}", err)
            print(f"--- {name} took {time.perf_counter() - t0:.1f} s", flush=True)
    print("ALL PASS" if not FAILURES else f"{len(FAILURES)} FAILED: {', '.join(FAILURES)}")
    return int(bool(FAILURES))


if __name__ == "__main__":
    sys.exit(main())
