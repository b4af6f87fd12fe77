"""Image geometry and the Volume type: the one place that knows about axis order and LPS/RAS.

Conventions (the same as SimpleITK and ITK files):
- `spacing`, `origin` and the columns of `direction` are in image-axis order (i, j, k) = (x, y, z).
- Physical coordinates are LPS (what NIfTI/NRRD readers in ITK and Slicer's file formats use).
  `ras_affine()` gives the 4x4 IJK->RAS matrix Slicer nodes want.
- Arrays inside the engine are numpy (Z, Y, X) = (k, j, i), as `sitk.GetArrayFromImage` returns them.
  Numpy axis `a` is image axis `2 - a`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import InputError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Spacing (mm), origin (mm, LPS) and direction (3x3, columns = image axes in LPS)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self):
        sp = tuple(float(s) for s in self.spacing)
        if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
            raise InputError(f"spacing must be three positive numbers, got {self.spacing}")
        d = np.asarray(self.direction, dtype=float).reshape(-1)
        if d.size != 9 or not np.all(np.isfinite(d)):
            raise InputError(f"direction must be a 3x3 matrix, got {self.direction}")
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in d))

    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3, row-major as SimpleITK stores it: column c is image axis c in LPS."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def lps_affine(self) -> np.ndarray:
        """4x4 matrix mapping (i, j, k, 1) to LPS millimetres."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        a[:3, 3] = self.origin
        return a

    def ras_affine(self) -> np.ndarray:
        """4x4 IJK->RAS matrix (what Slicer's vtkMRMLVolumeNode.SetIJKToRASMatrix takes)."""
        a = self.lps_affine()
        a[:3, :] = _LPS_TO_RAS @ a[:3, :]
        return a

    @classmethod
    def from_ras_affine(cls, m: np.ndarray) -> "Geometry":
        m = np.asarray(m, dtype=float)
        lps = m.copy()
        lps[:3, :] = _LPS_TO_RAS @ m[:3, :]
        return cls.from_lps_affine(lps)

    @classmethod
    def from_lps_affine(cls, m: np.ndarray) -> "Geometry":
        m = np.asarray(m, dtype=float)
        lin = m[:3, :3]
        spacing = np.linalg.norm(lin, axis=0)
        if np.any(spacing <= 0):
            raise InputError(f"affine has a zero-length axis: {m.tolist()}")
        return cls(tuple(spacing), tuple(m[:3, 3]), tuple((lin / spacing).reshape(-1)))

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """(..., 3) continuous indices in (i, j, k) order -> (..., 3) LPS mm."""
        ijk = np.asarray(ijk, dtype=float)
        a = self.lps_affine()
        return ijk @ a[:3, :3].T + a[:3, 3]

    def with_axis_spacing(self, image_axis: int, spacing: float) -> "Geometry":
        """Same origin and direction, new spacing along one image axis (0=i, 1=j, 2=k)."""
        sp = list(self.spacing)
        sp[image_axis] = float(spacing)
        return replace(self, spacing=tuple(sp))

    def allclose(self, other: "Geometry", rtol: float = 1e-5, atol: float = 1e-4) -> bool:
        return (
            np.allclose(self.spacing, other.spacing, rtol=rtol, atol=atol)
            and np.allclose(self.origin, other.origin, rtol=rtol, atol=atol)
            and np.allclose(self.direction, other.direction, rtol=rtol, atol=atol)
        )

    def describe_difference(self, other: "Geometry") -> str:
        parts = []
        for name in ("spacing", "origin", "direction"):
            a, b = getattr(self, name), getattr(other, name)
            if not np.allclose(a, b, rtol=1e-5, atol=1e-4):
                parts.append(f"{name} {np.round(a, 4).tolist()} vs {np.round(b, 4).tolist()}")
        return "; ".join(parts) or "none"


@dataclass(frozen=True)
class LabelInfo:
    """Name and colour (RGB 0..1) of one label value."""

    value: int
    name: str
    color: tuple[float, float, float] | None = None


@dataclass
class Volume:
    """A 3D array (Z, Y, X) with its physical geometry.

    `kind` is "image" or "labels": label volumes are never linearly interpolated or
    intensity-normalised by accident. `labels` carries names/colours when the file had them.
    """

    array: np.ndarray
    geometry: Geometry
    kind: str = "image"
    labels: dict[int, LabelInfo] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ("image", "labels"):
            raise InputError(f"Volume.kind must be 'image' or 'labels', got {self.kind!r}")
        if self.array.ndim != 3:
            raise InputError(f"a volume must be 3D, got an array of shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return (x, y, z)

    def with_array(self, array: np.ndarray, geometry: Geometry | None = None) -> "Volume":
        return Volume(array, geometry or self.geometry, self.kind, dict(self.labels))


def flip_lps_ras(points: np.ndarray) -> np.ndarray:
    """(..., 3) points LPS -> RAS or RAS -> LPS (x and y negated; its own inverse), dtype kept."""
    out = np.array(points, copy=True)
    out[..., :2] *= -1
    return out


def numpy_axis(image_axis: int) -> int:
    """Image axis (0=i/x, 1=j/y, 2=k/z) -> numpy axis of a (Z, Y, X) array."""
    if image_axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2 (i, j, k), got {image_axis!r}")
    return 2 - image_axis
