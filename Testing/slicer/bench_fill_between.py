"""Measure the Segment Editor effect's result against Slicer's own "Fill between slices".

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python Testing/slicer/bench_fill_between.py [ITERATIONS ...]

The 48 x 48 x 17 crop of ct_abdomen3mm (kidneys, aorta; conftest.sparse_crop) painted on every
4th slice (0, 4, ..., 16). The effect's logic runs headless on real MRML nodes with the real
CPU worker; the baseline is ITK morphological contour interpolation (the algorithm of Slicer's
Fill between slices, MedGSLib.evaluation.baselines_labels.contour) on the same painted slices.
Dice per segment on the 12 unpainted slices; prints one JSON line per iteration count.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "MedGS"), str(HERE.parents[1])]

import numpy as np  # noqa: E402

import conftest  # noqa: E402  (the test bed: scene, logics, stubs, the crop)


def dice(a, b) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else round(2.0 * int((a & b).sum()) / s, 4)


def main(argv) -> int:
    from MedGSLib.evaluation.baselines_labels import contour
    from MedGSLogicLib import fill_between

    iterations = [int(a) for a in argv] or [1500]
    data = Path("/work/shared/data")
    img, lab, a = conftest.sparse_crop.__wrapped__(data)
    every = conftest.PAINT_EVERY
    unpainted = [k for k in range(lab.shape[0]) if k % every]
    names = conftest.SPARSE_LABELS
    base = contour(lab[::every], every, spacing=(3.0, 3.0, 3.0), values=list(names))
    baseline = {n: dice(base[unpainted] == v, lab[unpainted] == v) for v, n in names.items()}
    for its in iterations:
        mrml = conftest.Mrml()
        volume = mrml.add_volume(img, a, "abdomen")
        seg, _ = conftest.painted_segmentation(mrml, lab, a, names)
        logic = fill_between.FillBetweenSlicesLogic(mrml.scene, job_root=tempfile.mkdtemp())
        plan = logic.plan(seg, volume)
        t0 = time.perf_counter()
        job = logic.start(seg, volume, plan, device="cpu", iterations=its)
        job.wait()
        if job.error_message:
            raise SystemExit(job.error_message)
        masks = logic.masks(job, plan)
        by_name = {seg.GetSegmentation().GetSegment(sid).GetName(): m for sid, m in masks.items()}
        medgs = {n: dice(by_name[n][unpainted], lab[unpainted] == v) for v, n in names.items()}
        print(json.dumps({"iterations": its, "device": "cpu", "seconds": round(time.perf_counter() - t0, 1),
                          "dice_medgs": medgs, "dice_fill_between_slices": baseline,
                          "mean_medgs": round(float(np.mean(list(medgs.values()))), 4),
                          "mean_fill_between_slices": round(float(np.mean(list(baseline.values()))), 4)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
