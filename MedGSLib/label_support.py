"""The support rule for label outputs: a connected piece of a label that touches no voxel of
the same label on an annotated (or kept) slice is supported by nothing the user drew, so it is
removed. No threshold is involved; the annotated slices decide. This is what keeps the label
heads' stray fragments (20 mm HD95 on sparse annotations before) out of the output.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError


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
