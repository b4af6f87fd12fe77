"""Label interpolation benchmark: MedGS (joint image + label heads) against classical label methods.

    python Testing/Benchmarks/bench_labels.py --case ct_abdomen3mm --k 2 4 --device cuda

Protocol of reference/evaluation.md on the case's own grid (no resampling): crop to the common
length, keep every k-th slice, score held-out slices only: Dice pooled, HD95 and ASSD in mm per
label, mean over labels. Baselines: nearest, per-label linear, shape-based cubic (ITK contour
interpolation needs ITK: run `medgs eval` where it is installed). Needs torch, numpy, scipy, nibabel.
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="ct_abdomen3mm")
    ap.add_argument("--k", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--set", nargs="*", default=[], help="MedGS options, e.g. loss.seg_dice=1.0")
    ap.add_argument("--sparse", action="store_true",
                    help="sparse annotation: MedGS sees every image slice, labels on every k-th only")
    ap.add_argument("--json")
    a = ap.parse_args()
    from MedGSLib.evaluation import baselines_labels as bl
    from MedGSLib.evaluation.medgs_method import run_medgs
    from MedGSLib.evaluation.metrics import label_scores
    from MedGSLib.io import read_volume
    folder = next(p for p in (ROOT / ".dev" / "data", ROOT.parent / "shared" / "data") if p.exists())
    img = read_volume(folder / f"{a.case}_image.nii.gz")
    lab = read_volume(folder / f"{a.case}_labels.nii.gz", "labels")
    L = int(np.lcm.reduce(a.k))
    n = (img.array.shape[0] - 1) // L * L + 1
    image, labels = img.array[:n], lab.array[:n]
    sp = img.geometry.spacing
    spacing = (sp[2], sp[1], sp[0])
    rows = []
    for k in a.k:
        held = np.array([i % k != 0 for i in range(n)])
        kept_i, kept_l = image[::k], labels[::k]
        values = sorted(int(v) for v in np.unique(kept_l) if v)
        preds = {}
        for name, fn in (("nearest", bl.nearest), ("linear", bl.linear), ("shape-cubic", bl.shape_cubic)):
            t = time.perf_counter()
            preds[name] = (fn(kept_l, k, spacing, values), time.perf_counter() - t)
        t = time.perf_counter()
        if a.sparse:
            pred = sparse_medgs(image, labels, k, values, a.preset, a.device, a.set)
        else:
            pred = run_medgs(kept_i, k, kept_labels=kept_l, label_values=values, preset=a.preset,
                             device=a.device, overrides=a.set).labels
        preds["medgs"] = (pred, time.perf_counter() - t)
        for name, (pred, sec) in preds.items():
            s = label_scores(pred, labels, held, spacing, values)
            rows.append({"case": a.case, "k": k, "method": name, "sparse": a.sparse, "overrides": a.set, "dice": s["dice"],
                         "hd95_mm": s["hd95"], "assd_mm": s["assd"], "seconds": sec,
                         "labels": len(values)})
            print(f"| {a.case} | {k} | {name} | {s['dice']:.3f} | {s['hd95']:.2f} | "
                  f"{s['assd']:.2f} | {sec:.1f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=float))


def sparse_medgs(image, labels, k, values, preset, device, overrides):
    """Image head on every slice, label heads on every k-th slice only; labels on the same grid."""
    from MedGSLib import api
    from MedGSLib.config import apply_overrides
    from MedGSLib.frames import Normalizer
    from MedGSLib.labels import decode
    norm = Normalizer(lower_percentile=0.0, upper_percentile=100.0).fit(image)
    frames = np.clip(norm.forward(image), 0, 1).astype(np.float32)
    annotated = np.zeros(labels.shape[0], bool)
    annotated[::k] = True
    masks = np.stack([(labels == v) & annotated[:, None, None] for v in values]).astype(np.float32)
    cfg = apply_overrides(api.default_config(preset, device), overrides)
    res = api.interpolate_array(frames, 1, masks=masks, mask_frames=np.flatnonzero(annotated).tolist(), config=cfg)
    return decode(res.probs, values, support=res.info["label_support"]).astype(labels.dtype)


if __name__ == "__main__":
    main()
