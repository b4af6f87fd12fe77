"""Slice bookkeeping of the held-out-slice protocol (reference/evaluation.md, "Slices").

For a set of factors K tested together the volume is cropped to
`n_use = floor((n - 1) / L) * L + 1` slices with `L = lcm(K)`, so that every factor keeps the
first and the last slice and no method ever extrapolates. Factor k keeps slices 0, k, 2k, ...;
the others (index % k != 0) are held out and are the only ones scored.

Everything here works on "slice-first" arrays: the chosen slice axis moved to numpy axis 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..geometry import Geometry, numpy_axis


def parse_factors(ks) -> tuple[int, ...]:
    """Validate the factors: integers >= 2, returned sorted and without duplicates."""
    try:
        values = sorted({int(k) for k in ks})
    except (TypeError, ValueError) as err:
        raise InputError(f"factors must be integers, got {ks!r}") from err
    if not values:
        raise InputError("at least one factor k is needed (e.g. --k 2 3 4)")
    if values[0] < 2:
        raise InputError(f"every factor k must be at least 2 (k=1 holds nothing out), got {values}")
    if any(float(k) != int(k) for k in ks):
        raise InputError(f"factors must be whole numbers, got {list(ks)}")
    return tuple(values)


def common_period(ks) -> int:
    """L = lcm(K): the slice period shared by every factor."""
    return math.lcm(*parse_factors(ks))


def usable_length(n: int, ks) -> int:
    """n_use = floor((n - 1) / L) * L + 1; raises when fewer than two slices would be kept."""
    period = common_period(ks)
    if n < period + 1:
        raise InputError(
            f"{n} slices are too few for factors {list(parse_factors(ks))}: "
            f"at least lcm + 1 = {period + 1} slices are needed"
        )
    return (n - 1) // period * period + 1


def kept_indices(n_use: int, k: int) -> np.ndarray:
    """Indices of the slices a method sees for factor k: 0, k, 2k, ..., n_use - 1."""
    if (n_use - 1) % k:
        raise InputError(f"{n_use} slices do not end on a kept slice for k={k}; crop with usable_length first")
    return np.arange(0, n_use, k)


def heldout_indices(n_use: int, k: int) -> np.ndarray:
    """Indices scored for factor k: every slice with index % k != 0."""
    idx = np.arange(n_use)
    return idx[idx % k != 0]


def heldout_mask(n_use: int, k: int) -> np.ndarray:
    """Boolean [n_use] that is True on held-out slices."""
    return np.arange(n_use) % k != 0


@dataclass(frozen=True)
class SlicePlan:
    """The protocol's bookkeeping for one volume and one set of factors."""

    n: int                    # slices along the chosen axis before cropping
    ks: tuple[int, ...]
    period: int               # lcm(ks)
    n_use: int                # slices kept after cropping (the evaluated grid)

    @classmethod
    def build(cls, n: int, ks) -> "SlicePlan":
        factors = parse_factors(ks)
        return cls(n=int(n), ks=factors, period=math.lcm(*factors), n_use=usable_length(n, factors))

    def kept(self, k: int) -> np.ndarray:
        self._check(k)
        return kept_indices(self.n_use, k)

    def heldout(self, k: int) -> np.ndarray:
        self._check(k)
        return heldout_indices(self.n_use, k)

    def _check(self, k: int) -> None:
        if k not in self.ks:
            raise InputError(f"k={k} is not one of the planned factors {list(self.ks)}")


def choose_slice_axis(geometry: Geometry, axis="auto") -> int:
    """Image axis to thin out: the engine's rule (MedGSLib.frames.choose_axis)."""
    from ..frames import choose_axis
    return int(choose_axis(geometry, axis))


def slice_first(array: np.ndarray, image_axis: int) -> np.ndarray:
    """(Z, Y, X) array -> the same data with the slice axis first (a view, no copy)."""
    return np.moveaxis(array, numpy_axis(image_axis), 0)


def slice_first_spacing(geometry: Geometry, image_axis: int) -> tuple[float, float, float]:
    """Spacing (mm) of a slice-first array in its numpy axis order: (d_slice, d_row, d_col)."""
    zyx = (geometry.spacing[2], geometry.spacing[1], geometry.spacing[0])
    na = numpy_axis(image_axis)
    rest = [zyx[i] for i in range(3) if i != na]
    return (float(zyx[na]), float(rest[0]), float(rest[1]))
