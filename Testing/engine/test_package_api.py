"""The package-level Python API (`import MedGSLib`): callable any number of times."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import MedGSLib
from MedGSLib import Geometry, Volume


def test_no_submodule_shadows_a_package_function():
    """Importing MedGSLib/<name>.py sets the package attribute <name>, replacing a function of that name."""
    pkg = Path(MedGSLib.__file__).parent
    public = [n for n in ("read_volume", "write_volume", "interpolate", "run") if callable(getattr(MedGSLib, n))]
    assert public == ["read_volume", "write_volume", "interpolate", "run"]
    clashes = [n for n in public if (pkg / f"{n}.py").exists() or (pkg / n).is_dir()]
    assert clashes == []


def test_interpolate_called_twice(monkeypatch):
    """README's API: MedGSLib.interpolate(vol, factor=2) twice (it raised TypeError on the second call)."""
    from MedGSLib import config
    vol = Volume(np.linspace(0, 1, 4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5), Geometry((1.0, 1.0, 2.0)))
    cfg = config.resolve_config("fast", "cpu", iterations=2, max_gaussians=200)
    shapes = []
    for _ in range(2):
        out = MedGSLib.interpolate(vol, factor=2, config=cfg)
        shapes.append((out.shape, out.geometry.spacing))
        assert callable(MedGSLib.interpolate)
    assert shapes == [((7, 6, 5), (1.0, 1.0, 1.0))] * 2
