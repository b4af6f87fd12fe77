"""Scores of the held-out-slice protocol (reference/evaluation.md, "Intensity/Label metrics").

All functions take slice-first arrays (slice axis = numpy axis 0) and a boolean `heldout`
vector over that axis; kept slices are never scored. Spacing is (d_slice, d_row, d_col) in mm.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError


# ----------------------------------------------------------------------------- intensity

def unit_range(reference: np.ndarray) -> tuple[float, float]:
    """Min and max of the full reference volume: the affine map to [0, 1] used for every score."""
    lo, hi = float(np.min(reference)), float(np.max(reference))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError("the reference volume contains NaN or infinite values")
    return lo, hi


def to_unit(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map with the reference's (lo, hi) to [0, 1] and clip (float64, so MSE is not rounded)."""
    scale = hi - lo
    if scale <= 0:
        # A constant reference: every value maps to 0 and only exact predictions score perfectly.
        return np.zeros(array.shape, dtype=np.float64)
    return np.clip((np.asarray(array, dtype=np.float64) - lo) / scale, 0.0, 1.0)


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB; an exact prediction gives +inf."""
    if mse <= 0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def _check_pair(pred: np.ndarray, truth: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    if pred.shape != truth.shape:
        raise InputError(f"prediction shape {pred.shape} differs from the reference shape {truth.shape}")
    heldout = np.asarray(heldout, dtype=bool)
    if heldout.shape != (truth.shape[0],):
        raise InputError(f"held-out vector has length {heldout.shape}, expected ({truth.shape[0]},)")
    if not heldout.any():
        raise InputError("no held-out slice to score")
    return heldout


def psnr_pooled(pred01: np.ndarray, truth01: np.ndarray, heldout: np.ndarray) -> float:
    """One MSE over every held-out voxel, data range 1 (both inputs already in [0, 1])."""
    heldout = _check_pair(pred01, truth01, heldout)
    diff = pred01[heldout].astype(np.float64) - truth01[heldout].astype(np.float64)
    return psnr_from_mse(float(np.mean(diff * diff)))


def psnr_per_slice(pred01: np.ndarray, truth01: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """PSNR of each held-out slice (dB), in slice order."""
    heldout = _check_pair(pred01, truth01, heldout)
    out = []
    for i in np.flatnonzero(heldout):
        d = pred01[i].astype(np.float64) - truth01[i].astype(np.float64)
        out.append(psnr_from_mse(float(np.mean(d * d))))
    return np.asarray(out, dtype=np.float64)


def ssim_per_slice(pred01: np.ndarray, truth01: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """SSIM of each held-out 2D slice: Gaussian window sigma 1.5, population covariance, range 1."""
    from .errors import need_module

    structural_similarity = need_module("skimage.metrics", "scikit-image", "SSIM").structural_similarity

    heldout = _check_pair(pred01, truth01, heldout)
    if min(truth01.shape[1:]) < 11:
        # The sigma-1.5 Gaussian window is 11 pixels wide (skimage truncates at 3.5 sigma).
        raise InputError(f"slices of {truth01.shape[1:]} pixels are too small for SSIM (11 x 11 at least)")
    out = []
    for i in np.flatnonzero(heldout):
        out.append(
            structural_similarity(
                truth01[i].astype(np.float64),
                pred01[i].astype(np.float64),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
            )
        )
    return np.asarray(out, dtype=np.float64)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and std over the finite values: a slice predicted exactly (PSNR +inf, e.g. an
    empty background slice) would make the mean +inf and hide every other slice."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (math.inf if values.size else math.nan), 0.0
    return float(finite.mean()), float(finite.std())


def intensity_scores(pred: np.ndarray, truth: np.ndarray, heldout: np.ndarray,
                     value_range: tuple[float, float] | None = None) -> dict:
    """PSNR (pooled, and per-slice mean/std) and SSIM (mean/std) on the held-out slices.

    `value_range` is the reference's (min, max) over the evaluated grid; computed when omitted.
    """
    lo, hi = value_range if value_range is not None else unit_range(truth)
    t01 = to_unit(truth, lo, hi)
    p01 = to_unit(pred, lo, hi)
    per_psnr = psnr_per_slice(p01, t01, heldout)
    per_ssim = ssim_per_slice(p01, t01, heldout)
    psnr_mean, psnr_std = _mean_std(per_psnr)
    ssim_mean, ssim_std = _mean_std(per_ssim)
    return {
        "psnr": psnr_pooled(p01, t01, heldout),
        "psnr_slice_mean": psnr_mean,
        "psnr_slice_std": psnr_std,
        "psnr_exact_slices": int(np.sum(~np.isfinite(per_psnr))),
        "ssim": ssim_mean,
        "ssim_std": ssim_std,
    }


# ----------------------------------------------------------------------------- labels

def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with at least one 6-neighbour outside it.

    Outside the array counts as outside the mask, so a mask touching the border has its
    border voxels on the surface (the structure is cut there, and a cut is a boundary).
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    interior = mask.copy()
    core = (slice(1, -1),) * mask.ndim
    for ax in range(mask.ndim):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=ax)[core]
    return mask & ~interior


def dice_pooled(pred: np.ndarray, truth: np.ndarray, heldout: np.ndarray) -> float:
    """Dice of two boolean masks over all held-out slices together; NaN when both are empty there."""
    heldout = _check_pair(pred, truth, heldout)
    p = np.asarray(pred[heldout], dtype=bool)
    t = np.asarray(truth[heldout], dtype=bool)
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(p, t).sum()) / total


def _distance_to(surface_mask: np.ndarray, spacing) -> np.ndarray | None:
    """Euclidean distance (mm) of every voxel to the nearest voxel of `surface_mask`."""
    from scipy.ndimage import distance_transform_edt

    if not surface_mask.any():
        return None
    return distance_transform_edt(~surface_mask, sampling=spacing)


def directed_surface_distances(src: np.ndarray, dst: np.ndarray, heldout: np.ndarray, spacing,
                               *, src_surface: np.ndarray | None = None,
                               dst_distance: np.ndarray | None = None,
                               missing_mm: float | None = None) -> np.ndarray:
    """Distances (mm) from src's surface voxels on held-out slices to dst's full 3D surface.

    When dst has no surface at all every distance is `missing_mm` (default: the diagonal of
    src's grid in mm): a missing structure must score badly, not disappear from the mean.
    """
    heldout = np.asarray(heldout, dtype=bool)
    s = surface(src) if src_surface is None else src_surface
    s = s & heldout[:, None, None]
    if not s.any():
        return np.zeros(0, dtype=np.float64)
    if dst_distance is None:
        dst_distance = _distance_to(surface(dst), spacing)
    if dst_distance is None:
        if missing_mm is None:
            missing_mm = float(np.linalg.norm(np.asarray(src.shape) * np.asarray(spacing, dtype=float)))
        return np.full(int(s.sum()), missing_mm, dtype=np.float64)
    return dst_distance[s].astype(np.float64)


def surface_scores(pred: np.ndarray, truth: np.ndarray, heldout: np.ndarray, spacing, *,
                   missing_mm: float | None = None) -> dict:
    """HD95 (the larger directed 95th percentile) and ASSD (mean of all distances), in mm.

    NaN when neither mask has a surface voxel on a held-out slice. A mask with no surface at
    all is `missing_mm` away from everything (default: the diagonal of this grid in mm).
    """
    heldout = _check_pair(pred, truth, heldout)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"spacing must be three positive numbers in mm, got {spacing}")
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    # Work inside the joint bounding box (plus one voxel so surfaces stay intact): distances
    # between the two surfaces never leave it, and it keeps 40-label cases fast.
    box = _joint_box(pred, truth)
    if box is None:
        return {"hd95": math.nan, "assd": math.nan}
    p, t, h = pred[box], truth[box], heldout[box[0]]
    diag = missing_mm if missing_mm is not None else float(np.linalg.norm(np.asarray(pred.shape) * np.asarray(spacing)))
    d_pt = directed_surface_distances(p, t, h, spacing, missing_mm=diag)
    d_tp = directed_surface_distances(t, p, h, spacing, missing_mm=diag)
    if d_pt.size == 0 and d_tp.size == 0:
        return {"hd95": math.nan, "assd": math.nan}
    directed = [np.percentile(d, 95) for d in (d_pt, d_tp) if d.size]
    return {"hd95": float(max(directed)), "assd": float(np.concatenate([d_pt, d_tp]).mean())}


def _joint_box(a: np.ndarray, b: np.ndarray):
    """Slices of the bounding box of a | b grown by one voxel, or None when both are empty."""
    union = a | b
    if not union.any():
        return None
    box = []
    for ax in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != ax)
        nz = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(nz[0] - 1, 0), min(nz[-1] + 2, union.shape[ax])))
    return tuple(box)


_MAX_BOXED_VALUE = 1_000_000   # find_objects makes a list as long as the largest value


def _label_boxes(labels: np.ndarray):
    """Bounding box per label value (scipy find_objects), or None when values do not suit it."""
    from scipy.ndimage import find_objects

    if not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        return None
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > _MAX_BOXED_VALUE:
        return None
    return find_objects(labels)


def _union_box(boxes_a, boxes_b, value: int, shape):
    """Union of the value's boxes in two volumes, grown by one voxel (surfaces stay intact);
    the whole grid when boxes are unavailable; None when the value is in neither volume."""
    if boxes_a is None or boxes_b is None or value <= 0:
        return tuple(slice(0, n) for n in shape)
    found = [b[value - 1] for b in (boxes_a, boxes_b) if value - 1 < len(b) and b[value - 1] is not None]
    if not found:
        return None
    return tuple(
        slice(max(min(f[ax].start for f in found) - 1, 0), min(max(f[ax].stop for f in found) + 1, shape[ax]))
        for ax in range(len(shape))
    )


def label_scores(pred: np.ndarray, truth: np.ndarray, heldout: np.ndarray, spacing,
                 values=None) -> dict:
    """Dice, HD95 and ASSD per label value, then their means over labels.

    `values` are the label values to score (default: every non-zero value of `truth`). A
    label absent from both truth and prediction on the held-out slices is not scored (its
    entries are NaN and it is left out of the means).
    """
    heldout = _check_pair(pred, truth, heldout)
    if values is None:
        values = [int(v) for v in np.unique(truth) if v != 0]
    per_label: dict[int, dict] = {}
    pred_boxes, truth_boxes = _label_boxes(pred), _label_boxes(truth)
    diag = float(np.linalg.norm(np.asarray(truth.shape) * np.asarray(spacing, dtype=float)))
    for v in values:
        box = _union_box(pred_boxes, truth_boxes, int(v), truth.shape)
        if box is None:     # the value is in neither volume
            per_label[int(v)] = {"dice": math.nan, "hd95": math.nan, "assd": math.nan}
            continue
        # Both masks are empty outside `box`, so Dice and surfaces computed inside it are exact.
        p, t, h = pred[box] == v, truth[box] == v, heldout[box[0]]
        dice = dice_pooled(p, t, h) if h.any() else math.nan
        if math.isnan(dice):
            per_label[int(v)] = {"dice": math.nan, "hd95": math.nan, "assd": math.nan}
            continue
        per_label[int(v)] = {"dice": dice, **surface_scores(p, t, h, spacing, missing_mm=diag)}
    scored = [s for s in per_label.values() if not math.isnan(s["dice"])]

    def mean_of(key: str) -> float:
        vals = [s[key] for s in scored if not math.isnan(s[key])]
        return float(np.mean(vals)) if vals else math.nan

    return {
        "dice": mean_of("dice"),
        "hd95": mean_of("hd95"),
        "assd": mean_of("assd"),
        "labels_scored": len(scored),
        "per_label": per_label,
    }
