"""Classical label-map baselines (reference/evaluation.md, "Classical baselines", labels).

Each baseline takes the kept label slices `kept` [F, H, W] (integer values, slice-first), the
factor k, the full grid's spacing (d_slice, d_row, d_col) in mm and optionally the label values
to interpolate (default: every non-zero value in `kept`), and returns the full label grid
[(F - 1) * k + 1, H, W] with the same dtype. Background is 0.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import InputError
from ..label_targets import signed_distance  # noqa: F401  (the rule's owner; re-exported for the baselines' users)
from .baselines_intensity import _positions


def _check(kept: np.ndarray, k: int) -> np.ndarray:
    kept = np.asarray(kept)
    if kept.ndim != 3:
        raise InputError(f"kept label slices must be a [F, H, W] array, got shape {kept.shape}")
    if kept.shape[0] < 2:
        raise InputError(f"at least two kept label slices are needed, got {kept.shape[0]}")
    if not np.issubdtype(kept.dtype, np.integer):
        from ..label_arrays import check_whole_numbers
        check_whole_numbers(kept, "the kept label slices")
        kept = kept.astype(np.int32)
    if int(k) != k or k < 1:
        raise InputError(f"the factor k must be a positive integer, got {k!r}")
    return kept


def _values(kept: np.ndarray, values) -> list[int]:
    present = [int(v) for v in np.unique(kept) if v != 0]
    if values is None:
        return present
    # A requested label that is on no kept slice cannot be interpolated: it stays absent.
    wanted = {int(v) for v in values}
    return [v for v in present if v in wanted]


def _full_shape(kept: np.ndarray, k: int) -> tuple[int, int, int]:
    return ((kept.shape[0] - 1) * k + 1, kept.shape[1], kept.shape[2])


def nearest(kept: np.ndarray, k: int, spacing=None, values=None) -> np.ndarray:
    """Copy of the nearest kept slice (a slice exactly halfway takes the earlier one)."""
    kept = _check(kept, k)
    n_full = _full_shape(kept, k)[0]
    src = (np.arange(n_full) + (k - 1) // 2) // k
    out = kept[src].copy()
    if values is not None:
        out[~np.isin(out, _values(kept, values))] = 0
    return out


def linear(kept: np.ndarray, k: int, spacing=None, values=None) -> np.ndarray:
    """Per-label linear interpolation of the one-hot masks, then argmax with 0.5 as background.

    Labels are processed one at a time with a running maximum, so memory stays at two float
    volumes however many labels there are.
    """
    kept = _check(kept, k)
    left, t = _positions(kept.shape[0], k)
    t = t.astype(np.float32)[:, None, None]
    best = np.full(_full_shape(kept, k), 0.5, dtype=np.float32)   # background level
    out = np.zeros(best.shape, dtype=kept.dtype)
    for v in _values(kept, values):
        m = (kept == v).astype(np.float32)
        p = (1.0 - t) * m[left] + t * m[left + 1]
        win = p > best   # strict: a tie at 0.5 stays background, a tie between labels keeps the first
        best[win] = p[win]
        out[win] = v
    return out


def _shape_based(kept: np.ndarray, k: int, spacing, values, profile: str) -> np.ndarray:
    from scipy.interpolate import CubicSpline

    kept = _check(kept, k)
    dz, dy, dx = (float(s) for s in spacing)
    clip = k * dz
    n_kept, h, w = kept.shape
    n_full = _full_shape(kept, k)[0]
    left, t = _positions(n_kept, k)
    t = t.astype(np.float32)[:, None, None]
    kept_z = np.arange(n_kept, dtype=np.float64) * k
    full_z = np.arange(n_full, dtype=np.float64)
    # Beyond this many pixels from a label's bounding box its signed distance is clipped to
    # -clip anyway, so each label is processed in its box grown by that margin (exactly).
    my, mx = math.ceil(clip / dy) + 1, math.ceil(clip / dx) + 1
    best = np.zeros((n_full, h, w), dtype=np.float32)   # only positive distances can win
    out = np.zeros((n_full, h, w), dtype=kept.dtype)
    for v in _values(kept, values):
        m = kept == v
        rows = np.flatnonzero(m.any(axis=(0, 2)))
        cols = np.flatnonzero(m.any(axis=(0, 1)))
        ys = slice(max(rows[0] - my, 0), min(rows[-1] + my + 1, h))
        xs = slice(max(cols[0] - mx, 0), min(cols[-1] + mx + 1, w))
        mb = m[:, ys, xs]
        sd = np.stack([signed_distance(mb[i], (dy, dx), clip) for i in range(n_kept)])
        if profile == "linear":
            full = (1.0 - t) * sd[left] + t * sd[left + 1]
        else:
            full = CubicSpline(kept_z, sd, axis=0)(full_z).astype(np.float32)
        region_best = best[:, ys, xs]
        region_out = out[:, ys, xs]
        win = (full > 0) & (full > region_best)
        region_best[win] = full[win]
        region_out[win] = v
    return out


def shape_linear(kept: np.ndarray, k: int, spacing=(1.0, 1.0, 1.0), values=None) -> np.ndarray:
    """Shape-based interpolation with a linear profile along the slice axis."""
    return _shape_based(kept, k, spacing, values, "linear")


def shape_cubic(kept: np.ndarray, k: int, spacing=(1.0, 1.0, 1.0), values=None) -> np.ndarray:
    """Shape-based interpolation with a cubic-spline profile along the slice axis."""
    return _shape_based(kept, k, spacing, values, "cubic")


def contour(kept: np.ndarray, k: int, spacing=(1.0, 1.0, 1.0), values=None, *, worker=None) -> np.ndarray:
    """ITK morphological contour interpolation (Zukic et al. 2016; Slicer's "Fill between slices").

    The kept slice indices are passed to the filter for every label, so a kept slice on
    which a label is absent counts as annotated (the label ends there) rather than unknown.
    ITK runs in a separate process (`contour_worker`): ITK's and SimpleITK's libraries in one
    process corrupt the heap. Pass a started `ContourWorker` to reuse one across calls (the
    first ITK import takes about 10 s); without one a worker is started for this call.
    """
    from .contour_worker import ContourWorker

    kept = _check(kept, k)
    if worker is not None:
        return worker.interpolate(kept, k, spacing, values)
    with ContourWorker() as own:
        return own.interpolate(kept, k, spacing, values)


def contour_in_this_process(kept: np.ndarray, k: int, spacing=(1.0, 1.0, 1.0), values=None) -> np.ndarray:
    """The ITK call behind `contour`; only safe in a process that never loads SimpleITK."""
    import itk

    kept = _check(kept, k)
    labels = _values(kept, values)
    n_full, h, w = _full_shape(kept, k)
    out = np.zeros((n_full, h, w), dtype=kept.dtype)
    if not labels:
        return out
    if len(labels) > 65535:
        raise InputError(f"{len(labels)} labels are too many for the contour baseline (65535 at most)")
    # The filter is wrapped for 8- and 16-bit label images: number the labels 1..L.
    ctype, ntype = (itk.UC, np.uint8) if len(labels) <= 255 else (itk.US, np.uint16)
    sparse = np.zeros((n_full, h, w), dtype=ntype)
    for code, v in enumerate(labels, start=1):
        sparse[::k][kept == v] = code
    image = itk.GetImageFromArray(sparse)
    dz, dy, dx = (float(s) for s in spacing)
    image.SetSpacing((dx, dy, dz))
    filt = itk.MorphologicalContourInterpolator[itk.Image[ctype, 3]].New()
    filt.SetInput(image)
    # ITK index axis 2 is the numpy slice axis 0.
    filt.SetAxis(2)
    filt.SetUseCustomSlicePositions(True)
    kept_idx = [int(i) for i in range(0, n_full, k)]
    for code in range(1, len(labels) + 1):
        filt.SetLabeledSliceIndices(2, code, kept_idx)
    filt.Update()
    coded = itk.GetArrayFromImage(filt.GetOutput())
    decode = np.zeros(len(labels) + 1, dtype=kept.dtype)
    decode[1:] = labels
    out[:] = decode[coded]
    return out


LABEL_BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "nearest": nearest,
    "linear": linear,
    "shape-linear": shape_linear,
    "shape-cubic": shape_cubic,
    "contour": contour,
}
