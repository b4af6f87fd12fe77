"""MedGSLib: the MedGS engine (Folded-Gaussian slice interpolation), importable without Slicer or Qt.

    from MedGSLib import read_volume, interpolate, run
    dense = interpolate(read_volume("ct.nii.gz"), factor=2)

Importing this package loads no heavy library; torch, SimpleITK, gsplat... load on first use.
"""
from .config import TrainConfig, fast_preset, paper_preset, preset  # noqa: F401
from .errors import (CancelledError, DeviceError, InputError, MedGSError,  # noqa: F401
                     OutOfMemoryError, OutputExistsError)
from .geometry import Geometry, LabelInfo, Volume  # noqa: F401

__version__ = "0.1.0"


def read_volume(path, kind: str = "image"):
    from .io import read_volume as _read
    return _read(path, kind)


def write_volume(volume, path, *, overwrite: bool = False):
    from .io import write_volume as _write
    return _write(volume, path, overwrite=overwrite)


def interpolate(volume, **kwargs):
    """A denser copy of `volume` (see api.interpolate)."""
    from .api import interpolate as _interp
    return _interp(volume, **kwargs)


def run(volume, **kwargs):
    """The whole pipeline with labels and meshes (see api.run)."""
    from .api import run as _run
    return _run(volume, **kwargs)
