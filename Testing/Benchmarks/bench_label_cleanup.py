"""Effect of dropping unanchored label fragments (labels.drop_unanchored) on one trained model.

    python Testing/Benchmarks/bench_label_cleanup.py --case ct_abdomen3mm --k 5 --sparse --device cpu

Trains MedGS once (joint heads; with --sparse the image on every slice and labels on every k-th),
then scores the same decoded label map with and without the clean-up: Dice / HD95 / ASSD (mm) on
held-out slices, mean over labels, as in reference/evaluation.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="ct_abdomen3mm")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--sparse", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--json")
    ap.add_argument("--save", help="also keep the decoded prediction and probabilities in this .npz")
    a = ap.parse_args()
    from MedGSLib import api
    from MedGSLib.config import apply_overrides
    from MedGSLib.frames import Normalizer
    from MedGSLib.io import read_volume
    from MedGSLib.labels import decode, drop_unanchored, one_hot
    from MedGSLib.evaluation.metrics import label_scores
    folder = ROOT.parent / "shared" / "data"
    img = read_volume(folder / f"{a.case}_image.nii.gz")
    lab = read_volume(folder / f"{a.case}_labels.nii.gz", "labels")
    k = a.k
    n = (img.array.shape[0] - 1) // k * k + 1
    image, labels = img.array[:n], lab.array[:n]
    sp = img.geometry.spacing
    spacing = (sp[2], sp[1], sp[0])
    held = np.arange(n) % k != 0
    cfg = apply_overrides(api.default_config(a.preset, a.device), a.set)
    if a.sparse:
        frames, lab_in, factor = image, np.where(held[:, None, None], 0, labels), 1
        mask_frames = np.flatnonzero(~held).tolist()
    else:
        frames, lab_in, factor, mask_frames = image[::k], labels[::k], k, None
    values = [int(v) for v in np.unique(labels[~held]) if v]
    norm = Normalizer(lower_percentile=0.0, upper_percentile=100.0).fit(frames if not a.sparse else image)
    f01 = np.clip(norm.forward(frames), 0, 1).astype(np.float32)
    res = api.interpolate_array(f01, factor, masks=one_hot(lab_in, values), mask_frames=mask_frames, config=cfg)
    pred = decode(res.probs, values)
    rows = {}
    known = np.where(held[:, None, None], 0, labels)
    if a.save:
        np.savez_compressed(a.save, pred=pred, probs=res.probs.astype(np.float16), values=values, held=held)
    for name, p in (("raw", pred), ("clean", drop_unanchored(pred, known, np.flatnonzero(~held)))):
        s = label_scores(p, labels, held, spacing, values)
        rows[name] = {"dice": s["dice"], "hd95": s["hd95"], "assd": s["assd"]}
        print(f"| {a.case} | k={k} | {'sparse' if a.sparse else 'dense'} | {name} | {s['dice']:.3f} | "
              f"{s['hd95']:.2f} | {s['assd']:.2f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"case": a.case, "k": k, "sparse": a.sparse, "device": str(res.info["device"]),
                                            "iterations": res.info["iterations_run"], **rows}, indent=1))


if __name__ == "__main__":
    main()
