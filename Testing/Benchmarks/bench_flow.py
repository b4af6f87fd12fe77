"""The in-between targets' motion model alone: flow.py's interpolation against linear and the
protocol's Farneback optical-flow blend, on held-out slices of the real cases (CPU is enough).

    python Testing/Benchmarks/bench_flow.py --case ct_aorta mr_brainfs --k 2 4

Columns: the classical methods (linear, cubic B-spline along z, Farneback), then flow.py on one
set of fields: the pure motion blend (flow.blend), the two-slice image blend (image_between,
cubic=False: the in-between image before the four-slice cubic) and the in-between image
(image_between: monotone cubic through four slices, motion chained gap by gap).

Crop to the common length (lcm 12), keep every k-th slice, fill in the rest, PSNR pooled over
held-out slices on the reference's [0, 1] mapping (reference/evaluation.md). Needs opencv.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", nargs="+", default=["ct_aorta", "mr_brainfs"])
    ap.add_argument("--k", type=int, nargs="+", default=[2, 3, 4])
    a = ap.parse_args()
    import torch
    from MedGSLib import flow
    from MedGSLib.evaluation import baselines_intensity as bi
    from MedGSLib.evaluation import metrics
    from MedGSLib.io import read_volume
    print("| case | k | linear | B-spline | Farneback blend | flow.py motion blend | two-slice image blend | "
          "four-slice in-between image | gain dB | flow.py seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in a.case:
        path = next((ROOT.parent / "shared" / "data").glob(f"{case}_image.*"))
        v = read_volume(path).array.astype(np.float32)
        n = (v.shape[0] - 1) // 12 * 12 + 1
        v = v[:n]
        lo, hi = metrics.unit_range(v)
        truth = metrics.to_unit(v, lo, hi)
        for k in a.k:
            kept = v[::k]
            held = np.arange(n) % k != 0

            def score(pred):
                return metrics.psnr_pooled(metrics.to_unit(pred, lo, hi), truth, held)
            k_lo, k_hi = float(kept.min()), float(kept.max())
            t = time.perf_counter()
            fr = torch.from_numpy((kept - k_lo) / (k_hi - k_lo))
            d = flow.estimate(fr)
            ours = flow.interpolate(fr, k, d).numpy() * (k_hi - k_lo) + k_lo
            sec = time.perf_counter() - t
            motion, two = np.array(ours), np.array(ours)     # the same fields, the other in-between images
            quads, fields = flow.consecutive_quads(fr.shape[0]), flow.consecutive_fields(d)
            for r in range(1, k):
                al = torch.full((fr.shape[0] - 1,), r / k)
                mid = flow.blend(fr[:-1, None], fr[1:, None], d, al)[:, 0].numpy()
                motion[r::k][: fr.shape[0] - 1] = mid * (k_hi - k_lo) + k_lo
                mid = flow.image_between(fr, quads, fields, al, cubic=False).numpy()
                two[r::k][: fr.shape[0] - 1] = mid * (k_hi - k_lo) + k_lo
            print(f"| {case} | {k} | {score(bi.linear(kept, k)):.2f} | {score(bi.bspline(kept, k)):.2f} | "
                  f"{score(bi.optical_flow(kept, k)):.2f} | {score(motion):.2f} | {score(two):.2f} | "
                  f"{score(ours):.2f} | {score(ours) - score(two):+.2f} | {sec:.1f} |", flush=True)


if __name__ == "__main__":
    main()
