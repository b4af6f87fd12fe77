"""The run-environment record written into run.json and eval reports (one owner for both)."""
from __future__ import annotations

import platform
import sys

# libraries whose version decides results; reported only when the run loaded them (never imported here)
_LIBRARIES = ("torch", "gsplat", "numpy", "scipy", "skimage", "cv2", "SimpleITK", "nibabel", "vtk")


def environment() -> dict:
    """Python, platform, the MedGS version, the loaded libraries' versions and the GPU, if one was used."""
    env = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        from importlib.metadata import version
        env["medgs"] = version("medgs")
    except Exception:       # not installed (a source checkout on sys.path)
        env["medgs"] = "source"
    for name in _LIBRARIES:
        mod = sys.modules.get(name)
        if mod is not None:
            v = getattr(mod, "__version__", None)
            if v is None and callable(getattr(mod, "Version", None)):      # SimpleITK
                v = mod.Version()
            env[name] = str(v) if v is not None else None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env
