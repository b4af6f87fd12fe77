"""GPU check: the fused Triton conditioning (MedGSLib/render/triton_condition.py) against the torch
code of FoldedGaussians.condition, and the time of each (~15 s on an H200).

    python Testing/GPU/check_condition.py             # 300k Gaussians x 32 frames, image + 5-label heads
    python Testing/GPU/check_condition.py --smoke     # CPU under TRITON_INTERPRET=1, tiny: checks the script

Scene: what init_pixels gives a 128-frame 256 x 256 case (m spread over the frames, temporal std of
one frame gap), with anisotropic sizes, a random degree-7 polynomial (a trained model bends) and a
5-label head; the
times are 32 random frames, pairs from active_pairs, as one training step draws them.
Both paths go through model.condition (MEDGS_FUSED_CONDITION switches the path). Reference: the
torch code in float64. Checked: the four outputs (2e-5 of each one's largest magnitude), every
parameter gradient of a random weighted sum of them (1e-4 of its largest magnitude: Triton's fast
exp and division, and float32 atomics in any order), radii equal to the float32 torch code's on all
but 1e-4 of the pairs and never off by more than 1 (a ceil on the edge of an integer).
Timed (median of --reps after warm-up, synchronised wall clock): forward, forward + backward; and the
kernels launched by one forward + backward (torch.profiler). Exits 1 on a mismatch.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OUT_TOL = 2e-5
GRAD_TOL = 1e-4
RADII_FRAC = 1e-4
HEADS = (("image", None), ("seg", [0, 1, 2, 3, 4]))


def scene(n, n_frames, size, degree, n_labels, device, seed=0):
    import torch

    from MedGSLib.model import FoldedGaussians, _logit, focal
    g = torch.Generator().manual_seed(seed)
    fx = focal(size)
    # anisotropic (trained Gaussians are): with equal axes the rotation has no effect and its
    # gradient is rounding noise, which no relative tolerance can judge
    radius_px = 0.5 + 2.0 * torch.rand(n, 2, generator=g)
    params = {
        "xyz": (torch.rand(n, 2, generator=g) - 0.5) * (size / fx),
        "scaling": torch.log(radius_px / fx),
        "rotation": torch.randn(n, 1, generator=g),
        "m": _logit(torch.rand(n, generator=g).clamp(1e-4, 1 - 1e-4))[:, None],
        "sigma": torch.full((n, 1), -math.log(n_frames)),
        "w": torch.randn(n, 2 * degree, generator=g) * 0.05,
        "color": torch.randn(n, 1, generator=g),
        "opacity": torch.randn(n, 1, generator=g),
        "seg_color": torch.randn(n, n_labels, generator=g),
        "seg_opacity": torch.randn(n, 1, generator=g),
    }
    return FoldedGaussians({k: v.to(device).contiguous().requires_grad_(True) for k, v in params.items()},
                           degree)


def use_fused(flag: bool, smoke: bool):
    """Point model.condition at one path. On the GPU through the real switch (and the fused path must
    be usable there); on the CPU smoke run the CUDA-only check is replaced."""
    from MedGSLib import model
    if smoke:
        model.fused_condition_usable = lambda x: flag
        return
    os.environ["MEDGS_FUSED_CONDITION"] = "1" if flag else "0"


def step(model, times, pairs, size, head, ch, weights):
    sp = model.condition(times, size, size, head, pairs, ch)
    outs = (sp.means2d, sp.conics, sp.opacities, sp.colors)
    return sp, sum((x * w).sum() for x, w in zip(outs, weights))


def grads_of(model, loss):
    for v in model.params.values():
        v.grad = None
    loss.backward()
    return {k: v.grad.detach().clone() for k, v in model.params.items() if v.grad is not None}


def worst(ref, got):
    """max |got - ref| / max |ref| (0 when both are 0)."""
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    err = float((got.double() - ref).abs().max()) if ref.numel() else 0.0
    return err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))


def timed(fn, reps, sync):
    for _ in range(3):
        fn()
    sync()
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ms.append(1e3 * (time.perf_counter() - t0))
    return sorted(ms)[len(ms) // 2]


def launches(fn, device):
    import torch
    if device != "cuda":
        return None
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def check_head(model, model64, times, pairs, size, head, ch, args, sync, device, step_ms):
    """Compare and time one head; failures as lines, forward + backward ms added to step_ms."""
    import torch
    failures = []
    use_fused(False, args.smoke)
    P = int(pairs[0].shape[0])
    gen = torch.Generator().manual_seed(1)
    C = 1 if head == "image" else len(ch)
    weights = [(torch.rand(shape, generator=gen) - 0.3).to(device) for shape in ((P, 2), (P, 3), (P,), (P, C))]
    w64 = [w.double() for w in weights]
    ref, loss64 = step(model64, times.double(), pairs, size, head, ch, w64)
    gref = grads_of(model64, loss64)
    sp32, loss32 = step(model, times, pairs, size, head, ch, weights)
    g32 = grads_of(model, loss32)
    use_fused(True, args.smoke)
    if not args.smoke:
        from MedGSLib.model import fused_condition_usable
        if not fused_condition_usable(model.params["xyz"]):
            from MedGSLib.render.triton_renderer import triton_status
            return [f"{head}: fused path not usable here: {triton_status()[1]}"]
    spf, lossf = step(model, times, pairs, size, head, ch, weights)
    gf = grads_of(model, lossf)

    print(f"{head} head: P = {P} pairs, C = {C}; max |error| / max |value| against the float64 torch code")
    print(f"  {'':>12} {'torch f32':>10} {'fused':>10}")
    for name in ("means2d", "conics", "opacities", "colors"):
        r = getattr(ref, name).detach()
        e32, ef = worst(r, getattr(sp32, name).detach()), worst(r, getattr(spf, name).detach())
        print(f"  {name:>12} {e32:10.2e} {ef:10.2e}")
        if not ef <= OUT_TOL:
            failures.append(f"{head} {name}: {ef:.2e} > {OUT_TOL}")
    for name in gref:
        e32, ef = worst(gref[name], g32[name]), worst(gref[name], gf.get(name, torch.zeros(0)))
        print(f"  {'d/d ' + name:>12} {e32:10.2e} {ef:10.2e}")
        if not ef <= GRAD_TOL:
            failures.append(f"{head} grad {name}: {ef:.2e} > {GRAD_TOL}")
    if sorted(gf) != sorted(gref):
        failures.append(f"{head}: gradients of {sorted(gf)}, expected {sorted(gref)}")
    dr = (spf.radii - sp32.radii).abs()
    n_off = int((dr > 0).sum())
    print(f"  radii: {n_off} of {P} differ from the float32 torch code (max {int(dr.max()) if P else 0})")
    if n_off > RADII_FRAC * P or (P and int(dr.max()) > 1):
        failures.append(f"{head} radii: {n_off} differ")

    for label, fused in (("torch", False), ("fused", True)):
        use_fused(fused, args.smoke)
        fwd = timed(lambda: model.condition(times, size, size, head, pairs, ch), args.reps, sync)
        both = timed(lambda: step(model, times, pairs, size, head, ch, weights)[1].backward(), args.reps, sync)
        n_k = launches(lambda: step(model, times, pairs, size, head, ch, weights)[1].backward(), device)
        extra = "" if n_k is None else f", {n_k} kernels per forward + backward (weighted sum included)"
        print(f"  {label}: forward {fwd:.3f} ms, forward + backward {both:.3f} ms{extra}")
        step_ms[label] = step_ms.get(label, 0.0) + both
    return failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny sizes")
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--frames", type=int, default=128, help="frames of the case (sets m's spread and sigma)")
    ap.add_argument("--batch", type=int, default=32, help="frames conditioned on in one call")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--degree", type=int, default=7)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    if args.smoke:
        # before anything imports triton: it picks interpreter or compiler at import
        os.environ["TRITON_INTERPRET"] = "1"
        args.n, args.frames, args.batch, args.size, args.reps = 600, 16, 6, 32, 2
    import torch

    from MedGSLib.model import FoldedGaussians
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("FAIL no CUDA device (use --smoke on a CPU)")
        return 1
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = scene(args.n, args.frames, args.size, args.degree, 5, device)
    model64 = FoldedGaussians({k: v.detach().double().requires_grad_(True) for k, v in model.params.items()},
                              args.degree)
    gen = torch.Generator().manual_seed(2)
    frames = torch.randperm(args.frames, generator=gen)[:args.batch].sort().values
    times = (frames.float() / args.frames).to(device)
    pairs = model.active_pairs(times)
    print(f"{args.n} Gaussians, {args.batch} of {args.frames} frames, {args.size}^2 px, degree {args.degree}, "
          f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu (interpreter)'}")
    failures = []
    step_ms: dict = {}
    for head, ch in HEADS:
        failures += check_head(model, model64, times, pairs, args.size, head, ch, args, sync, device, step_ms)
    if len(step_ms) == 2:
        print(f"both heads (one training step's conditioning), forward + backward: torch {step_ms['torch']:.3f} ms, "
              f"fused {step_ms['fused']:.3f} ms")
    for f in failures:
        print("FAIL", f)
    print("OK" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
