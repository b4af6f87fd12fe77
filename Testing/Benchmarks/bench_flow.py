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
    from protocol_cells import cells
    print("| case | k | linear | B-spline | Farneback blend | flow.py motion blend | two-slice image blend | "
          "four-slice in-between image | gain dB | flow.py seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in cells(a.case, a.k):
        case, k, kept, fr, score = c.case, c.k, c.kept, c.frames, c.score
        t = time.perf_counter()
        d = flow.estimate(fr)
        ours = c.units(flow.interpolate(fr, k, d).numpy())
        sec = time.perf_counter() - t
        motion, two = np.array(ours), np.array(ours)     # the same fields, the other in-between images
        quads, fields = flow.consecutive_quads(fr.shape[0]), flow.consecutive_fields(d)
        for r in range(1, k):
            al = torch.full((fr.shape[0] - 1,), r / k)
            motion[r::k][: fr.shape[0] - 1] = c.units(flow.blend(fr[:-1, None], fr[1:, None], d, al)[:, 0].numpy())
            two[r::k][: fr.shape[0] - 1] = c.units(flow.image_between(fr, quads, fields, al, cubic=False).numpy())
        print(f"| {case} | {k} | {score(bi.linear(kept, k)):.2f} | {score(bi.bspline(kept, k)):.2f} | "
              f"{score(bi.optical_flow(kept, k)):.2f} | {score(motion):.2f} | {score(two):.2f} | "
              f"{score(ours):.2f} | {score(ours) - score(two):+.2f} | {sec:.1f} |", flush=True)


if __name__ == "__main__":
    main()
