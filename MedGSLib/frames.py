"""From a volume to a stack of 2D frames and back: slice axis, thinning, intensity scaling.

The model sees a volume as frames [F, H, W] stacked along one image axis (the slice axis),
with intensities scaled to about [0, 1]. Everything here is exact and invertible, so the
dense result maps back onto the input's grid, units and dtype.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import InputError
from .geometry import Geometry, numpy_axis

_AXIS_NAMES = {"i": 0, "j": 1, "k": 2, "x": 0, "y": 1, "z": 2}
# Spacings within this relative tolerance count as equal when picking the slice axis: NIfTI
# stores float32, so "1 mm" may read back as 0.9999999 on one axis and 1.0 on another.
_SPACING_TIE_RTOL = 1e-3


# --------------------------------------------------------------------------- axis and frames


def choose_axis(geometry: Geometry, axis: str | int = "auto") -> int:
    """The image axis (0 = i, 1 = j, 2 = k) to cut frames along.

    "auto" takes the axis with the largest spacing (the thick-slice, through-plane axis of a
    clinical acquisition); ties go to the last image axis, k, the usual slice axis of scanner
    files. Also accepts 0/1/2, "0"/"1"/"2", "i"/"j"/"k" (and x/y/z for the same axes).
    """
    if isinstance(axis, (bool, np.bool_)):
        raise InputError(f"axis must be 'auto', 0, 1, 2, 'i', 'j' or 'k', got {axis!r}")
    if isinstance(axis, (int, np.integer)):
        return _check_axis(int(axis))
    if isinstance(axis, str):
        key = axis.strip().lower()
        if key == "auto":
            return auto_axis(geometry.spacing)
        if key in _AXIS_NAMES:
            return _AXIS_NAMES[key]
        if key in ("0", "1", "2"):
            return int(key)
    raise InputError(f"axis must be 'auto', 0, 1, 2, 'i', 'j' or 'k', got {axis!r}")


def auto_axis(spacing) -> int:
    """The "auto" slice axis, the one rule every caller uses (labels, evaluation, the Slicer combo
    box): the image axis with the largest spacing; spacings within _SPACING_TIE_RTOL of the
    largest tie, and ties go to the last one (k)."""
    sp = np.asarray(spacing, dtype=float)
    candidates = np.flatnonzero(sp >= sp.max() * (1.0 - _SPACING_TIE_RTOL))
    return int(candidates[-1])


def _check_axis(axis: int) -> int:
    numpy_axis(axis)  # raises InputError for anything but 0, 1, 2
    return axis


def to_frames(array: np.ndarray, image_axis: int) -> np.ndarray:
    """(Z, Y, X) volume -> [F, H, W] frames along `image_axis`, as a view (no copy).

    H, W are the two remaining numpy axes in their original order; for the usual k axis the
    frames are the (Y, X) slices themselves.
    """
    if array.ndim != 3:
        raise InputError(f"to_frames needs a 3D array, got shape {array.shape}")
    return np.moveaxis(array, numpy_axis(image_axis), 0)


def from_frames(frames: np.ndarray, image_axis: int) -> np.ndarray:
    """Exact inverse of `to_frames`: [F, H, W] -> (Z, Y, X), as a view."""
    if frames.ndim != 3:
        raise InputError(f"from_frames needs [F, H, W] frames, got shape {frames.shape}")
    return np.moveaxis(frames, 0, numpy_axis(image_axis))


def keep_every(n: int, k: int) -> np.ndarray:
    """Indices 0, k, 2k, ... below n: the frames kept when only every k-th slice is known.

    At least two frames must remain (the model interpolates between known frames).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"keep-every must be a positive whole number, got {k!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"the number of frames must be a whole number >= 0, got {n!r}")
    idx = np.arange(0, int(n), int(k), dtype=np.int64)
    if idx.size < 2:
        raise InputError(
            f"keeping every {k}th of {n} slices leaves {idx.size}; at least 2 are needed (use a smaller keep-every)"
        )
    return idx


# --------------------------------------------------------------------------- intensities


@dataclass
class Normalizer:
    """Affine intensity map to about [0, 1]: forward(a) = (a - lo) / (hi - lo).

    Fitted robustly: `hi` is the 99.5th percentile and `lo` the 0.5th percentile of the
    non-background voxels, so a few hot voxels (metal, vessels with contrast, noise) do not
    squash the tissue contrast. "Background" is the constant fill value that surrounds many
    scans (zero outside the head in MRI, the padding value outside a CT's field of view): the
    minimum value, when at least `min_background_fraction` of the voxels hold it. When there
    is such a background, `lo` is that value instead, so the background maps to exactly 0:
    empty space in a Gaussian rendering is 0, and it must come back as the true background
    value, not the 0.5th percentile of the tissue.

    forward() does not clip: values outside [lo, hi] map outside [0, 1] and inverse() brings
    them back exactly. Training code clips its targets itself if it wants to.
    """

    lo: float = 0.0
    hi: float = 1.0
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    min_background_fraction: float = 0.01
    background: float | None = None  # the detected background value, if any (informative)
    dtype: str | None = None  # the fitted array's dtype, the default for inverse()

    def fit(self, array: np.ndarray) -> "Normalizer":
        """Set lo/hi from `array` (any shape); returns self."""
        a = np.asarray(array)
        if a.size == 0:
            raise InputError("cannot fit intensity normalisation to an empty array")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise InputError("cannot fit intensity normalisation: the array has NaN or infinite values")
        if not (0.0 <= self.lower_percentile < self.upper_percentile <= 100.0):
            raise InputError(
                "percentiles must satisfy 0 <= lower < upper <= 100, "
                f"got {self.lower_percentile}, {self.upper_percentile}"
            )
        flat = a.reshape(-1)
        vmin = flat.min()
        is_bg = flat == vmin
        self.background = None
        rest = flat
        if is_bg.mean() >= self.min_background_fraction and not is_bg.all():
            self.background = float(vmin)
            rest = flat[~is_bg]
        lo, hi = np.percentile(rest, [self.lower_percentile, self.upper_percentile])
        if self.background is not None:
            lo = self.background
        lo, hi = float(lo), float(hi)
        if not hi > lo:
            # A constant (or nearly) image: any unit scale keeps the map invertible.
            hi = lo + 1.0
        self.lo, self.hi = lo, hi
        self.dtype = np.dtype(a.dtype).name
        return self

    @property
    def scale(self) -> float:
        return self.hi - self.lo

    def forward(self, a: np.ndarray) -> np.ndarray:
        """Intensities -> float32, lo -> 0 and hi -> 1 (not clipped)."""
        out = np.asarray(a, dtype=np.float32) - np.float32(self.lo)
        out *= np.float32(1.0 / self.scale)
        return out

    def inverse(self, a: np.ndarray, dtype: np.dtype | str | type | None = None) -> np.ndarray:
        """Normalised values -> the original units in `dtype` (default: the fitted dtype).

        Integer dtypes are rounded and clipped to their range; float dtypes are cast.
        """
        dt = np.dtype(dtype if dtype is not None else (self.dtype or np.float32))
        # float32 (24-bit mantissa) is exact enough for 8/16-bit integers and float32 results;
        # wider targets get float64 (float32 would lose int32 units).
        work = np.float64 if dt.itemsize > 4 or (np.issubdtype(dt, np.integer) and dt.itemsize > 2) else np.float32
        x = np.asarray(a, dtype=work) * work(self.scale) + work(self.lo)
        if dt.kind == "b":
            return x >= 0.5
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            return np.clip(np.rint(x), info.min, info.max).astype(dt)
        if np.issubdtype(dt, np.floating):
            return x.astype(dt)
        raise InputError(f"cannot convert intensities back to dtype {dt}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state for checkpoints and run.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown normaliser fields {sorted(unknown)}; is this a MedGS checkpoint?")
        n = cls(**d)
        if not n.hi > n.lo:
            raise InputError(f"invalid normaliser: hi ({n.hi}) must be greater than lo ({n.lo})")
        return n


# the upstream PNG layout is a file format: it lives at the edge now (cli/png_frames.py)
from .cli.png_frames import read_png_frames, render_name, write_png_frames, write_render_pngs  # noqa: F401,I001
