"""Where the engine package MedGSLib lives, for imports here and for the worker process.

Installed extension: MedGSLib/ is next to MedGS.py and MedGSLogicLib/ in Slicer's
qt-scripted-modules folder (the top-level CMakeLists.txt compiles it there). Source tree
(module added through "additional module paths"): MedGSLib/ is one folder above MedGS/.
"""
from __future__ import annotations

import sys
from pathlib import Path

_MODULE_DIR = Path(__file__).resolve().parent.parent  # the folder holding MedGS.py


def engine_root() -> Path:
    """The folder that contains the MedGSLib package (put it on sys.path / use as cwd)."""
    for candidate in (_MODULE_DIR, _MODULE_DIR.parent):
        if (candidate / "MedGSLib" / "__init__.py").is_file():
            return candidate
    try:  # pip-installed engine
        import MedGSLib

        return Path(MedGSLib.__file__).resolve().parent.parent
    except ImportError:
        pass
    raise ImportError(f"the MedGSLib engine package was found neither in {_MODULE_DIR} nor in {_MODULE_DIR.parent}")


def ensure_engine_importable() -> None:
    try:
        root = str(engine_root())
    except ImportError:
        return  # reported when the engine is first used, with the same message
    if root not in sys.path:
        sys.path.append(root)


def module_dir() -> Path:
    return _MODULE_DIR
