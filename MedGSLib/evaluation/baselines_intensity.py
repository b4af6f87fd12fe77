"""Classical intensity baselines (reference/evaluation.md, "Classical baselines").

Each baseline takes the kept slices `kept` [F, H, W] (slice-first, original units), the factor
k and the full grid's spacing (d_slice, d_row, d_col) in mm, and returns the full grid
[(F - 1) * k + 1, H, W] float32 in the same units. Kept slices come back unchanged.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import InputError
from .errors import need_module

# OpenCV Farneback parameters fixed by the protocol.
FARNEBACK = dict(pyr_scale=0.5, levels=4, winsize=15, iterations=5, poly_n=5, poly_sigma=1.1, flags=0)


def _check(kept: np.ndarray, k: int) -> np.ndarray:
    kept = np.asarray(kept)
    if kept.ndim != 3:
        raise InputError(f"kept slices must be a [F, H, W] array, got shape {kept.shape}")
    if kept.shape[0] < 2:
        raise InputError(f"at least two kept slices are needed, got {kept.shape[0]}")
    if int(k) != k or k < 1:
        raise InputError(f"the factor k must be a positive integer, got {k!r}")
    return kept.astype(np.float32, copy=False)


def _positions(n_kept: int, k: int):
    """For each full-grid slice: index of the kept slice before it and the fraction t in [0, 1)."""
    n_full = (n_kept - 1) * k + 1
    idx = np.arange(n_full)
    left = np.minimum(idx // k, n_kept - 2)
    t = (idx - left * k) / k  # the last slice gets left = F-2, t = 1
    return left, t


def nearest(kept: np.ndarray, k: int, spacing=None) -> np.ndarray:
    """Copy of the nearest kept slice; a slice exactly halfway takes the earlier one."""
    kept = _check(kept, k)
    n_full = (kept.shape[0] - 1) * k + 1
    src = (np.arange(n_full) + (k - 1) // 2) // k
    return kept[src].copy()


def linear(kept: np.ndarray, k: int, spacing=None) -> np.ndarray:
    """Linear along the slice axis between the two kept neighbours."""
    kept = _check(kept, k)
    left, t = _positions(kept.shape[0], k)
    t = t.astype(np.float32)[:, None, None]
    return (1.0 - t) * kept[left] + t * kept[left + 1]


def bspline(kept: np.ndarray, k: int, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Cubic B-spline: SimpleITK sitkBSpline resampling from the sparse grid (gap k*dz) onto the full grid."""
    return _sitk_resample(kept, k, spacing, "sitkBSpline", "the bspline baseline")


def lanczos(kept: np.ndarray, k: int, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Lanczos windowed sinc: SimpleITK sitkLanczosWindowedSinc from the sparse grid onto the full grid.

    The sharpest classical resampler; on thick-slice CT it can beat every other classical method.
    """
    return _sitk_resample(kept, k, spacing, "sitkLanczosWindowedSinc", "the lanczos baseline")


def _sitk_resample(kept: np.ndarray, k: int, spacing, interpolator: str, what: str) -> np.ndarray:
    sitk = need_module("SimpleITK", "SimpleITK", what)

    kept = _check(kept, k)
    dz, dy, dx = (float(s) for s in spacing)
    sparse = sitk.GetImageFromArray(kept)
    sparse.SetSpacing((dx, dy, k * dz))
    n_full = (kept.shape[0] - 1) * k + 1
    reference = sitk.Image([kept.shape[2], kept.shape[1], n_full], sitk.sitkFloat32)
    reference.SetSpacing((dx, dy, dz))
    out = sitk.Resample(sparse, reference, sitk.Transform(), getattr(sitk, interpolator), 0.0, sitk.sitkFloat32)
    full = sitk.GetArrayFromImage(out)
    # Both interpolate their samples up to float rounding; put the kept slices back
    # bit-exactly so no method gains or loses on slices that are never scored anyway.
    full[::k] = kept
    return full


def eight_bit(slices: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """8-bit copies for Farneback: clip to [lo, hi], scale to 0..255."""
    if hi <= lo:
        return np.zeros(slices.shape, dtype=np.uint8)
    scaled = (np.clip(slices, lo, hi) - lo) * (255.0 / (hi - lo))
    return np.round(scaled).astype(np.uint8)


def optical_flow(kept: np.ndarray, k: int, spacing=None) -> np.ndarray:
    """Bidirectional optical-flow blend.

    For kept neighbours A, B: Farneback flows F_ab and F_ba on 8-bit copies (clipped to the
    1st-99th percentile of the kept slices), then
    I_t = (1 - t) A(x - t F_ab) + t B(x - (1 - t) F_ba), bilinear, border replicate.
    """
    cv2 = need_module("cv2", "opencv-python-headless", "the optflow baseline")

    kept = _check(kept, k)
    lo, hi = (float(v) for v in np.percentile(kept, [1.0, 99.0]))
    kept8 = eight_bit(kept, lo, hi)
    n_kept, h, w = kept.shape
    full = np.empty(((n_kept - 1) * k + 1, h, w), dtype=np.float32)
    full[::k] = kept
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    for j in range(n_kept - 1):
        a, b = kept[j], kept[j + 1]
        f_ab = cv2.calcOpticalFlowFarneback(kept8[j], kept8[j + 1], None, **FARNEBACK)
        f_ba = cv2.calcOpticalFlowFarneback(kept8[j + 1], kept8[j], None, **FARNEBACK)
        for r in range(1, k):
            t = r / k
            wa = cv2.remap(a, gx - t * f_ab[..., 0], gy - t * f_ab[..., 1],
                           interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            wb = cv2.remap(b, gx - (1 - t) * f_ba[..., 0], gy - (1 - t) * f_ba[..., 1],
                           interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            full[j * k + r] = (1.0 - t) * wa + t * wb
    return full


INTENSITY_BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "nearest": nearest,
    "linear": linear,
    "bspline": bspline,
    "lanczos": lanczos,
    "optflow": optical_flow,
}
