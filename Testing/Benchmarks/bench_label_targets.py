"""The label heads' in-between targets alone, as interpolators, on held-out slices of the real
cases (CPU is enough): the current target (flow.blend of the one-hot masks) against the
motion-compensated shape interpolation of label_targets.py and the classical label baselines.

    OMP_NUM_THREADS=1 python Testing/Benchmarks/bench_label_targets.py --case ct_aorta --k 2 4 --clip 2 4 --band 0 1

As bench_flow.py: crop to the common length (lcm 12), keep every k-th slice (image and labels),
fit the half-way fields on the kept image with the trainer's sizing (flow.estimate), fill in
the rest. Score: Dice pooled over the held-out slices per label (metrics.dice_pooled), mean
over the labels of the full crop (reference/evaluation.md; a label on no held-out slice and in
no prediction there is not scored).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CASES = ["ct_abdomen3mm", "ct_aorta", "mr_brainfs", "mr_tumor1"]
CHUNK = 4       # pairs filled at once: [CHUNK, L, H, W] floats stay small with 188 labels


def mean_dice(pred, truth, held):
    from MedGSLib.evaluation import metrics
    scores = [metrics.dice_pooled(pred == v, truth == v, held) for v in np.unique(truth) if v != 0]
    scores = [s for s in scores if not math.isnan(s)]
    return float(np.mean(scores)) if scores else math.nan


def fill(kept_labels, k, values, between):
    """Full label grid: kept slices copied, slice p*k + r decoded from between(pairs, alpha = r/k)
    ([P, L, H, W] per-label values for the pairs (p, p + 1), p in `pairs`)."""
    import torch
    from MedGSLib.labels import decode
    A, h, w = kept_labels.shape
    out = np.zeros(((A - 1) * k + 1, h, w), dtype=kept_labels.dtype)
    out[::k] = kept_labels
    for r in range(1, k):
        for p0 in range(0, A - 1, CHUNK):
            pairs = torch.arange(p0, min(p0 + CHUNK, A - 1))
            probs = between(pairs, torch.full((len(pairs),), r / k)).numpy()
            for j, p in enumerate(pairs.tolist()):
                out[p * k + r] = decode(probs[j], values)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", nargs="+", default=CASES)
    ap.add_argument("--k", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--clip", type=float, nargs="+", default=[4.0], help="signed-distance clips, pixels")
    ap.add_argument("--band", type=float, nargs="+", default=[0.0],
                    help="soft bands of the targets, pixels (0: the sign of the blended distance)")
    a = ap.parse_args()
    import torch
    from MedGSLib import flow, label_targets as lt
    from MedGSLib.evaluation import baselines_labels as bl
    from MedGSLib.io import read_volume
    from MedGSLib.labels import label_values, one_hot
    variants = [(c, b) for c in a.clip for b in a.band]
    head = (["nearest", "linear", "shape-linear", "shape-cubic", "flow.blend masks (now)"]
            + [f"MC {p} clip {c:g}" + (f" band {b:g}" if b else "") for c, b in variants for p in ("linear", "cubic")]
            + ["seconds: distances / MC linear / MC cubic"])
    print("| case | k | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 2) + "|", flush=True)
    data = ROOT.parent / "shared" / "data"
    for case in a.case:
        img = read_volume(next(data.glob(f"{case}_image.*")))
        lab = read_volume(next(data.glob(f"{case}_labels.*")))
        spacing = tuple(float(s) for s in reversed(lab.geometry.spacing))     # numpy (z, y, x) order
        v = img.array.astype(np.float32)
        n = (v.shape[0] - 1) // 12 * 12 + 1
        v, truth = v[:n], np.asarray(lab.array)[:n]
        for k in a.k:
            held = np.arange(n) % k != 0
            kept, kept_lab = v[::k], truth[::k]
            fr = torch.from_numpy((kept - kept.min()) / (kept.max() - kept.min()))
            d = flow.estimate(fr)                                   # [A - 1, 2, H, W]
            values = label_values(kept_lab)
            onehot = torch.from_numpy(one_hot(kept_lab, values)).transpose(0, 1)     # [A, L, H, W]
            row = [mean_dice(bl.LABEL_BASELINES[m](kept_lab, k, spacing), truth, held)
                   for m in ("nearest", "linear", "shape-linear", "shape-cubic")]
            row.append(mean_dice(fill(kept_lab, k, values,
                                      lambda p, al: flow.blend(onehot[p], onehot[p + 1], d[p], al)),
                                 truth, held))
            # the cubic variant: the end pairs repeat their end frame with a zero field
            last = len(kept) - 1
            zero = torch.zeros_like(d[:1])
            dpad = torch.cat([zero, d, zero])                       # dpad[p + 1] = field of (p, p + 1)
            seconds = {}
            for c in dict.fromkeys(c for c, _ in variants):
                t = time.perf_counter()
                sd = lt.signed_distances(onehot.transpose(0, 1), c).transpose(0, 1)     # [A, L, H, W]
                seconds["sd"] = time.perf_counter() - t
                for b in a.band:
                    def linear(p, al):
                        return lt.shape_between(sd[p], sd[p + 1], d[p], al, b)

                    def cubic(p, al):
                        i0, i3 = (p - 1).clamp(min=0), (p + 2).clamp(max=last)
                        return lt.shape_between_cubic(torch.stack([sd[i0], sd[p], sd[p + 1], sd[i3]]),
                                                      dpad[p], d[p], dpad[p + 2], al, band=b)
                    for name, fn in (("linear", linear), ("cubic", cubic)):
                        t = time.perf_counter()
                        row.append(mean_dice(fill(kept_lab, k, values, fn), truth, held))
                        seconds[name] = time.perf_counter() - t
            cells = " | ".join(f"{x:.3f}" for x in row)
            print(f"| {case} | {k} | {cells} | {seconds['sd']:.1f} / {seconds['linear']:.1f} / "
                  f"{seconds['cubic']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
