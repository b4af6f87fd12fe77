"""Label arrays: the whole-numbers check (one message) and the integer dtype labels are stored in.

One owner for io (reading label files), evaluation, the Slicer export and labels. numpy only,
so the Slicer module may import it.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError

# unsigned first; no uint64: NIfTI and NRRD writers and Slicer take up to (u)int32 / int64
LABEL_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64)


def check_whole_numbers(array: np.ndarray, what: str = "the label map") -> None:
    """InputError unless every value is a finite whole number (bool and integer arrays pass)."""
    array = np.asarray(array)
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{what} has voxels of type {array.dtype}; a label map needs integer values")
    bad = ~np.isfinite(array)
    bad |= np.where(bad, False, array != np.round(np.where(bad, 0, array)))
    if bad.any():
        example = float(array[bad].flat[0])
        raise InputError(f"{what} is not a label map: it has {int(bad.sum())} non-integer values (e.g. {example:g})")


def label_dtype(lo: int, hi: int) -> np.dtype:
    """The smallest integer dtype of LABEL_DTYPES holding lo..hi and 0 (background)."""
    lo, hi = min(int(lo), 0), max(int(hi), 0)
    for dt in LABEL_DTYPES:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise InputError(f"label values {lo}..{hi} do not fit in a 64-bit integer")


def as_label_array(array: np.ndarray, what: str = "the label map") -> np.ndarray:
    """Integer label array: bool -> uint8, integers as they are, whole-number floats -> label_dtype."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    check_whole_numbers(array, what)
    if array.size == 0:
        return array.astype(np.uint8)
    return array.astype(label_dtype(array.min(), array.max()))
