"""Label shape for the label heads: signed-distance ramp targets and the support rule.

Shape-based interpolation beats mask interpolation because it interpolates signed distances:
a boundary that moves between two slices moves continuously instead of fading out. The label
heads get the same benefit from their targets: each label channel is trained toward a ramp
    0.5 + 0.5 * clip(d / tau, -1, 1),   d = in-plane signed distance in pixels (> 0 inside),
so 0.5 is the boundary, 1 deep inside and 0 far outside. Decoding stays "argmax, background
where the best channel is below 0.5" (labels.decode): on an annotated slice it gives the
annotation back exactly, and in between it is the zero level of the interpolated distance.
`tau` is the distance between annotated slices in in-plane pixels, the same clip that
shape-based interpolation uses (reference/evaluation.md): a boundary can move that far
between two annotated slices and still be seen by both.

The support rule: a connected piece of a label that touches no voxel of the same label on an
annotated slice is supported by nothing the user drew, so it is removed. No threshold is
involved; the annotated slices decide.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError

MIN_TAU_PX = 1.0     # a ramp narrower than one pixel is the binary mask again


def ramp_tau(slice_gap_px: float, annotated_frames: Sequence[int] | None) -> float:
    """Ramp half-width in pixels: the gap between annotated slices, in in-plane pixels.

    `slice_gap_px` is the gap between consecutive frames in in-plane pixel units
    (slice gap mm / in-plane pixel mm); with a sparse annotation the gap between annotated
    frames is the median step of `annotated_frames` times that.
    """
    step = 1.0
    if annotated_frames is not None and len(annotated_frames) > 1:
        step = float(np.median(np.diff(np.sort(np.asarray(annotated_frames, dtype=float)))))
    return max(MIN_TAU_PX, float(slice_gap_px) * step)


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """2D signed distance in pixels, > 0 inside: +(d - 0.5) inside, -(d - 0.5) outside,
    so the two pixels either side of a boundary sit at +-0.5."""
    from scipy.ndimage import distance_transform_edt
    inside = distance_transform_edt(mask)
    outside = distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, -(outside - 0.5)).astype(np.float32)


def ramp_targets(masks: np.ndarray, tau: float, frames: Sequence[int] | None = None) -> np.ndarray:
    """Ramp targets [L, F, H, W] float32 in [0, 1] from one-hot masks [L, F, H, W].

    Only `frames` (default: all) are converted; the other frames stay as given (unannotated
    frames are never used as targets). Each distance is computed on the label's bounding box
    grown by tau + 1 pixels: beyond it the ramp is 0 anyway.
    """
    masks = np.asarray(masks)
    if masks.ndim != 4:
        raise InputError(f"ramp targets need masks [L, F, H, W], got shape {masks.shape}")
    if not tau > 0:
        raise InputError(f"the ramp half-width must be positive, got {tau}")
    L, F, H, W = masks.shape
    out = np.array(masks, dtype=np.float32, copy=True)
    margin = int(np.ceil(tau)) + 1
    for f in (range(F) if frames is None else frames):
        for c in range(L):
            m = masks[c, f] > 0.5
            out[c, f] = 0.0
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            if rows.size == 0:
                continue
            r0, r1 = max(0, rows[0] - margin), min(H, rows[-1] + margin + 1)
            c0, c1 = max(0, cols[0] - margin), min(W, cols[-1] + margin + 1)
            d = _signed_distance(m[r0:r1, c0:c1])
            out[c, f, r0:r1, c0:c1] = 0.5 + 0.5 * np.clip(d / tau, -1.0, 1.0)
    return out


def supported(labels: np.ndarray, support: Sequence[int]) -> np.ndarray:
    """Boolean [n, H, W]: the voxels of `labels` [n, H, W] that the support slices support.

    A voxel is supported when its 26-connected component of the same label value holds at
    least one voxel on a support slice (an annotated or kept slice, where the labels are the
    user's). Background is always "supported". Components are found per label value inside
    that label's bounding box, so many small labels cost little.
    """
    from scipy import ndimage
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"the support rule needs a label stack [n, H, W], got shape {labels.shape}")
    sup = np.zeros(labels.shape[0], dtype=bool)
    idx = np.asarray(list(support), dtype=int)
    if idx.size == 0:
        raise InputError("the support rule needs at least one annotated slice")
    if idx.min() < 0 or idx.max() >= labels.shape[0]:
        raise InputError(f"support slices {idx.min()}..{idx.max()} outside 0..{labels.shape[0] - 1}")
    sup[idx] = True
    keep = labels == 0
    values = np.unique(labels)
    values = values[values != 0]
    if values.size == 0:
        return keep
    # one bounding box per label value (find_objects wants small positive integers)
    lut = np.zeros(labels.shape, dtype=np.int32)
    for j, v in enumerate(values, start=1):
        lut[labels == v] = j
    structure = np.ones((3, 3, 3), dtype=bool)
    for j, box in enumerate(ndimage.find_objects(lut), start=1):
        if box is None:
            continue
        region = lut[box] == j
        comp, n = ndimage.label(region, structure=structure)
        on_support = comp[sup[box[0]]]
        good = np.zeros(n + 1, dtype=bool)
        good[np.unique(on_support)] = True
        good[0] = False
        keep[box] |= good[comp]
    return keep
