"""Does the in-plane proxy (Testing/Benchmarks/inplane_proxy.py) predict the delivered in-between image's gain over
linear better than the self-check's twice-gap hold-out along z? (CPU is enough.)

    OMP_NUM_THREADS=2 python Testing/Benchmarks/bench_proxy.py --case ct_aorta mr_brainfs mr_tumor1 ct_abdomen3mm --k 2 3 4

Per cell (case, k), protocol of bench_flow.py (crop to n = (n-1)//12*12+1, keep v[::k], PSNR pooled on
the held-out slices on the reference's [0, 1] mapping):
- true: linear, Lanczos (SimpleITK, baselines_intensity.lanczos), blend = flow.interpolate
  (flow.image_between on fields flow.estimate fitted on the kept slices);
- z2, the self-check's estimator: every interior kept frame j predicted from kept frames j-1, j+1
  (and j-3, j+3 for the four-slice chain) with fields of the pairs (i, i+2), which never saw j; linear
  = mean of j-1 and j+1, Lanczos = selfcheck.held_out_lanczos. All interior frames (the trainer holds
  out one in six): an upper bound on that estimator's quality;
- the in-plane proxy, along y, along x and the mean of both (inplane.proxy_scores at the fractions r/k).
Then, against the true gain blend - linear over the cells: Pearson r, worst |miss| and mean miss of
each estimator, and which method (linear / lanczos / blend) each would pick against the truly best
(regret = true PSNR of the truly best minus that of the pick).

--calibrate (phase 2): the motion/fade confidence w = sigmoid(a log(r_fade / r_motion) + b) (the current
rule of flow.image_between is a=1, b=0 with RMS residuals) fitted per volume by a grid search on the
proxy planes (y and x pooled), then applied along z: true PSNR of the fitted rule vs the current one,
and the best rule on the truth (the headroom). The few lines of image_between needed are copied below
(`parts`), not changed in flow.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

METHODS = ("linear", "lanczos", "blend")
GRID_A = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
GRID_B = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


def psnr01(pred, truth) -> float:
    mse = float(np.mean((np.clip(pred, 0, 1) - np.clip(truth, 0, 1)) ** 2, dtype=np.float64))
    return -10.0 * np.log10(mse)


def parts(frames, quads, fields, alpha):
    """flow.image_between split before its confidence mix: (motion part, fade part, log(r_fade/r_motion)),
    each [P, H, W]; image_between = w * motion + (1 - w) * fade with w = sigmoid(log ratio)."""
    import torch
    from MedGSLib import flow
    p = flow.between_parts(frames, quads, fields, alpha)
    logr = torch.log(p.r_fade + 1e-8) - torch.log(p.r_motion + 1e-8)
    return p.motion.numpy(), p.fade.numpy(), logr.numpy()


def mix(p, a, b):
    m, f, logr = p
    w = 1.0 / (1.0 + np.exp(-(a * logr + b)))
    return w * m + (1 - w) * f


def twice_gap(fr):
    """The self-check's estimate on every interior kept frame: PSNR of linear / lanczos / blend."""
    import torch
    from MedGSLib import flow, selfcheck
    from MedGSLib.config import FlowConfig
    n = fr.shape[0]
    js = list(range(1, n - 1))
    pf = flow.PairFields(fr, FlowConfig())
    pf.ensure([(i, i + 2) for i in range(n - 2)])        # never contain the frame between them
    quads = selfcheck.quads_across(js, lambda i: 0 <= i < n)
    with torch.no_grad():
        bl = flow.image_between(fr, quads, pf.stack, torch.full((len(js),), 0.5)).numpy()
    f = fr.numpy()
    truth = f[js]
    lin = 0.5 * (f[[j - 1 for j in js]] + f[[j + 1 for j in js]])
    lan = selfcheck.held_out_lanczos(f, js)
    return {"linear": psnr01(lin, truth), "lanczos": psnr01(lan, truth), "blend": psnr01(bl, truth)}


def pearson(x, y) -> float:
    return float(np.corrcoef(np.asarray(x, float), np.asarray(y, float))[0, 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", nargs="+", default=["ct_aorta", "mr_brainfs", "mr_tumor1", "ct_abdomen3mm"])
    ap.add_argument("--k", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--max-pixels", type=int, default=None, help="inplane.MAX_PIXELS unless given")
    ap.add_argument("--calibrate", action="store_true", help="phase 2: fit the confidence rule on the proxy")
    ap.add_argument("--diagnose", action="store_true",
                    help="also the proxy on the FULL volume's planes (uses the truth: a diagnostic of why the proxy misses)")
    ap.add_argument("--json", default=None, help="write the per-cell numbers here")
    a = ap.parse_args()
    import torch
    from MedGSLib import flow
    import inplane_proxy as inplane
    from MedGSLib.evaluation import baselines_intensity as bi
    from protocol_cells import cells as protocol_cells
    max_pixels = a.max_pixels or inplane.MAX_PIXELS
    cells = []
    print("| case | k | proxy gap (planes, mm y/x) | true linear | true Lanczos | true blend | true blend-lin | "
          "true Lanczos-lin | z2 blend-lin | z2 Lanczos-lin | proxy y blend-lin | proxy x blend-lin | "
          "proxy mean blend-lin | proxy mean Lanczos-lin | true s | z2 s | proxy s |")
    print("|" + "---|" * 17)
    for c in protocol_cells(a.case, a.k):
        case, k, kept, fr, score, truth = c.case, c.k, c.kept, c.frames, c.score, c.truth
        dz, dy, dx = c.spacing_zyx
        k_lo, k_hi = c.lo, c.hi
        t0 = time.perf_counter()
        d = flow.estimate(fr)
        with torch.no_grad():
            ours = flow.interpolate(fr, k, d).numpy() * (k_hi - k_lo) + k_lo
        t1 = time.perf_counter()
        true = {"linear": score(bi.linear(kept, k)), "lanczos": score(bi.lanczos(kept, k, (dz, dy, dx))),
                "blend": score(ours)}
        t2 = time.perf_counter()
        z2 = twice_gap(fr)
        t3 = time.perf_counter()
        px = inplane.proxy_scores(fr, (k * dz, dy, dx), [r / k for r in range(1, k)], max_pixels)
        t4 = time.perf_counter()
        cell = {"case": case, "k": k, "true": true, "z2": z2, "y": px["y"], "x": px["x"], "mean": px["mean"],
                "seconds": {"true_flow": t1 - t0, "z2": t3 - t2, "proxy": t4 - t3}}

        def g(est, m="blend"):
            return est[m] - est["linear"]
        print(f"| {case} | {k} | {px['y']['gap']}, {px['y']['mm']:.1f}/{px['x']['mm']:.1f} | "
              f"{true['linear']:.2f} | {true['lanczos']:.2f} | {true['blend']:.2f} | {g(true):+.2f} | "
              f"{g(true, 'lanczos'):+.2f} | {g(z2):+.2f} | {g(z2, 'lanczos'):+.2f} | {g(px['y']):+.2f} | "
              f"{g(px['x']):+.2f} | {g(px['mean']):+.2f} | {g(px['mean'], 'lanczos'):+.2f} | "
              f"{t1 - t0:.1f} | {t3 - t2:.1f} | {t4 - t3:.1f} |", flush=True)
        if a.diagnose:      # the same proxy, its planes at full z resolution (truth used)
            cell["full"] = inplane.proxy_scores(truth, (k * dz, dy, dx), [r / k for r in range(1, k)],
                                                max_pixels)["mean"]
        if a.calibrate:
            cell["calibration"] = calibrate(fr, k, d, dz, dy, dx, max_pixels, score, k_lo, k_hi)
        cells.append(cell)
    summary(cells)
    if a.calibrate:
        print_calibration(cells)
    if a.json:
        Path(a.json).write_text(json.dumps(cells, indent=1, default=float))


def summary(cells):
    true_g = [c["true"]["blend"] - c["true"]["linear"] for c in cells]
    true_l = [c["true"]["lanczos"] - c["true"]["linear"] for c in cells]
    print("\n| estimator | r (blend-lin) | worst miss dB | mean miss dB | r (Lanczos-lin) | worst miss Lanczos dB | "
          "picks right | regret dB (sum) | picks |")
    print("|---|---|---|---|---|---|---|---|---|")
    best = [max(METHODS, key=lambda m: c["true"][m]) for c in cells]
    for name in ("z2", "y", "x", "mean", "full"):
        if name not in cells[0]:
            continue
        est = [c[name]["blend"] - c[name]["linear"] for c in cells]
        estl = [c[name]["lanczos"] - c[name]["linear"] for c in cells]
        miss = np.asarray(est) - np.asarray(true_g)
        missl = np.asarray(estl) - np.asarray(true_l)
        picks = [max(METHODS, key=lambda m: c[name][m]) for c in cells]
        right = sum(p == b for p, b in zip(picks, best))
        regret = sum(c["true"][b] - c["true"][p] for c, p, b in zip(cells, picks, best))
        print(f"| {name} | {pearson(est, true_g):+.2f} | {np.abs(miss).max():.2f} | {miss.mean():+.2f} | "
              f"{pearson(estl, true_l):+.2f} | {np.abs(missl).max():.2f} | {right}/{len(cells)} | {regret:.2f} | "
              f"{' '.join(p[:3] for p in picks)} |")
    print(f"| truly best | | | | | | | | {' '.join(b[:3] for b in best)} |")
    print("| always blend | | | | | | "
          f"{sum(b == 'blend' for b in best)}/{len(cells)} | "
          f"{sum(c['true'][b] - c['true']['blend'] for c, b in zip(cells, best)):.2f} | |")


def calibrate(fr, k, d, dz, dy, dx, max_pixels, score, k_lo, k_hi):
    """Fit (a, b) of w = sigmoid(a log(r_fade/r_motion) + b) on the proxy planes, apply along z."""
    import torch
    from MedGSLib import flow
    import inplane_proxy as inplane
    fractions = [r / k for r in range(1, k)]
    proxy = []
    for axis, dp in ((1, dy), (2, dx)):
        p = inplane.proxy_problem(fr, axis, k * dz, dp, fractions, max_pixels)
        with torch.no_grad():
            proxy.append((parts(p["frames"], p["quads"], p["fields"], p["alpha"]), p["truth"].numpy()))
    F_ = fr.shape[0]
    quads = flow.consecutive_quads(F_)
    zparts = []
    with torch.no_grad():
        for r in range(1, k):
            zparts.append(parts(fr, quads, flow.consecutive_fields(d), torch.full((F_ - 1,), r / k)))

    def z_psnr(a, b):
        full = np.empty(((F_ - 1) * k + 1,) + tuple(fr.shape[1:]), np.float32)
        full[::k] = fr.numpy()
        for r, pz in zip(range(1, k), zparts):
            full[r::k][: F_ - 1] = mix(pz, a, b)
        return score(full * (k_hi - k_lo) + k_lo)

    def proxy_mse(a, b):
        return sum(float(np.mean((np.clip(mix(pp, a, b), 0, 1) - np.clip(t, 0, 1)) ** 2)) for pp, t in proxy)
    grid = [(ga, gb) for ga in GRID_A for gb in GRID_B]
    fit = min(grid, key=lambda ab: proxy_mse(*ab))
    oracle = max(grid, key=lambda ab: z_psnr(*ab))
    return {"fit": fit, "current": z_psnr(1.0, 0.0), "fitted": z_psnr(*fit), "oracle": oracle,
            "oracle_psnr": z_psnr(*oracle),
            "proxy_db_gain_of_fit": 10 * np.log10(proxy_mse(1.0, 0.0) / proxy_mse(*fit))}


def print_calibration(cells):
    print("\n| case | k | fitted (a, b) on proxy | proxy gain of the fit dB | true current (a=1,b=0) | true fitted | "
          "fitted - current | best on truth (a, b) | its PSNR |")
    print("|---|---|---|---|---|---|---|---|---|")
    diffs = []
    for c in cells:
        cal = c["calibration"]
        diffs.append(cal["fitted"] - cal["current"])
        print(f"| {c['case']} | {c['k']} | {cal['fit'][0]:g}, {cal['fit'][1]:g} | {cal['proxy_db_gain_of_fit']:+.2f} | "
              f"{cal['current']:.2f} | {cal['fitted']:.2f} | {diffs[-1]:+.2f} | "
              f"{cal['oracle'][0]:g}, {cal['oracle'][1]:g} | {cal['oracle_psnr']:.2f} |")
    diffs = np.asarray(diffs)
    print(f"\nfitted vs current: better in {(diffs > 0.005).sum()} of {len(diffs)}, mean {diffs.mean():+.2f} dB, "
          f"worst {diffs.min():+.2f}, best {diffs.max():+.2f}")


if __name__ == "__main__":
    main()
