"""Label maps: values, one-hot channels, decoding, validation, names/colours and file names.

Label values are kept exactly as the user gave them (1, 5, 42 stay 1, 5, 42): the engine
trains one channel per non-zero value and `decode` writes the same values back.
Arrays are numpy (Z, Y, X); "axis" arguments are image axes (0 = i, 1 = j, 2 = k) as in
geometry.py, and numpy axes are named `numpy_axis` explicitly.
"""
from __future__ import annotations

import colorsys
import os
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .errors import InputError
from .geometry import LabelInfo, Volume, numpy_axis as _numpy_axis

# Probability below which a voxel stays background in `decode`.
DEFAULT_THRESHOLD = 0.5


# ---------------------------------------------------------------------------------------------
# values, one-hot, decode


def _check_integer_valued(array: np.ndarray, what: str = "label map") -> None:
    """Raise InputError unless every value of `array` is a finite whole number (label_arrays owns the rule)."""
    from .label_arrays import check_whole_numbers
    check_whole_numbers(array, f"the {what}")


def label_values(array: np.ndarray) -> list[int]:
    """Sorted non-zero label values present in `array`."""
    array = np.asarray(array)
    _check_integer_valued(array)
    if array.dtype == bool:
        return [1] if array.any() else []
    if np.issubdtype(array.dtype, np.unsignedinteger) and array.dtype.itemsize <= 2:
        # bincount is much faster than unique on the common uint8/uint16 label maps
        counts = np.bincount(array.reshape(-1))
        return [int(v) for v in np.flatnonzero(counts) if v != 0]
    values = np.unique(array)
    return [int(v) for v in values if v != 0]


def one_hot(array: np.ndarray, values: Sequence[int], dtype=np.float32) -> np.ndarray:
    """[L, *array.shape] channels, channel c = (array == values[c]) as 0/1 of `dtype`.

    Values absent from the array give an all-zero channel; values not listed are ignored
    (they become background).
    """
    array = np.asarray(array)
    values = [int(v) for v in values]
    if len(set(values)) != len(values):
        raise InputError(f"label values must be distinct, got {values}")
    if 0 in values:
        raise InputError("label value 0 is background and cannot have its own channel")
    out = np.empty((len(values),) + array.shape, dtype=dtype)
    for c, v in enumerate(values):
        np.equal(array, v, out=out[c], casting="unsafe")
    return out


def _dtype_for_values(values: Iterable[int]) -> np.dtype:
    """Smallest integer dtype holding 0 and every value (label_arrays.label_dtype owns the rule)."""
    from .label_arrays import label_dtype
    vals = [int(v) for v in values] or [0]
    return label_dtype(min(vals), max(vals))


def decode(probs: np.ndarray, values: Sequence[int], threshold: float = DEFAULT_THRESHOLD, *,
           support: Sequence[int] | None = None) -> np.ndarray:
    """Label map from per-label probabilities [L, ...]: argmax over channels, 0 where max < threshold.

    Ties go to the earlier channel. The output has the smallest integer dtype that holds the values.
    With `support` (indices along axis 1 of a [L, n, H, W] stack: the annotated or kept slices),
    pieces of a label that touch none of its voxels on those slices are background
    (label_support.supported). This is the one decoder: the pipeline and the evaluation use it.
    """
    probs = np.asarray(probs)
    values = [int(v) for v in values]
    if probs.ndim < 2 or probs.shape[0] != len(values):
        raise InputError(
            f"decode needs probabilities of shape [L, ...] with L = {len(values)} label values, "
            f"got shape {probs.shape}"
        )
    dtype = _dtype_for_values(values)
    if not values:
        return np.zeros(probs.shape[1:], dtype=dtype)
    best = np.argmax(probs, axis=0)
    best_p = np.take_along_axis(probs, best[None], axis=0)[0]
    lut = np.asarray(values, dtype=dtype)
    out = lut[best]
    out[~(best_p >= threshold)] = 0  # written as "not >=" so NaN probabilities are background
    if support is not None:
        from .label_support import supported
        out[~supported(out, support)] = 0
    return out


# ---------------------------------------------------------------------------------------------
# validation and sparse annotation


def _default_axis(labels: Volume) -> int:
    from .frames import auto_axis   # the one "auto" axis rule
    return auto_axis(labels.geometry.spacing)


def slices_with_value(array: np.ndarray, numpy_axis: int, values: Sequence[int]) -> dict[int, np.ndarray]:
    """For each label value, the sorted slice indices (along `numpy_axis`) where it occurs."""
    np_axis = numpy_axis
    moved = np.moveaxis(array, np_axis, 0).reshape(array.shape[np_axis], -1)
    found: dict[int, list[int]] = {int(v): [] for v in values}
    wanted = np.asarray(list(found), dtype=np.int64)
    for s in range(moved.shape[0]):
        present = np.intersect1d(np.unique(moved[s]), wanted, assume_unique=False)
        for v in present:
            found[int(v)].append(s)
    return {v: np.asarray(idx, dtype=np.int64) for v, idx in found.items()}


def sparse_label_values(array: np.ndarray, kept_indices: Sequence[int], numpy_axis: int) -> list[int]:
    """Label values present in exactly one kept slice: the model cannot interpolate them, so the
    pipeline carries them with `nearest_fill(..., values=...)`. (Labels in no kept slice are gone.)"""
    values = label_values(array)
    kept = np.asarray(list(kept_indices), dtype=np.int64)
    where = slices_with_value(np.asarray(array), numpy_axis, values)
    return [v for v in values if np.intersect1d(where[v], kept).size == 1]


def validate_labels(
    labels: Volume,
    image: Volume | None = None,
    kept_indices: Sequence[int] | None = None,
    axis: int | None = None,
) -> list[str]:
    """Check a label map against its image; return warnings, raise InputError on unusable input.

    Errors: grid shape or geometry differs from the image, non-integer values, no label at all.
    Warnings: a label present in fewer than 2 kept slices (along image `axis`, default the
    largest-spacing axis): such a label cannot be interpolated between slices and the pipeline
    carries it by nearest neighbour (`nearest_fill`), or loses it when no kept slice holds it.
    """
    arr = np.asarray(labels.array)
    if image is not None:
        if tuple(arr.shape) != tuple(image.array.shape):
            raise InputError(
                f"the label map grid {tuple(reversed(arr.shape))} (x, y, z) differs from the image grid "
                f"{tuple(reversed(image.array.shape))}; resample the labels onto the image first"
            )
        if not labels.geometry.allclose(image.geometry):
            raise InputError(
                "the label map geometry differs from the image ("
                + labels.geometry.describe_difference(image.geometry)
                + "); resample the labels onto the image first"
            )
    _check_integer_valued(arr)
    values = label_values(arr)
    if not values:
        raise InputError("the label map is empty (every voxel is 0); draw at least one label or leave labels out")

    warnings: list[str] = []
    if values[0] < 0:
        warnings.append(f"the label map has negative label values ({values[0]}); they are kept as given")

    a = _default_axis(labels) if axis is None else int(axis)
    np_ax = _numpy_axis(a)
    n_slices = arr.shape[np_ax]
    if kept_indices is None:
        kept = np.arange(n_slices)
    else:
        kept = np.unique(np.asarray(list(kept_indices), dtype=np.int64))
        if kept.size and (kept[0] < 0 or kept[-1] >= n_slices):
            raise InputError(
                f"kept slice indices must lie in 0..{n_slices - 1} along axis {a}, got {kept.min()}..{kept.max()}"
            )
    where = slices_with_value(arr, np_ax, values)
    names = labels.labels or {}
    for v in values:
        in_kept = np.intersect1d(where[v], kept)
        label = f"label {v}" + (f" ({names[v].name})" if v in names and names[v].name else "")
        if in_kept.size == 0:
            warnings.append(
                f"{label} is in no kept slice along axis {a} (it is in slice{'s' if where[v].size > 1 else ''} "
                f"{_short_list(where[v])}); "
                "it cannot be reconstructed and will be missing from the output"
            )
        elif in_kept.size < 2:
            warnings.append(
                f"{label} is in only 1 kept slice along axis {a} (slice {int(in_kept[0])}); "
                "it is carried to nearby slices by nearest neighbour instead of being interpolated"
            )
    return warnings


def _short_list(idx: np.ndarray, limit: int = 6) -> str:
    items = [str(int(i)) for i in idx[:limit]]
    return ", ".join(items) + (", ..." if idx.size > limit else "")


def nearest_fill(
    kept_frames: np.ndarray,
    kept_positions: Sequence[float],
    target_positions: Sequence[float],
    values: Iterable[int] | None = None,
    base: np.ndarray | None = None,
) -> np.ndarray:
    """Nearest-neighbour label frames along the slice axis.

    kept_frames [K, H, W] integer labels at slice positions `kept_positions` (any unit, e.g.
    input slice index); returns [T, H, W] for `target_positions`, each a copy of the kept frame
    nearest to it (ties -> the earlier kept frame). With `values`, only those labels are copied,
    pasted onto `base` [T, H, W] (e.g. the decoded seg-head output): that is how the pipeline
    carries labels seen in fewer than 2 kept slices, which the model cannot interpolate.
    """
    kept_frames = np.asarray(kept_frames)
    kp = np.asarray(kept_positions, dtype=float).reshape(-1)
    tp = np.asarray(target_positions, dtype=float).reshape(-1)
    if kept_frames.ndim != 3 or kept_frames.shape[0] != kp.size or kp.size == 0:
        raise InputError(
            f"nearest_fill needs kept frames [K, H, W] with K = {kp.size} positions, got shape {kept_frames.shape}"
        )
    order = np.argsort(kp, kind="stable")
    kp_sorted = kp[order]
    # index of the first kept position >= target, then pick the closer of it and its predecessor
    right = np.clip(np.searchsorted(kp_sorted, tp, side="left"), 0, kp.size - 1)
    left = np.clip(right - 1, 0, kp.size - 1)
    use_left = np.abs(tp - kp_sorted[left]) <= np.abs(kp_sorted[right] - tp)
    nearest = order[np.where(use_left, left, right)]
    carried = kept_frames[nearest]
    if values is None:
        return carried.copy() if base is None else np.where(carried != 0, carried, base)
    vals = np.asarray(list(values))
    if base is None:
        out = np.zeros_like(carried)
    else:
        base = np.asarray(base)
        if base.shape != carried.shape:
            raise InputError(f"nearest_fill base has shape {base.shape}, expected {carried.shape}")
        out = base.astype(np.result_type(base.dtype, carried.dtype), copy=True)
    mask = np.isin(carried, vals)
    out[mask] = carried[mask]
    return out


def detect_annotated_slices(labels_array: np.ndarray, numpy_axis: int) -> np.ndarray:
    """Indices (along `numpy_axis`) of the slices holding any non-zero label.

    These are the drawn slices of a sparse annotation: the pipeline keeps exactly them.
    """
    arr = np.asarray(labels_array)
    if numpy_axis not in range(arr.ndim):
        raise InputError(f"numpy axis {numpy_axis} does not exist for an array of shape {arr.shape}")
    other = tuple(a for a in range(arr.ndim) if a != numpy_axis)
    return np.flatnonzero(np.any(arr != 0, axis=other))


_RANGE = re.compile(r"^(-?\d+)\s*-\s*(-?\d+)(?:\s*:\s*(\d+))?$")


def parse_slice_list(text: str, count: int | None = None) -> list[int]:
    """"0,5,10-20:5" -> [0, 5, 10, 15, 20]: comma-separated indices and inclusive ranges a-b[:step].

    Returns sorted unique indices; with `count`, every index must lie in 0..count-1.
    """
    if text is None or not str(text).strip():
        raise InputError("the slice list is empty; give indices like 0,5,10-20:5")
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if re.fullmatch(r"\d+", part):
            out.add(int(part))
            continue
        m = _RANGE.match(part)
        if not m:
            raise InputError(f"cannot read slice list item {part!r}; use indices like 0,5,10-20:5")
        a, b, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if a < 0 or b < a or step < 1:
            raise InputError(f"slice range {part!r} must be start-end[:step] with 0 <= start <= end and step >= 1")
        out.update(range(a, b + 1, step))
    if not out:
        raise InputError(f"the slice list {text!r} names no slice")
    result = sorted(out)
    if count is not None and result[-1] >= count:
        raise InputError(f"slice index {result[-1]} is out of range; the axis has {count} slices (0..{count - 1})")
    return result


# ---------------------------------------------------------------------------------------------
# names, colours, file names


def default_color(value: int) -> tuple[float, float, float]:
    """A distinct, saturated RGB colour (0..1) per label value.

    Hues step by the golden angle, so neighbouring values (1, 2, 3...) get far-apart hues and
    no two integers share a hue; brightness alternates so close hues still differ.
    """
    hue = (0.61803398875 * int(value) + 0.12) % 1.0
    sat = 0.65 + 0.25 * ((int(value) // 3) % 2)
    val = 0.95 if int(value) % 2 else 0.78
    return tuple(round(c, 4) for c in colorsys.hsv_to_rgb(hue, sat, val))


def _as_info(value: int, entry) -> LabelInfo:
    if isinstance(entry, LabelInfo):
        return entry
    if isinstance(entry, str):
        return LabelInfo(value, entry, None)
    if isinstance(entry, Sequence) and len(entry) == 3 and all(isinstance(c, (int, float)) for c in entry):
        return LabelInfo(value, "", tuple(float(c) for c in entry))
    raise InputError(f"colour table entry for label {value} must be a LabelInfo, a name or an (r, g, b) tuple")


def label_table(
    volume: Volume,
    color_table: Mapping[int, LabelInfo | str | tuple] | str | os.PathLike | None = None,
) -> dict[int, LabelInfo]:
    """Name and colour of every label value present in `volume`.

    Per field, the first that has it wins: the explicit `color_table` (a mapping or a colour
    table file), then the volume's own metadata (`volume.labels`, e.g. a NRRD segmentation
    header read by io), then defaults (name "label_<v>", a distinct colour per value).
    """
    if color_table is None:
        explicit: dict[int, LabelInfo] = {}
    elif isinstance(color_table, (str, os.PathLike)):
        from .io import read_color_table  # one parser for Slicer/FreeSurfer/CSV tables

        explicit = read_color_table(color_table)
    else:
        explicit = {int(v): _as_info(int(v), e) for v, e in color_table.items()}
    from_file = volume.labels or {}
    table: dict[int, LabelInfo] = {}
    for v in label_values(volume.array):
        sources = [s[v] for s in (explicit, from_file) if v in s]
        name = next((s.name for s in sources if s.name), f"label_{v}")
        color = next((tuple(s.color) for s in sources if s.color is not None), default_color(v))
        table[v] = LabelInfo(v, name, tuple(float(c) for c in color))
    return table


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}


def safe_filename(name: str, taken: set[str] | None = None, fallback: str = "label") -> str:
    """A file-name stem from a label name: letters, digits, '.', '_' and '-' only, never empty.

    With `taken` (a set shared over one output folder), the result is made unique
    case-insensitively (macOS/Windows file systems) by appending _2, _3... and is added to it.
    """
    stem = _UNSAFE.sub("_", str(name)).strip("._-")[:120] or fallback
    if stem.lower() in _WINDOWS_RESERVED:
        stem = f"{stem}_"
    if taken is None:
        return stem
    lowered = {t.lower() for t in taken}
    candidate, n = stem, 2
    while candidate.lower() in lowered:
        candidate = f"{stem}_{n}"
        n += 1
    taken.add(candidate)
    return candidate


def label_filenames(table: Mapping[int, LabelInfo]) -> dict[int, str]:
    """Unique file-name stems per label value, in value order (see `safe_filename`)."""
    taken: set[str] = set()
    return {v: safe_filename(table[v].name, taken, fallback=f"label_{v}") for v in sorted(table)}
