"""The held-out-slice protocol's cells for the CPU benchmarks (reference/evaluation.md).

Each dev case cropped to the common length of k = 2, 3, 4 (lcm 12,
`evaluation.protocol.usable_length`), every k-th slice kept, the rest held out and scored:
PSNR pooled over them on the reference's [0, 1] min-max mapping. The kept slices are also given
mapped to [0, 1] on their own range, as flow.py takes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CROP_KS = (2, 3, 4)     # the crop every benchmark shares, whichever k it runs


@dataclass
class Cell:
    case: str
    k: int
    spacing_zyx: tuple          # mm, numpy axis order
    kept: np.ndarray            # [F, H, W] the kept slices as read
    frames: object              # torch [F, H, W]: the kept slices on [0, 1] of their own range
    lo: float                   # that range
    hi: float
    truth: np.ndarray           # the cropped volume on the reference's [0, 1] mapping
    held: np.ndarray            # [n] True on held-out slices
    ref_lo: float
    ref_hi: float

    def score(self, pred: np.ndarray) -> float:
        """Pooled held-out PSNR of a full stack `pred` in the volume's units."""
        from MedGSLib.evaluation import metrics
        return metrics.psnr_pooled(metrics.to_unit(pred, self.ref_lo, self.ref_hi), self.truth, self.held)

    def units(self, x) -> np.ndarray:
        """A stack on the kept slices' [0, 1] (torch or numpy) back in the volume's units."""
        return np.asarray(x) * (self.hi - self.lo) + self.lo


def cells(cases, ks):
    """Cell of each case and k, case by case (each volume read once)."""
    import torch
    from MedGSLib.evaluation import metrics
    from MedGSLib.evaluation.protocol import usable_length
    from MedGSLib.io import read_volume
    for case in cases:
        vol = read_volume(next(DATA.glob(f"{case}_image.*")))
        v = vol.array.astype(np.float32)
        n = usable_length(v.shape[0], CROP_KS)
        v = v[:n]
        ref_lo, ref_hi = metrics.unit_range(v)
        truth = metrics.to_unit(v, ref_lo, ref_hi)
        spacing = tuple(vol.geometry.spacing[::-1])     # geometry is (x, y, z); numpy axes are (z, y, x)
        for k in ks:
            kept = v[::k]
            lo, hi = float(kept.min()), float(kept.max())
            yield Cell(case, k, spacing, kept, torch.from_numpy((kept - lo) / (hi - lo)), lo, hi, truth,
                       np.arange(n) % k != 0, ref_lo, ref_hi)
